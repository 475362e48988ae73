"""``smm4h compare``: the paper's Table 2, with confidence intervals and significance tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from smm4h_cli.cli._common import Format, IdCol, LabelCol, Seed, TableFormat, TextCol, columns, emit_table, markdown_table, parse_list
from smm4h_cli.tables import TABLE2_HEADERS, table2_rows
from smm4h_cli.errors import InputError
from smm4h_cli.io import read_predictions, short_names
from smm4h_cli.training.compare import Comparison, compare
from smm4h_cli.training.run_dir import test_prediction_files


def arm_files(spec: str) -> list[Path]:
    """The prediction files of one arm: a file, comma-separated files (one per seed), a seed
    folder, or a run folder (the seeds its summary lists: ``test_prediction_files``)."""
    files: list[Path] = []
    for p in _spec_paths(spec):
        try:
            is_dir = p.is_dir()
        except OSError as exc:
            raise InputError(f"{p} could not be read ({exc.strerror or exc}).") from None
        if is_dir:
            files += test_prediction_files(p)
        else:
            files.append(p)
    return files


def _spec_paths(spec: str) -> list[Path]:
    return [Path(name) for name in parse_list(spec, "Arm", what="prediction files (one per seed)", item="file name", example="runs/baseline or seed0.jsonl,seed1.jsonl")]


def _arm_name(spec: str) -> str:
    p = _spec_paths(spec)[0]
    if p.is_dir():
        return p.name
    return short_names([p])[0]


def flat_rows(result: dict) -> list[dict[str, Any]]:
    """One row per arm with its difference from the first arm (CSV)."""
    pairs = {p["b"]: p for p in result["pairs"]}
    rows = []
    for a in result["arms"]:
        p = pairs.get(a["arm"], {})
        rows.append({
            **{k: a[k] for k in ("arm", "f1", "precision", "recall", "f1_std", "precision_std", "recall_std", "seeds")},
            "winner": ",".join(m for m in ("f1", "precision", "recall") if a["arm"] in result["winners"][m]),
            **{k: p.get(k) for k in ("f1_diff", "ci_low", "ci_high", "only_a_correct", "only_b_correct", "mcnemar_p", "p_adjusted", "significant", "verdict")},
        })
    return rows


def _caption(result: dict, star: bool = False) -> str:
    return (
        f"{result['test_posts']:,} test posts ({result['test_positives']:,} positive); scores of label 1, "
        f"mean ± std over seeds; the best of each column in bold{' (*)' if star else ''}. CI: paired bootstrap over test posts ({result['bootstrap']:,} resamples, "
        f"seed {result['seed']}); McNemar's exact test on the posts the arms label differently (majority vote of seeds)"
        + ("; p Holm-adjusted across pairs in the verdict." if len(result["pairs"]) > 1 else ".")
    )


def render(comparison: Comparison, fmt: TableFormat) -> None:
    result = comparison.to_dict()
    if fmt is TableFormat.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    if fmt is TableFormat.csv:
        emit_table(flat_rows(result), fmt)
        return
    if fmt is TableFormat.markdown:
        arms, pairs = table2_rows(result, ("**", "**"))
        text = markdown_table(arms, TABLE2_HEADERS)
        if pairs:
            text += "\n" + markdown_table(pairs)
        sys.stdout.write(text + "\n" + _caption(result) + "\n")
        return
    # Cells are Text, never markup: arm names come from the user (--names, file names).
    arms, pairs = table2_rows(result, _BOLD)
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=200)
    table = Table(title="Table 2: F1, precision and recall of label 1")
    for i, key in enumerate(arms[0]):
        table.add_column(TABLE2_HEADERS.get(key, key), justify="left" if i == 0 else "right")
    for r in arms:
        table.add_row(*(_cell(v) for v in r.values()))
    out.print(table)
    if pairs:
        diff = Table(title=Text(f"Is the difference real? (vs {result['arms'][0]['arm']})"))
        for i, key in enumerate(pairs[0]):
            diff.add_column(Text(key), justify="left" if i in (0, 4) else "right")
        for r in pairs:
            diff.add_row(*(_cell(v) for v in r.values()))
        out.print(diff)
    out.print(Text(_caption(result, star=True), style="dim"), soft_wrap=True)


#: Marks around the best cell of each column; no argv or file name can hold these characters.
_BOLD = ("\x00", "\x01")


def _cell(value: object) -> Text:
    text = str(value)
    if text.startswith(_BOLD[0]) and text.endswith(_BOLD[1]):
        return Text(text[1:-1] + " *", style="bold")
    return Text(text)


def compare_cli(
    predictions: Annotated[list[str], typer.Argument(help="One argument per arm: a predictions file (smm4h predict), comma-separated files (one per seed), or a run folder of smm4h train --test (the seeds its summary.json lists). The first arm is the reference.", show_default=False)],
    names: Annotated[str | None, typer.Option("--names", help="Comma-separated arm names \\[default: the file or folder names].", show_default=False)] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Paired bootstrap resamples of the test posts.")] = 10_000,
    seed: Seed = 0,
    fmt: Format = TableFormat.table,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Compare classifiers on the same labelled test set: the paper's Table 2, and whether each difference is real.

    F1, precision and recall of label 1 per arm (mean ± std over seeds), the winner of each column marked; for every arm against the first: the difference in F1 with a 95% paired bootstrap interval, McNemar's exact test, and a verdict in words. Example:

        smm4h compare runs/baseline runs/synthetic
    """
    specs = predictions
    if any(s == "-" for s in specs):
        raise InputError("compare reads prediction files or run folders, not stdin: write the predictions to a file first.")
    arm_names = parse_list(names, "--names", what="arm names", item="name") if names is not None else None
    if arm_names is not None and len(arm_names) != len(specs):
        raise InputError(f"--names gives {len(arm_names)} names for {len(specs)} arms; give one name per arm.")
    files = [arm_files(s) for s in specs]  # checks every spec before names are taken from them
    if arm_names is None:
        arm_names = [_arm_name(s) for s in specs]
        if len(set(arm_names)) != len(arm_names):
            arm_names = [f"{i + 1}:{n}" for i, n in enumerate(arm_names)]
    cols = columns(text_col, label_col, id_col)
    arms = [[read_predictions(f, cols) for f in seed_files] for seed_files in files]
    render(compare(arms, arm_names, bootstrap, seed), fmt)


def register(app: typer.Typer) -> None:
    app.command("compare", help=compare_cli.__doc__, short_help="Table 2 with confidence intervals, McNemar tests and a verdict.")(compare_cli)
