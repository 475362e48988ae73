"""Read, validate and write records: the data contract every command shares.

A record is a post: ``id`` (string), ``text`` (non-empty string), ``label`` (0 or 1, absent for
unlabelled data), an optional ``source``; other columns pass through untouched. Files are read
by extension (JSON lines, Parquet, CSV, TSV) and ``-`` is JSON lines on stdin/stdout. Every
problem is an :class:`~smm4h_cli.errors.InputError` that names the file and the line or row.
Writes go to a temporary file in the same folder and are renamed into place, so a failed
command never leaves half a file behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Mapping, Sequence

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


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the text, the label and the id (``None``: the usual names)."""

    text: str | None = None
    label: str | None = None
    id: str | None = None


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


def read_records(
    path: str | os.PathLike[str],
    columns: Columns = Columns(),
    *,
    require_label: bool = False,
    predictions: bool = False,
    stdin: IO[bytes] | None = None,
) -> pl.DataFrame:
    """Read one file of posts into a frame with ``id``, ``text`` and (if present) ``label`` first.

    ``require_label`` makes a missing label column an error (training, evaluation). Ids are
    generated as ``<file stem>-<row number>`` when the file has none, so they are stable.
    ``predictions`` reads a file of ``smm4h predict``: it must have a ``pred`` column of 0/1
    (the same rule as labels) and may have ``prob``, a number in [0, 1]; both are checked here,
    with the file and line of the first bad value.
    """
    name = display_name(path)
    fmt = format_of(path)
    raw = _read_bytes(path, stdin)
    if not raw.strip():
        raise InputError(f"{name} is empty: expected posts with a '{TEXT_COLUMNS[0]}' column, one per row.")
    if fmt == "parquet":
        frame, where = _parse_parquet(raw, name)
    else:
        text = _decode(raw, name)
        if fmt == "jsonl":
            frame, where = _parse_jsonl(text, name)
        else:
            frame, where = _parse_delimited(text, name, "," if fmt == "csv" else "\t")
    if frame.height == 0:
        raise InputError(f"{name} has a header but no rows: expected at least one post.")
    records = _to_records(frame, where, name, stem_of(path), columns, require_label)
    if predictions:
        records = check_predictions(records, name, where)
    return records


def read_predictions(path: str | os.PathLike[str], columns: Columns = Columns()) -> pl.DataFrame:
    """Read a labelled file of predictions (``smm4h predict`` output): ``label``, ``pred`` and maybe ``prob``, checked."""
    return read_records(path, columns, require_label=True, predictions=True)


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
            scan.problem = (record_line, f"text after the closing quote of a field; a quote inside a quoted field is written twice (\"\")")
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
        scan.problem = (record_line, f"text after the closing quote of a field; a quote inside a quoted field is written twice (\"\")")
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


def _pick(frame: pl.DataFrame, name: str, asked: str | None, usual: tuple[str, ...], flag: str) -> str | None:
    if asked is not None:
        if asked not in frame.columns:
            raise InputError(
                f"{name} has no column '{asked}' (given with {flag}). Columns found: "
                f"{', '.join(frame.columns)}."
            )
        return asked
    return next((c for c in usual if c in frame.columns), None)


def _to_records(
    frame: pl.DataFrame,
    where: _Where,
    name: str,
    stem: str,
    columns: Columns,
    require_label: bool,
    first_row: int = 0,
) -> pl.DataFrame:
    """The validated records of ``frame``; ``first_row``: rows of the file before it (a streamed chunk), for generated ids."""
    text_col = _pick(frame, name, columns.text, TEXT_COLUMNS, "--text-col")
    if text_col is None:
        raise InputError(
            f"{name} has no text column. Columns found: {', '.join(frame.columns)}. "
            f"Name the column that holds the posts with --text-col, e.g. --text-col {frame.columns[0]}."
        )
    label_col = _pick(frame, name, columns.label, LABEL_COLUMNS, "--label-col")
    id_col = _pick(frame, name, columns.id, ID_COLUMNS, "--id-col")
    if require_label and label_col is None:
        raise InputError(
            f"{name} has no label column; this command needs labelled posts (0 or 1). "
            f"Columns found: {', '.join(frame.columns)}. Name it with --label-col."
        )

    text = _text_column(frame[text_col], where, name)
    ids = _id_column(frame[id_col] if id_col else None, frame.height, stem, where, name, first_row)
    out = [ids, text]
    if label_col is not None:
        out.append(_label_column(frame[label_col], where, name))
    canonical = {"id", "text", "label"}
    used = {text_col, label_col, id_col} - {None}
    rest = [frame[c] for c in frame.columns if c not in used]
    clash = [s.name for s in rest if s.name in canonical]
    if clash:
        raise InputError(
            f"{name}: column '{clash[0]}' would be replaced by the mapped column; "
            f"rename one of them or map it with --{clash[0]}-col {clash[0]}."
        )
    return pl.DataFrame(out + rest)


def _text_column(col: pl.Series, where: _Where, name: str) -> pl.Series:
    values = col.to_list()
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise InputError(
            f"{name}: empty or missing text on {where.many(bad)}. Every post needs non-empty "
            f"text; remove those rows or fill them in."
        )
    return pl.Series("text", values, dtype=pl.String)


def _id_column(col: pl.Series | None, height: int, stem: str, where: _Where, name: str, first_row: int = 0) -> pl.Series:
    if col is None:
        return pl.Series("id", [f"{stem}-{first_row + i + 1}" for i in range(height)], dtype=pl.String)
    values = col.to_list()
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())]
    if missing:
        raise InputError(f"{name}: missing id on {where.many(missing)}. Fill them in, or drop the id column to have ids generated.")
    ids = [v if isinstance(v, str) else json.dumps(v) if not isinstance(v, (int, float)) else str(v) for v in values]
    first: dict[str, int] = {}
    for i, v in enumerate(ids):
        if v in first:
            raise InputError(
                f"{name}: duplicate id '{v}' on {where(first[v])} and {where(i)}. Ids must be "
                f"unique within a file."
            )
        first[v] = i
    return pl.Series("id", ids, dtype=pl.String)


def _binary_value(v: object) -> int | None:
    """0 or 1, given as a number (JSON, Parquet) or as the text of one (every CSV/TSV cell is text).

    Booleans are not labels: JSON ``true``, a Boolean Parquet column and the text ``true`` are
    rejected alike (write 1 and 0), so a column means the same whatever else it holds.
    """
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and v in (0, 1):
        return v
    if isinstance(v, float) and v in (0.0, 1.0):
        return int(v)
    if isinstance(v, str) and v.strip() in ("0", "1"):
        return int(v.strip())
    return None


def _bad_values(values: list, bad: list[int], where: _Where) -> str:
    shown = ", ".join(f"{values[i]!r} on {where(i)}" for i in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    return shown + more


def _boolean_hint(values: list, bad: list[int]) -> str:
    if any(isinstance(values[i], bool) or str(values[i]).strip().lower() in ("true", "false") for i in bad):
        return " Booleans are not accepted: write 1 for true and 0 for false."
    return ""


def _binary_column(col: pl.Series, where: _Where, name: str, column: str, fix: str) -> pl.Series:
    values = col.to_list()
    numbers = [_binary_value(v) for v in values]
    bad = [i for i, v in enumerate(numbers) if v is None]
    if bad:
        raise InputError(
            f"{name}: {'labels' if column == 'label' else column + ' values'} must be 0 or 1; found {_bad_values(values, bad, where)}."
            f"{_boolean_hint(values, bad)} {fix}"
        )
    return pl.Series(column, numbers, dtype=pl.Int64)


def _label_column(col: pl.Series, where: _Where, name: str) -> pl.Series:
    return _binary_column(
        col, where, name, "label", "Recode the label column (1 = positive class), or point --label-col at the right column."
    )


def _probability(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return x if 0.0 <= x <= 1.0 else None  # NaN fails both comparisons


def check_predictions(frame: pl.DataFrame, name: str, where: _Where | None = None) -> pl.DataFrame:
    """``frame`` with ``pred`` as 0/1 integers and ``prob`` (if present) as floats in [0, 1], or an InputError.

    ``pred`` follows the rule of labels (0 or 1, no booleans). ``name`` says whose frame it is in
    messages; ``where`` turns a row index into a line (default: ``row N``, counted from 1).
    """
    where = where or _Where("row", offset=1)
    if "pred" not in frame.columns:
        raise InputError(
            f"{name} has no 'pred' column (columns found: {', '.join(frame.columns)}); "
            f"give the output of smm4h predict, or a run folder trained with --test."
        )
    out = frame.with_columns(_binary_column(frame["pred"], where, name, "pred", "Give the output of smm4h predict unchanged."))
    if "prob" in frame.columns:
        values = frame["prob"].to_list()
        probs = [_probability(v) for v in values]
        bad = [i for i, v in enumerate(probs) if v is None]
        if bad:
            raise InputError(
                f"{name}: prob must be a number between 0 and 1 (the probability of label 1); found "
                f"{_bad_values(values, bad, where)}. Give the output of smm4h predict unchanged."
            )
        out = out.with_columns(pl.Series("prob", probs, dtype=pl.Float64))
    return out


# ------------------------------------------------------------------------- writing


def check_writable(
    path: str | os.PathLike[str], force: bool = False, *, folder: bool = False, append: bool = False
) -> None:
    """Fail before any work starts if ``path`` cannot be written; an :class:`InputError` says why.

    By default ``path`` is an output file: its format must be known, it must not be a folder, it
    must not exist unless ``force``, and its folder must be writable (missing folders are created
    on writing, so the nearest existing one must be writable). ``append=True``: a file that is
    added to, such as a call cache; it may exist, and must then be writable itself.
    ``folder=True``: ``path`` is a folder the command writes into (a run or study folder, a cache
    folder); it must not be a file, and it (or its nearest existing parent) must be writable.
    Replacing what is in it is the caller's decision. Writability is tested by creating and
    removing a temporary file, so read-only file systems, permissions and ACLs all count.
    """
    if str(path) == STDIO:
        return
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            raise InputError(f"{p} is a file; give a folder (a new one is created).")
        _check_folder_writable(p, p)
        return
    if not append:  # an appended file (a cache) is the toolkit's own, not a data file of a known format
        format_of(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder; give a file name such as {p / 'out.jsonl'}.")
    if p.exists() and append:
        if not os.access(p, os.W_OK):
            raise InputError(f"{p} cannot be written (permission denied). Fix its permissions or choose another file.")
    elif p.exists() and not force:
        raise InputError(f"{p} exists. Pass --force to replace it, or choose another --out.")
    _check_folder_writable(p.parent, p)


def _check_folder_writable(folder: Path, target: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{target} cannot be written: {existing} is a file, not a folder. Choose another location.")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".smm4h-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(
            f"{target} cannot be written: {existing} is not writable ({_reason(exc)}). "
            f"Choose another location, or fix the folder's permissions."
        ) from None


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)  # also through links and different spellings
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None] | Iterable[str | os.PathLike[str] | None],
    inputs: Mapping[str, str | os.PathLike[str] | None] | Iterable[str | os.PathLike[str] | None],
) -> None:
    """Refuse, before any work, an output path that is one of the inputs or another output.

    ``outputs`` maps the option (or the name) of each output to its path (``{"--out": out,
    "--cache": cache}``), or is a plain list of paths; ``inputs`` likewise (``{"--train": train}``
    or a list). ``None`` and ``-`` (stdin/stdout) are ignored. Paths are compared resolved, and
    with ``os.path.samefile`` where both exist, so ``./a.jsonl``, ``a.jsonl`` and a link to it
    are the same file. Raises :class:`InputError` naming both, so a command never writes (or
    appends) over its own input.
    """

    def named(paths) -> list[tuple[str | None, str | os.PathLike[str]]]:
        pairs = list(paths.items()) if isinstance(paths, Mapping) else [(None, p) for p in paths]
        return [(flag, p) for flag, p in pairs if p is not None and str(p) != STDIO]

    def shown(flag: str | None, path: str | os.PathLike[str]) -> str:
        return f"{flag} {path}" if flag else str(path)

    outs, sources = named(outputs), named(inputs)
    for n, (flag, out) in enumerate(outs):
        for source_flag, source in sources:
            if _same_file(out, source):
                raise InputError(
                    f"{shown(flag, out)} is also an input file ({shown(source_flag, source)}); writing there would "
                    f"destroy the input. Write the output to another file."
                )
        for other_flag, other in outs[:n]:
            if _same_file(out, other):
                raise InputError(
                    f"{shown(other_flag, other)} and {shown(flag, out)} are the same file; give each output its own path."
                )


def write_records(frame: pl.DataFrame, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write ``frame`` by the extension of ``path`` (``-``: JSON lines on stdout), atomically."""
    if str(path) == STDIO:
        data = frame.write_ndjson()
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            sys.stdout.write(data)
        else:  # UTF-8 whatever the locale, and no newline translation
            sys.stdout.flush()
            buffer.write(data.encode("utf-8"))
            buffer.flush()
        sys.stdout.flush()
        return
    check_writable(path, force)
    fmt = format_of(path)
    if fmt == "tsv":
        bad = frame.select(pl.col(pl.String).str.contains(r"[\t\n\r]").any()).row(0)
        if any(bad):
            raise InputError(
                f"{path}: some texts contain tabs or line breaks, which TSV cannot hold. "
                f"Write .jsonl, .parquet or .csv instead."
            )

    def dump(tmp: Path) -> None:
        if fmt == "jsonl":
            frame.write_ndjson(tmp)
        elif fmt == "parquet":
            frame.write_parquet(tmp)
        elif fmt == "csv":
            frame.write_csv(tmp)
        else:
            frame.write_csv(tmp, separator="\t", quote_style="never")

    atomic_write(path, dump)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | os.PathLike[str], dump) -> None:
    """Call ``dump(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
    try:
        dump(Path(tmp))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write a small text file (JSON sidecars, tables, reports)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike[str], value: object) -> None:
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def short_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Names for files in tables and plots: their stems, with the folder added where two clash."""
    stems = [stem_of(p) for p in paths]
    out = []
    for p, s in zip(paths, stems):
        if stems.count(s) > 1 and str(p) != STDIO:
            out.append(f"{Path(p).parent.name}/{s}")
        else:
            out.append(s)
    return out
