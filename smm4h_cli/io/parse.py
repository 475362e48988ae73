"""Bytes to a frame: formats by extension, decoding, and the JSONL, CSV/TSV and Parquet parsers.

Every parser reports where each row came from (``_Where``: the file's line or row), so that the
checks in :mod:`smm4h_cli.io.records` can name the line of a bad record. JSON lines are split on
``\n`` only (:func:`jsonl_lines`); CSV/TSV is parsed in :mod:`smm4h_cli.io.delimited`.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path
from typing import IO, Iterable

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io.types import column_type, conformed

STDIO = "-"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
#: Column names recognised without flags, in order of preference. ``tweet_id`` is the official
#: SMM4H layout.
ID_COLUMNS = ("id", "tweet_id")
TEXT_COLUMNS = ("text",)
LABEL_COLUMNS = ("label",)
_MAX_LISTED = 5


def format_of(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` by its extension; ``-`` is JSON lines."""
    name = str(path)
    if name == STDIO:
        return "jsonl"
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        shown = f"extension '{suffix}'" if suffix else "no extension"
        raise InputError(
            f"{name}: unknown file format ({shown}). smm4h reads and writes {known} "
            f"and '-' for JSON lines on stdin/stdout; rename or convert the file."
        )
    return FORMATS[suffix]


def display_name(path: str | os.PathLike[str]) -> str:
    return "<stdin>" if str(path) == STDIO else str(path)


def stem_of(path: str | os.PathLike[str]) -> str:
    """A short name for a file in tables and generated ids: its stem, ``stdin`` for ``-``."""
    return "stdin" if str(path) == STDIO else Path(path).stem


def _read_bytes(path: str | os.PathLike[str], stdin: IO[bytes] | None) -> bytes:
    # Every way a read can fail (no permission, a folder, an I/O error, a broken pipe) becomes
    # an InputError here, so no command can show a traceback for an unreadable input.
    if str(path) == STDIO:
        try:
            stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
            if stream is None:
                return sys.stdin.read().encode("utf-8")
            return stream.read()
        except (OSError, ValueError) as exc:
            raise unreadable(path, exc) from None
    with open_input(path) as stream:
        try:
            return stream.read()
        except OSError as exc:
            raise unreadable(path, exc) from None


def open_input(path: str | os.PathLike[str]) -> IO[bytes]:
    """``path`` opened for reading in binary, or the :class:`InputError` saying why it cannot be."""
    p = Path(path)
    try:
        if not p.exists():
            raise InputError(f"{p}: no such file. Check the path (relative paths start from {Path.cwd()}).")
        if p.is_dir():
            raise InputError(f"{p} is a folder; expected a file of posts (.jsonl, .parquet, .csv or .tsv).")
        return p.open("rb")
    except OSError as exc:
        raise unreadable(path, exc) from None


def unreadable(path: str | os.PathLike[str], exc: OSError | ValueError) -> InputError:
    """The one message for an input that exists but cannot be read."""
    if str(path) == STDIO:
        return InputError(f"<stdin> could not be read ({_reason(exc)}).")
    p = Path(path)
    if isinstance(exc, PermissionError):
        return InputError(f"{p}: permission denied, the file cannot be read. Check its permissions (ls -l '{p}').")
    return InputError(f"{p} could not be read ({_reason(exc)}).")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _decode(raw: bytes, name: str, line_offset: int = 0) -> str:
    """``raw`` as UTF-8; ``line_offset``: lines of the file before ``raw`` (a streamed chunk)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1 + line_offset
        bad = raw[exc.start : exc.start + 1].hex()
        raise InputError(
            f"{name}, line {line}: byte 0x{bad} is not UTF-8. Save the file as UTF-8 "
            f"(for a Latin-1 file: iconv -f latin1 -t utf-8 IN > OUT)."
        ) from None


class _Where:
    """Turns a 0-based row index into 'line N' or 'row N' for messages."""

    def __init__(self, kind: str, lines: list[int] | None = None, offset: int = 0):
        self.kind, self.lines, self.offset = kind, lines, offset

    def __call__(self, row: int) -> str:
        return f"{self.unit} {self.number(row)}"

    @property
    def unit(self) -> str:
        return "line" if self.lines is not None else self.kind

    def number(self, row: int) -> int:
        return self.lines[row] if self.lines is not None else row + self.offset

    def many(self, rows: Iterable[int]) -> str:
        rows = list(rows)
        shown = ", ".join(self(r).split(" ")[1] for r in rows[:_MAX_LISTED])
        more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
        unit = self(rows[0]).split(" ")[0] + ("s" if len(rows) > 1 else "")
        return f"{unit} {shown}{more}"


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON-lines text, split on ``\\n`` only: the one splitter for every JSONL reader.

    ``str.splitlines`` also splits on U+2028, U+2029, U+0085 and other separators that JSON
    allows raw inside a string, so it cuts such a record in two. A ``\\r`` before ``\\n`` (a
    Windows line end) stays on the line; it is JSON whitespace.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


_JSON_BLANK = " \t\r"
# \udXXX escapes in the high half: a surrogate, which is only valid as half of a pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _parse_jsonl(text: str, name: str, line_offset: int = 0) -> tuple[pl.DataFrame, _Where]:
    rows: list[dict] = []
    lines: list[int] = []
    for number, line in enumerate(jsonl_lines(text), start=1 + line_offset):
        if not line.strip(_JSON_BLANK):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{name}, line {number}: not valid JSON ({exc.msg}, column {exc.colno}). "
                f"Each line must be one JSON object such as {{\"text\": \"...\", \"label\": 1}}."
            ) from None
        except (ValueError, RecursionError) as exc:  # a number of thousands of digits, nesting too deep
            raise InputError(f"{name}, line {number}: not valid JSON ({_reason(exc)}).") from None
        if not isinstance(value, dict):
            raise InputError(
                f"{name}, line {number}: expected a JSON object such as {{\"text\": \"...\"}}, "
                f"found {type(value).__name__}."
            )
        if _SURROGATE_ESCAPE.search(line):
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(
                    f"{name}, line {number}: a \\u escape is half of a character (an unpaired surrogate). "
                    f"Write the character itself, or both halves of its pair."
                ) from None
        rows.append(value)
        lines.append(number)
    # Columns are built one by one so that a mixed column (1 here, "yes" there) reaches the
    # label check as values rather than failing inside polars' type inference.
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    series = [_jsonl_column(col, [row.get(col) for row in rows]) for col in names]
    return pl.DataFrame(series), _Where("line", lines)


def _jsonl_column(col: str, values: list) -> pl.Series:
    kinds = {type(v) for v in values if v is not None}
    # A column of mixed kinds (1 and "x", true and 1, 1 and 1.5) stays as the values themselves,
    # so that the label, id and text checks see them as written (polars would turn true into 1);
    # a pass-through column of them is typed by records._passed_through where one type holds them
    # all (1 and 1.5), else kept as written, for the writers to refuse (write.check_one_type).
    if len(kinds) > 1:
        return pl.Series(col, values, dtype=pl.Object)
    if kinds & {dict, list}:  # typed from every value: polars infers a nested type from the first
        dtype = column_type(values)
        if dtype is not None:
            return conformed(values, dtype).alias(col)
        return pl.Series(col, values, dtype=pl.Object)
    try:
        return pl.Series(col, values)
    except Exception:  # integers past 64 bits
        return pl.Series(col, values, dtype=pl.Object)


def _parse_parquet(raw: bytes, name: str) -> tuple[pl.DataFrame, _Where]:
    try:
        frame = pl.read_parquet(io.BytesIO(raw))
    except (Exception, pl.exceptions.PanicException) as exc:  # polars raises several types for a corrupt file
        raise InputError(f"{name}: not a readable Parquet file ({type(exc).__name__}).") from None
    return frame, _Where("row", offset=1)
