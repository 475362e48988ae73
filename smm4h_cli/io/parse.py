"""Bytes to a frame: formats by extension, decoding, and the JSONL, CSV/TSV and Parquet parsers.

Every parser reports where each row came from (``_Where``: the file's line or row), so that the
checks in :mod:`smm4h_cli.io.records` can name the line of a bad record. JSON lines are split on
``\n`` only (:func:`jsonl_lines`); CSV/TSV records are scanned for their first physical line.
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
    # polars turns true into 1 in a column of numbers; keep the values as they are, so that a
    # boolean label is rejected whether or not the rest of the column is boolean too.
    if bool in kinds and len(kinds) > 1:
        return pl.Series(col, values, dtype=pl.Object)
    try:
        return pl.Series(col, values)
    except Exception:  # mixed types, integers past 64 bits, ...
        return pl.Series(col, values, dtype=pl.Object)


class _Scan:
    """The records of delimited text as the parser will see them: first physical line, field count."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.fields: list[int] = []  # 0 for an empty line (polars reads it as a row of nulls)
        self.problem: tuple[int, str] | None = None


def _scan_delimited(text: str, separator: str, quote: str | None) -> _Scan:
    """Split ``text`` into records the way polars does, counting every line break, quoted or not.

    Only the characters that matter (quote, separator, line break) are visited, so this is
    cheap next to the parse itself. Errors name the record's first line.
    """
    scan = _Scan()
    if quote is None:
        for number, line in enumerate(jsonl_lines(text), start=1):
            scan.starts.append(number)
            scan.fields.append(line.count(separator) + 1 if line.strip("\r") else 0)
        return scan
    special = re.compile("[" + re.escape(quote + separator) + "\n]")
    line = record_line = 1
    fields, field_start, record_start = 1, 0, 0
    in_quotes, closed_at = False, -1

    def after_quote_ok(end: int) -> bool:
        return closed_at < 0 or text[closed_at:end] in ("", "\r")

    i = 0
    while (m := special.search(text, i)) is not None:
        k, c = m.start(), m.group()
        i = k + 1
        if in_quotes:
            if c == "\n":
                line += 1
            elif c == quote:
                if text.startswith(quote, k + 1):
                    i = k + 2  # a doubled quote is a quote character
                else:
                    in_quotes, closed_at = False, k + 1
            continue
        if c == quote:
            if k == field_start:
                in_quotes = True
            continue  # a quote inside an unquoted field is an ordinary character
        if not after_quote_ok(k):
            scan.problem = (record_line, "text after the closing quote of a field; a quote inside a quoted field is written twice (\"\")")
            return scan
        closed_at = -1
        if c == separator:
            fields += 1
            field_start = k + 1
            continue
        scan.starts.append(record_line)
        scan.fields.append(fields if text[record_start:k].strip("\r") else 0)
        line += 1
        record_line, fields, field_start, record_start = line, 1, k + 1, k + 1
    if in_quotes:
        scan.problem = (record_line, f"a quoted field is never closed (a {quote} without its closing {quote})")
    elif not after_quote_ok(len(text)):
        scan.problem = (record_line, "text after the closing quote of a field; a quote inside a quoted field is written twice (\"\")")
    elif record_start < len(text):
        scan.starts.append(record_line)
        scan.fields.append(fields if text[record_start:].strip("\r") else 0)
    return scan


def _structure_error(scan: _Scan, name: str, kind: str) -> InputError | None:
    hint = (
        "Put fields that hold commas, quotes or line breaks in double quotes, as spreadsheets export them."
        if kind == "CSV"
        else "Fields are separated by one tab; a text that holds tabs or line breaks must be quoted."
    )
    if scan.problem is not None:
        line, what = scan.problem
        return InputError(f"{name}, line {line}: {what}. {hint}")
    if not scan.fields or not scan.fields[0]:
        return None
    header = scan.fields[0]
    for start, count in zip(scan.starts[1:], scan.fields[1:]):
        if count and count != header:
            return InputError(
                f"{name}, line {start}: {count} field{'s' if count > 1 else ''} where the header has {header}. {hint}"
            )
    return None


def _shifted(scan: _Scan, line_offset: int) -> _Scan:
    """``scan`` of a streamed chunk (the header, then records from further down the file) with the
    records' lines counted in the whole file; the header stays line 1."""
    if line_offset:
        scan.starts[1:] = [s + line_offset for s in scan.starts[1:]]
        if scan.problem is not None and scan.problem[0] > 1:
            scan.problem = (scan.problem[0] + line_offset, scan.problem[1])
    return scan


def _parse_delimited(text: str, name: str, separator: str, line_offset: int = 0) -> tuple[pl.DataFrame, _Where]:
    """``line_offset``: for a streamed chunk (header + records), the file lines skipped between them."""
    kind = "CSV" if separator == "," else "TSV"
    # The SMM4H TSV layout never quotes (tweets hold stray double quotes), so a TSV is read
    # without quoting when its rows are regular that way; one that is regular only with quoting
    # (a field with a line break, as spreadsheets export them) is read with it. A CSV is quoted.
    quote: str | None = '"'
    scan = _shifted(_scan_delimited(text, separator, quote if separator == "," else None), line_offset)
    problem = _structure_error(scan, name, kind)
    if separator == "\t":
        quote = None
        if problem is not None:
            quoted = _shifted(_scan_delimited(text, separator, '"'), line_offset)
            if _structure_error(quoted, name, kind) is None:
                quote, scan, problem = '"', quoted, None
    if problem is not None:
        raise problem
    try:
        frame = pl.read_csv(
            io.StringIO(text),
            separator=separator,
            infer_schema=False,  # every column as text: ids such as 00123 keep their zeros
            quote_char=quote,
        )
    except (Exception, pl.exceptions.PanicException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{name}: could not be read as {kind} ({first}).") from None
    if len(scan.starts) == frame.height + 1:
        return frame, _Where("line", scan.starts[1:])
    return frame, _Where("line", offset=2 + line_offset)


def _parse_parquet(raw: bytes, name: str) -> tuple[pl.DataFrame, _Where]:
    try:
        frame = pl.read_parquet(io.BytesIO(raw))
    except (Exception, pl.exceptions.PanicException) as exc:  # polars raises several types for a corrupt file
        raise InputError(f"{name}: not a readable Parquet file ({type(exc).__name__}).") from None
    return frame, _Where("row", offset=1)
