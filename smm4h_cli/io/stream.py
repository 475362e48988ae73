"""The data contract of :mod:`smm4h_cli.io`, a chunk of posts at a time, for files of any size.

``iter_records`` reads a file (or stdin) in chunks and yields each as ``read_records`` would
return it: the same parsers and checks, with lines counted in the whole file, generated ids
numbered across the whole file, and ids checked unique across the whole file (a set of the ids
seen, not of the posts). ``write_record_chunks`` (:mod:`smm4h_cli.io.sink`, re-exported here)
writes chunks as they come to a temporary file beside the output and renames it into place at the
end; an error on the way (a bad line at post 900,000) removes the temporary file, so no output
file is left.

Memory: one chunk of posts, plus the ids seen so far (about 120 bytes an id) to check them unique.

What a chunked read cannot see ahead, the first chunk decides: which columns hold the text, the
label and the id. A later post without one of them is the same error as in a whole-file read
(missing text, a label that is not 0 or 1, a missing id, named by line); a label or id column
that first appears after the first chunk is an error naming that line. Other columns keep the
order of their first appearance, as in a whole-file read; each chunk's columns have the types of
that chunk's values (a column whose values no one type holds is kept as written, ``pl.Object``, as
in a whole-file read). The writer joins the types across chunks (:mod:`smm4h_cli.io.sink`) and
refuses a column that has no one type, naming it. A TSV's quoting is decided by the first chunk;
blank lines never make a chunk of their own.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import IO, Iterator

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io.parse import (
    ID_COLUMNS,
    LABEL_COLUMNS,
    STDIO,
    TEXT_COLUMNS,
    _decode,
    _parse_jsonl,
    _Where,
    display_name,
    format_of,
    open_input,
    stem_of,
    unreadable,
)
from smm4h_cli.io.delimited import AUTO, _blank_chars, _parse_delimited, decide_quote
from smm4h_cli.io.records import Columns, _pick, _to_records
from smm4h_cli.io.sink import write_record_chunks  # noqa: F401  (the writer of the chunks, re-exported)

#: Posts read, predicted and written at a time: about 10 MB of tweets, and a file of up to this
#: many posts is one chunk, exactly the whole-file path.
DEFAULT_CHUNK_SIZE = 10_000


def iter_records(
    path: str | os.PathLike[str],
    columns: Columns = Columns(),
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    require_label: bool = False,
    stdin: IO[bytes] | None = None,
) -> Iterator[pl.DataFrame]:
    """The records of ``path`` as validated frames of at most ``chunk_size`` posts, in file order.

    Every problem is the :class:`InputError` that ``read_records`` raises for it, naming the
    file and the line (or Parquet row) in the whole file; it comes when its chunk is read.
    """
    if chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1; got {chunk_size}.")
    name, fmt = display_name(path), format_of(path)
    state = _Layout(name, stem_of(path), columns, require_label)
    if fmt == "parquet":
        yield from (state.records(frame, where) for frame, where in _parquet_chunks(path, name, chunk_size))
        return
    stream = _binary_stdin(stdin) if str(path) == STDIO else open_input(path)
    try:
        if fmt == "jsonl":
            chunks = _jsonl_chunks(stream, path, name, chunk_size)
        else:
            chunks = _delimited_chunks(stream, path, name, chunk_size, "," if fmt == "csv" else "\t")
        for frame, where in chunks:
            out = state.records(frame, where)
            if out.height:  # a chunk of blank lines only passes nothing on
                yield out
    finally:
        if str(path) != STDIO:
            stream.close()
    if state.rows == 0:
        raise InputError(f"{name} has a header but no rows: expected at least one post.")


def _binary_stdin(stdin: IO[bytes] | None) -> IO[bytes]:
    stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without a buffer (a test harness): read it as UTF-8
        import io

        return io.BytesIO(sys.stdin.read().encode("utf-8"))
    return stream


def _lines(stream: IO[bytes], path) -> Iterator[bytes]:
    """The lines of ``stream``, split on ``\\n`` only (as ``jsonl_lines``); read errors are InputErrors."""
    try:
        yield from stream
    except (OSError, ValueError) as exc:
        raise unreadable(path, exc) from None


def _empty(name: str) -> InputError:
    return InputError(f"{name} is empty: expected posts with a '{TEXT_COLUMNS[0]}' column, one per row.")


def _jsonl_chunks(stream: IO[bytes], path, name: str, chunk_size: int) -> Iterator[tuple[pl.DataFrame, _Where]]:
    block: list[bytes] = []
    first_line, rows, content = 1, 0, False
    for number, line in enumerate(_lines(stream, path), start=1):
        block.append(line)
        if line.strip(b" \t\r\n"):
            rows += 1
            content = content or bool(line.strip())
        if rows == chunk_size:
            yield _parse_jsonl(_decode(b"".join(block), name, first_line - 1), name, first_line - 1)
            block, first_line, rows = [], number + 1, 0
    if not content:
        raise _empty(name)
    if rows:
        yield _parse_jsonl(_decode(b"".join(block), name, first_line - 1), name, first_line - 1)


_QUOTE = b'"'


@functools.lru_cache(maxsize=None)
def _special(separator: bytes) -> re.Pattern[bytes]:
    return re.compile(b"[" + re.escape(_QUOTE + separator) + b"]")


def _still_quoted(line: bytes, in_quotes: bool, separator: bytes) -> bool:
    """Whether a quoted field is still open after ``line``, by the rule of ``io.parse._scan_delimited``:
    a quote opens a field only at the field's start, and a doubled quote inside it is a quote."""
    special = _special(separator)
    field_start, i = (-1 if in_quotes else 0), 0
    while True:
        if in_quotes:
            k = line.find(_QUOTE, i)
            if k < 0:
                return True
            if line.startswith(_QUOTE, k + 1):
                i = k + 2
            else:
                in_quotes, i = False, k + 1
            continue
        m = special.search(line, i)
        if m is None:
            return False
        k = m.start()
        if line[k : k + 1] == separator:
            field_start = k + 1
        elif k == field_start:
            in_quotes = True
        i = k + 1


def _delimited_chunks(
    stream: IO[bytes], path, name: str, chunk_size: int, separator: str
) -> Iterator[tuple[pl.DataFrame, _Where]]:
    # A chunk ends only where a record ends (no quoted field open), and is parsed with the
    # header line(s) put back in front, so each chunk parses as the whole file would. Blank lines
    # before the header are skipped (and counted), blank records are not counted as posts, and a
    # TSV's quoting is decided once, by its first chunk.
    sep = separator.encode()
    blank = _blank_chars(separator).encode() + b"\n"
    header: list[bytes] = []
    header_done, in_quotes, content = False, False, False
    block: list[bytes] = []
    first_line, rows, parsed, skipped = 1, 0, False, 0
    quote: str | None = AUTO
    quote_seen = False  # a " anywhere so far: a TSV read unquoted may have meant it as quoting

    def parse(lines: list[bytes], first: int) -> tuple[pl.DataFrame, _Where]:
        nonlocal quote
        head = b"".join(header)
        if head and not head.endswith(b"\n"):
            head += b"\n"
        offset = first - (len(header) + 1) - skipped
        text = _decode(head, name, skipped) + _decode(b"".join(lines), name, first - 1)
        if quote == AUTO:
            quote = decide_quote(text, separator)
        try:
            return _parse_delimited(text, name, separator, offset, skipped=skipped, quote=quote)
        except InputError as exc:
            # Read line by line, a quoted text that spans lines (which a whole read may take quoted) is
            # refused where it breaks: say that quoting was decided by the first chunk.
            if quote is not None or separator != "\t" or "--chunk-size" in str(exc) or not quote_seen:
                raise
            raise InputError(
                f"{exc} This TSV reads without quoting in its first chunk, and its quoting is decided once for the "
                f"whole file; if a quoted text here spans lines, raise --chunk-size above the number of posts to read it in one chunk."
            ) from None

    for number, line in enumerate(_lines(stream, path), start=1):
        content = content or bool(line.strip())
        if not header and not line.strip(blank):
            skipped += 1
            continue
        was_open = in_quotes
        # Once the first chunk has decided to read without quoting, a line is a record: a tweet that
        # opens a " and never closes it is text, not the start of a field to the end of the file.
        in_quotes = quote is not None and _still_quoted(line, in_quotes, sep)
        quote_seen = quote_seen or _QUOTE in line
        if not header_done:
            header.append(line)
            header_done = not in_quotes
            first_line = number + 1
            continue
        block.append(line)
        if not in_quotes and (was_open or line.strip(blank)):
            rows += 1
            if rows >= chunk_size:
                yield parse(block, first_line)
                block, first_line, rows, parsed = [], number + 1, 0, True
    if not content:
        raise _empty(name)
    if rows or in_quotes or not parsed:  # the rest, or a header alone (parsed for its message)
        yield parse(block, first_line)


def _parquet_chunks(path, name: str, chunk_size: int) -> Iterator[tuple[pl.DataFrame, _Where]]:
    with open_input(path) as stream:
        try:
            head = stream.read(4096)
        except OSError as exc:
            raise unreadable(path, exc) from None
    if len(head) < 4096 and not head.strip():
        raise _empty(name)
    try:
        total = pl.scan_parquet(path).select(pl.len()).collect().item()
    except (Exception, pl.exceptions.PanicException) as exc:
        raise InputError(f"{name}: not a readable Parquet file ({type(exc).__name__}).") from None
    if total == 0:
        yield pl.read_parquet(path), _Where("row", offset=1)
    for start in range(0, total, chunk_size):
        try:  # the row groups that hold these rows, not the file
            frame = pl.scan_parquet(path).slice(start, chunk_size).collect()
        except (Exception, pl.exceptions.PanicException) as exc:
            raise InputError(f"{name}: not a readable Parquet file ({type(exc).__name__}).") from None
        yield frame, _Where("row", offset=start + 1)


class _Layout:
    """What the first chunk decided (the text, label and id columns, the columns' order), and the ids seen."""

    ROLES = (("text", TEXT_COLUMNS, "--text-col"), ("label", LABEL_COLUMNS, "--label-col"), ("id", ID_COLUMNS, "--id-col"))

    def __init__(self, name: str, stem: str, columns: Columns, require_label: bool):
        self.name, self.stem, self.columns, self.require_label = name, stem, columns, require_label
        self.chosen: dict[str, str | None] | None = None
        self.order: list[str] = []
        self.rows = 0
        self.seen: dict[str, int] = {}

    def records(self, frame: pl.DataFrame, where: _Where) -> pl.DataFrame:
        if frame.height == 0 and self.rows == 0:
            raise InputError(f"{self.name} has a header but no rows: expected at least one post.")
        if self.chosen is None:
            out = _to_records(frame, where, self.name, self.stem, self.columns, self.require_label)
            self.chosen = {role: _pick(frame, self.name, getattr(self.columns, role), usual, flag) for role, usual, flag in self.ROLES}
            self.order = list(frame.columns)
        else:
            frame = self._aligned(frame, where)
            chosen = Columns(text=self.chosen["text"], label=self.chosen["label"], id=self.chosen["id"])
            out = _to_records(frame, where, self.name, self.stem, chosen, self.require_label, self.rows)
        if self.chosen["id"] is not None:
            self._check_unique(out["id"].to_list(), where)
        self.rows += out.height
        return out

    def _aligned(self, frame: pl.DataFrame, where: _Where) -> pl.DataFrame:
        """``frame`` with the first chunk's columns, in its order (a missing one as nulls, so its
        posts fail the usual checks by line), and any new column after them."""
        for role, usual, flag in self.ROLES:
            if self.chosen[role] is None and getattr(self.columns, role) is None:
                found = _pick(frame, self.name, None, usual, flag)
                if found is not None:
                    first = next((i for i, v in enumerate(frame[found].to_list()) if v is not None), 0)
                    raise InputError(
                        f"{self.name}, {where(first)}: a '{found}' column first appears here, after "
                        f"{self.rows:,} posts without one. Give every post a {role}, or none."
                    )
        missing = [c for c in self.order if c not in frame.columns]
        new = [c for c in frame.columns if c not in self.order]
        self.order += new
        if missing:
            frame = frame.with_columns(pl.lit(None).alias(c) for c in missing)
        return frame.select(self.order)

    def _check_unique(self, ids: list[str], where: _Where) -> None:
        seen = self.seen
        for i, v in enumerate(ids):
            if v in seen:
                raise InputError(
                    f"{self.name}: duplicate id '{v}' on {where.unit} {seen[v]} and {where(i)}. Ids must be unique within a file."
                )
            seen[v] = where.number(i)
