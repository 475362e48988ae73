"""CSV and TSV text to a frame, with every record's first physical line for messages.

Blank lines (nothing but spaces, and tabs in a CSV) are skipped wherever they are (before the
header, between records, at the end), as JSON lines skips them; the header is the first line
that is not blank. A TSV is read without quoting when its rows are regular that way (the SMM4H
layout never quotes, and tweets hold stray double quotes) and with it otherwise; a streamed file
decides once, from its first chunk (:mod:`smm4h_cli.io.stream`), so the output does not depend
on the chunk size.
"""

from __future__ import annotations

import io
import re

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io.parse import _Where, jsonl_lines

#: ``quote`` of :func:`_parse_delimited`: decide from the text (TSV), as a whole-file read does.
AUTO = "auto"
_QUOTE_INSIDE = (
    "a double quote inside a field that does not start with one; put the whole field in double quotes "
    'and write the quote twice (5" screen as "5"" screen")'
)
_AFTER_CLOSE = 'text after the closing quote of a field; a quote inside a quoted field is written twice ("")'


class _Scan:
    """The records of delimited text as the parser will see them: first physical line, field count."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.fields: list[int] = []
        self.blank: list[int] = []  # lines (of the text scanned) that are blank records, left out
        self.problem: tuple[int, str] | None = None


def _blank_chars(separator: str) -> str:
    return " \r" if separator == "\t" else " \t\r"


def _scan_delimited(text: str, separator: str, quote: str | None) -> _Scan:
    """Split ``text`` into records the way polars does, counting every line break, quoted or not;
    blank lines are left out. Only the characters that matter (quote, separator, line break) are
    visited, so this is cheap next to the parse itself. Errors name the record's first line.
    """
    blank = _blank_chars(separator)
    scan = _Scan()

    def record(line: int, fields: int, body: str) -> None:
        if body.strip(blank):
            scan.starts.append(line)
            scan.fields.append(fields)
        else:
            scan.blank.append(line)

    if quote is None:
        for number, line in enumerate(jsonl_lines(text), start=1):
            record(number, line.count(separator) + 1, line)
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
            if k != field_start:  # polars cannot read it: name the line rather than fail inside polars
                scan.problem = (record_line, _QUOTE_INSIDE)
                return scan
            in_quotes = True
            continue
        if not after_quote_ok(k):
            scan.problem = (record_line, _AFTER_CLOSE)
            return scan
        closed_at = -1
        if c == separator:
            fields += 1
            field_start = k + 1
            continue
        record(record_line, fields, text[record_start:k])
        line += 1
        record_line, fields, field_start, record_start = line, 1, k + 1, k + 1
    if in_quotes:
        scan.problem = (record_line, f"a quoted field is never closed (a {quote} without its closing {quote})")
    elif not after_quote_ok(len(text)):
        scan.problem = (record_line, _AFTER_CLOSE)
    elif record_start < len(text):
        record(record_line, fields, text[record_start:])
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
    if not scan.fields:
        return None
    header = scan.fields[0]
    for start, count in zip(scan.starts[1:], scan.fields[1:]):
        if count != header:
            return InputError(
                f"{name}, line {start}: {count} field{'s' if count > 1 else ''} where the header has {header}. {hint}"
            )
    return None


def _shifted(scan: _Scan, skipped: int, line_offset: int) -> _Scan:
    """``scan`` of a streamed chunk (the header, then records from further down the file) with lines
    counted in the whole file: ``skipped`` blank lines came before the header, ``line_offset``
    more lines between the header and the chunk's records."""
    if skipped or line_offset:
        header = scan.starts[0] if scan.starts else None
        scan.starts = [s + skipped + (line_offset if i else 0) for i, s in enumerate(scan.starts)]
        if scan.problem is not None:
            line, what = scan.problem
            in_header = header is None or line <= header
            scan.problem = (line + skipped + (0 if in_header else line_offset), what)
    return scan


def _tsv_quote(text: str) -> str | None:
    """How a TSV reads: without quoting where its rows are regular that way, else with it where that
    makes them regular, else without (whose error then names the line)."""
    if _structure_error(_scan_delimited(text, "\t", None), "", "TSV") is None:
        return None
    return '"' if _structure_error(_scan_delimited(text, "\t", '"'), "", "TSV") is None else None


def _without(text: str, blank: list[int]) -> str:
    """``text`` without the lines numbered ``blank`` (blank records: one physical line each)."""
    drop = set(blank)
    return "\n".join(ln for number, ln in enumerate(text.split("\n"), start=1) if number not in drop)


def _parse_delimited(
    text: str, name: str, separator: str, line_offset: int = 0, *, skipped: int = 0, quote: str | None = AUTO
) -> tuple[pl.DataFrame, _Where]:
    """The records of CSV/TSV ``text``. For a streamed chunk (header + records): ``skipped`` blank lines
    came before the header, ``line_offset`` file lines between the header and the records, and
    ``quote`` is what the first chunk decided (:func:`decide_quote`)."""
    kind = "CSV" if separator == "," else "TSV"
    fixed = quote != AUTO and separator == "\t"
    quote = '"' if separator == "," else _tsv_quote(text) if quote == AUTO else quote
    scan = _shifted(_scan_delimited(text, separator, quote), skipped, line_offset)
    problem = _structure_error(scan, name, kind)
    if problem is not None:
        other = None if quote else '"'
        if fixed and _structure_error(_scan_delimited(text, separator, other), name, kind) is None:
            how = "with" if quote else "without"
            raise InputError(
                f"{problem} This TSV reads {how} quoting in its first chunk, and its quoting is decided once for the "
                f"whole file; raise --chunk-size above the number of posts to read it in one chunk."
            )
        raise problem
    if scan.blank:  # polars reads a blank line as a row of nulls (or of spaces)
        text = _without(text, scan.blank)
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
    return frame, _Where("line", offset=2 + skipped + line_offset)


def decide_quote(text: str, separator: str) -> str | None:
    """The quote character a whole-file read of ``text`` would use (``None``: no quoting)."""
    return '"' if separator == "," else _tsv_quote(text)
