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
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Sequence

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
    stdin: IO[bytes] | None = None,
) -> pl.DataFrame:
    """Read one file of posts into a frame with ``id``, ``text`` and (if present) ``label`` first.

    ``require_label`` makes a missing label column an error (training, evaluation). Ids are
    generated as ``<file stem>-<row number>`` when the file has none, so they are stable.
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
    return _to_records(frame, where, name, stem_of(path), columns, require_label)


def _read_bytes(path: str | os.PathLike[str], stdin: IO[bytes] | None) -> bytes:
    if str(path) == STDIO:
        stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
        if stream is None:
            return sys.stdin.read().encode("utf-8")
        return stream.read()
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file. Check the path (relative paths start from {Path.cwd()}).")
    if p.is_dir():
        raise InputError(f"{p} is a folder; expected a file of posts (.jsonl, .parquet, .csv or .tsv).")
    return p.read_bytes()


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
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
        if self.lines is not None:
            return f"line {self.lines[row]}"
        return f"{self.kind} {row + self.offset}"

    def many(self, rows: Iterable[int]) -> str:
        rows = list(rows)
        shown = ", ".join(self(r).split(" ")[1] for r in rows[:_MAX_LISTED])
        more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
        unit = self(rows[0]).split(" ")[0] + ("s" if len(rows) > 1 else "")
        return f"{unit} {shown}{more}"


def _parse_jsonl(text: str, name: str) -> tuple[pl.DataFrame, _Where]:
    rows: list[dict] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{name}, line {number}: not valid JSON ({exc.msg}, column {exc.colno}). "
                f"Each line must be one JSON object such as {{\"text\": \"...\", \"label\": 1}}."
            ) from None
        if not isinstance(value, dict):
            raise InputError(
                f"{name}, line {number}: expected a JSON object such as {{\"text\": \"...\"}}, "
                f"found {type(value).__name__}."
            )
        rows.append(value)
        lines.append(number)
    # Columns are built one by one so that a mixed column (1 here, "yes" there) reaches the
    # label check as values rather than failing inside polars' type inference.
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    series = []
    for col in names:
        values = [row.get(col) for row in rows]
        try:
            series.append(pl.Series(col, values))
        except (TypeError, pl.exceptions.PolarsError):
            series.append(pl.Series(col, values, dtype=pl.Object))
    return pl.DataFrame(series), _Where("line", lines)


def _parse_delimited(text: str, name: str, separator: str) -> tuple[pl.DataFrame, _Where]:
    kind = "CSV" if separator == "," else "TSV"

    def read(quote: str | None) -> pl.DataFrame:
        return pl.read_csv(
            io.StringIO(text),
            separator=separator,
            infer_schema=False,  # every column as text: ids such as 00123 keep their zeros
            quote_char=quote,
        )

    def ragged(frame: pl.DataFrame) -> bool:  # short rows come back with empty cells
        return frame.height > 0 and frame.null_count().sum_horizontal().item() > 0

    # The SMM4H TSV layout never quotes (tweets hold stray double quotes), so a TSV is read
    # without quoting first. A TSV that only parses cleanly with quoting (a field with a line
    # break, as spreadsheets export them) is read with it; otherwise the first reading stands,
    # so that the checks downstream name the offending line.
    try:
        frame = read('"' if separator == "," else None)
    except pl.exceptions.PolarsError as exc:
        frame, error = None, str(exc).strip().splitlines()[0]
    if separator == "\t" and (frame is None or ragged(frame)):
        try:
            quoted = read('"')
            if not ragged(quoted):
                frame = quoted
        except pl.exceptions.PolarsError:
            pass
    if frame is None:
        raise InputError(f"{name}: could not be read as {kind} ({error}).")
    return frame, _Where("line", offset=2)


def _parse_parquet(raw: bytes, name: str) -> tuple[pl.DataFrame, _Where]:
    try:
        frame = pl.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # polars raises several types for a corrupt file
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
) -> pl.DataFrame:
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
    ids = _id_column(frame[id_col] if id_col else None, frame.height, stem, where, name)
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


def _id_column(col: pl.Series | None, height: int, stem: str, where: _Where, name: str) -> pl.Series:
    if col is None:
        return pl.Series("id", [f"{stem}-{i + 1}" for i in range(height)], dtype=pl.String)
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


def _label_value(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and v in (0, 1):
        return v
    if isinstance(v, float) and v in (0.0, 1.0):
        return int(v)
    if isinstance(v, str) and v.strip() in ("0", "1"):
        return int(v.strip())
    return None


def _label_column(col: pl.Series, where: _Where, name: str) -> pl.Series:
    values = col.to_list()
    labels = [_label_value(v) for v in values]
    bad = [i for i, v in enumerate(labels) if v is None]
    if bad:
        shown = ", ".join(f"{values[i]!r} on {where(i)}" for i in bad[:_MAX_LISTED])
        more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise InputError(
            f"{name}: labels must be 0 or 1; found {shown}{more}. Recode the label column "
            f"(1 = positive class), or point --label-col at the right column."
        )
    return pl.Series("label", labels, dtype=pl.Int64)


# --------------------------------------------------------------------------- writing


def check_writable(path: str | os.PathLike[str], force: bool = False) -> None:
    """Fail before any work starts if ``path`` cannot be written (exists without ``force``)."""
    if str(path) == STDIO:
        return
    format_of(path)
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder; give a file name such as {p / 'out.jsonl'}.")
    if p.exists() and not force:
        raise InputError(f"{p} exists. Pass --force to replace it, or choose another --out.")


def write_records(frame: pl.DataFrame, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write ``frame`` by the extension of ``path`` (``-``: JSON lines on stdout), atomically."""
    if str(path) == STDIO:
        sys.stdout.write(frame.write_ndjson())
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
