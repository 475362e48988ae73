"""The command line as a whole: every registered command's --help."""

from __future__ import annotations

import pytest

from smm4h_cli.cli import app

COMMANDS = [info.name for info in app.registered_commands]


def test_every_command_is_registered_by_name():
    assert COMMANDS and all(COMMANDS)


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
