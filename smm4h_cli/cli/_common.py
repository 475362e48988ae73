"""What the commands share: options defined once, the stderr console, and table rendering."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Sequence, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from smm4h_cli.errors import InputError
from smm4h_cli.io import Columns
from smm4h_cli.tables import FORMATS, format_cell, markdown_table  # noqa: F401 (markdown_table: re-exported for the commands)

#: Messages, warnings and progress go to stderr; stdout carries only the product.
err = Console(stderr=True, highlight=False)


def choices(name: str, values: Sequence[str]) -> Any:
    """A choice option's enum, built from the library's tuple of values so that the two never drift apart."""
    return Enum(name, {value: value for value in values}, type=str)


TableFormat = choices("TableFormat", FORMATS)


def flag(*names: str, help: str, **options: Any) -> Any:
    """A yes/no switch: it takes no value, so ``--help`` shows no type beside it (as Click shows flags)."""
    return typer.Option(*names, help=help, metavar="", **options)


TextCol = Annotated[str | None, typer.Option("--text-col", help="Column holding the post text \\[default: text].")]
LabelCol = Annotated[str | None, typer.Option("--label-col", help="Column holding the 0/1 label \\[default: label].")]
IdCol = Annotated[str | None, typer.Option("--id-col", help="Column holding the post id \\[default: id or tweet_id; generated if absent].")]
#: The largest seed numpy, scikit-learn and the Trainer take (they want an unsigned 32-bit number).
SEED_MAX = 2**32 - 1
Seed = Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed; the same inputs and seed give the same output.")]
Force = Annotated[bool, flag("--force", help="Replace output files that already exist.")]
Quiet = Annotated[bool, flag("--quiet", "-q", help="No progress bars or messages on stderr.")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")]
Threads = Annotated[int | None, typer.Option("--threads", help="torch CPU threads \\[default: torch's, one per core].", show_default=False)]
ClassifierModel = Annotated[str | None, typer.Option("--model", help="Classifier base: a Hugging Face id in the local cache or a folder, e.g. microsoft/deberta-v3-large \\[default: the embedded all-MiniLM-L6-v2].", show_default=False)]
Format = Annotated[TableFormat, typer.Option("--format", "-f", help="Output: a table for people, or json/csv/markdown.")]


#: Where ``smm4h generate`` writes when run at a terminal, and where ``smm4h train --with-synthetic`` reads.
DEFAULT_SYNTHETIC = Path("synthetic.jsonl")


def columns(text_col: str | None, label_col: str | None, id_col: str | None) -> Columns:
    return Columns(text=text_col, label=label_col, id=id_col)


T = TypeVar("T")


def parse_list(
    value: str, flag_name: str, convert: Callable[[str], T] = str, what: str = "values", *, item: str = "value", example: str | None = None
) -> list[T]:
    """The one comma-list parser of the options and arguments: ``"1, 2,3"`` -> ``[1, 2, 3]``.

    An empty item, an item ``convert`` refuses (ValueError) and a repeated item are each an
    ``InputError`` naming ``flag_name`` (the option, or the argument in words), the ``what`` it
    takes (plural), the empty ``item`` (singular) and an ``example`` of a good value.
    """
    example = example or _example(convert)
    parts = [part.strip() for part in value.split(",")]
    if not value.strip() or any(not part for part in parts):
        raise InputError(f"{flag_name} '{value}' has an empty {item}; give comma-separated {what}, none empty, such as {example}.")
    try:
        items = [convert(part) for part in parts]
    except ValueError:
        raise InputError(f"{flag_name} takes comma-separated {what}, such as {example}; got '{value}'.") from None
    repeated = sorted({str(x) for x in items if items.count(x) > 1})
    if repeated:
        raise InputError(f"{flag_name} gives {repeated[0]} more than once; give each of the {what} once.")
    return items


def seed_value(text: str) -> int:
    """A seed of a ``--seeds`` list (``parse_list``'s ``convert``): an integer from 0 to ``SEED_MAX``."""
    value = int(text)
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"seed {value} is outside 0-{SEED_MAX}")
    return value


def _example(convert: Callable[[str], Any]) -> str:
    return "1,2,3" if convert in (int, seed_value) else "a,b"


def show_progress(quiet: bool) -> bool:
    """Progress bars only where a person watches: stderr is a terminal and --quiet is off."""
    return not quiet and err.is_terminal


def emit_table(
    rows: Sequence[dict[str, Any]],
    fmt: TableFormat,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    digits: int = 3,
    caption: str | None = None,
) -> None:
    """Print ``rows`` (one dict per row, same keys) to stdout in the chosen format."""
    if fmt is TableFormat.json:
        sys.stdout.write(json.dumps(list(rows), indent=2, ensure_ascii=False) + "\n")
    elif fmt is TableFormat.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    elif fmt is TableFormat.markdown:
        sys.stdout.write(markdown_table(rows, headers, digits))
    else:
        # Everything as Text, never as Rich markup: names of files, arms and groups come from
        # the user, and "[red]a" or "[/x]" must show as written, not style or crash.
        table = Table(title=None if title is None else Text(title), caption=None if caption is None else Text(caption))
        for i, key in enumerate(rows[0]):
            table.add_column(Text((headers or {}).get(key, key)), justify="left" if i == 0 else "right", no_wrap=i == 0)
        for r in rows:
            table.add_row(*(Text(format_cell(v, digits)) for v in r.values()))
        out = Console(highlight=False)
        if not out.is_terminal:  # a pipe or a file: do not squeeze the table into 80 columns
            out = Console(highlight=False, width=200)
        out.print(table)
