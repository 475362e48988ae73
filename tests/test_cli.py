"""The command line as a whole: every registered command has its --help, its page in docs/ and its
row in the README's command table."""

from __future__ import annotations

import re

import pytest

from smm4h_cli.cli import app

from conftest import ROOT

COMMANDS = [info.name for info in app.registered_commands]


def _readme_table_commands() -> list[str]:
    """The commands named in the README's command table (the first table under "## Commands")."""
    section = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("\n## Commands\n", 1)[1]
    table = re.search(r"(?m)^\|.*\n(?:^\|.*\n)+", section).group(0)
    return re.findall(r"`smm4h ([a-z-]+)`", table)


def test_root_help_lists_exactly_the_registered_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^│ ([a-z][a-z-]*) ", result.stdout, flags=re.M)
    assert sorted(listed) == sorted(COMMANDS) and len(set(COMMANDS)) == len(COMMANDS) >= 7


@pytest.mark.parametrize(
    "command",
    [[], *([name] for name in COMMANDS)],
    ids=["smm4h", *COMMANDS],
)
def test_help_shows_no_bool_type_for_flags(cli, command):
    # A switch takes no value: --help shows no "<bool>" beside it (nor beside --help itself).
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout and "<bool>" not in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_page_in_docs(command):
    page = ROOT / "docs" / f"{command}.md"
    assert page.is_file(), f"write docs/{command}.md"
    assert f"smm4h {command}" in page.read_text(encoding="utf-8")


def test_every_command_has_a_row_in_the_readme_table_and_every_row_a_command():
    rows = _readme_table_commands()
    assert sorted(rows) == sorted(COMMANDS)


@pytest.mark.parametrize("command", [name for name in COMMANDS if "--seed " in name or name in ("compare", "embed-cluster", "generate", "ngrams", "select", "study", "train")])
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_numpy_cannot_take_exits_2_before_any_work(cli, command, seed, tmp_path):
    # Fault: `ngrams --seed -1` and `embed-cluster --seed 4294967296` ended in a traceback (exit 1),
    # the second after embedding every post.
    result = cli(command, "--seed", seed)
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["train", "study"])
def test_a_seeds_list_with_a_seed_out_of_range_exits_2(cli, command, tmp_path):
    result = cli(command, "--seeds", "0,-1", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "integers from 0 to 4294967295" in result.output
    assert not (tmp_path / "out").exists()
