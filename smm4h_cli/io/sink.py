"""Writing records a chunk at a time (:func:`write_record_chunks`), for :mod:`smm4h_cli.io.stream`.

Chunks are written as they come to a temporary file beside the output, renamed into place after
the last one; an error on the way removes it. A column's type may widen from chunk to chunk only
where no value changes (:func:`smm4h_cli.io.types.joined`: from all-null, whole numbers to
decimals, objects gaining keys); Parquet parts (Arrow IPC files) are cast to the joined types when they are joined,
so the file has the types of a whole-file read. JSON lines, CSV and TSV are appended a chunk at a
time with that chunk's types (no read-ahead): the values of a whole-file read, but a chunk of whole
numbers writes ``1`` where a whole-file read of the column writes ``1.0``, and an object's key that
only later chunks have is left out rather than written ``null``. Anything else (a column whose values have no one type,
within a chunk or across chunks) is refused, in every format, naming the column and the first post
that clashes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io.parse import STDIO, format_of
from smm4h_cli.io.types import joined, mixed, type_name
from smm4h_cli.io.write import atomic_write, check_frame, check_one_type, check_writable, to_stdout


def write_record_chunks(chunks: Iterable[pl.DataFrame], path: str | os.PathLike[str], *, force: bool = False) -> int:
    """Write ``chunks`` (frames of the same columns) to ``path`` as they come; the number of records.

    ``-`` streams JSON lines to stdout. A file is written to a temporary file beside ``path``
    and renamed into place after the last chunk; any error on the way (from the chunks
    themselves, such as a bad line far down the input) removes it. One chunk gives the bytes
    ``write_records`` gives; JSON lines, CSV and TSV are appended chunk by chunk; Parquet is
    written a part file (Arrow IPC) per chunk and joined at the end by polars' streaming engine.
    """
    if str(path) == STDIO:
        return _to_stdout(chunks)
    check_writable(path, force)
    fmt = format_of(path)
    written = 0

    def dump(tmp: Path) -> None:
        nonlocal written
        if fmt == "parquet":
            written = _parquet_parts(chunks, tmp, path)
            return
        schema: dict[str, pl.DataType] | None = None
        with tmp.open("wb") as out:
            for frame in chunks:
                if schema is not None and not frame.height:
                    continue
                if schema is None:
                    schema = dict(frame.schema)
                elif fmt != "jsonl" and frame.columns != list(schema):
                    raise _new_columns(path, fmt, list(schema), frame.columns, written)
                else:
                    schema = _joined_schema(schema, frame, path, written)
                check_frame(frame, path)
                out.write(_encoded(frame, fmt, header=written == 0))
                written += frame.height

    atomic_write(path, dump)
    return written


def _encoded(frame: pl.DataFrame, fmt: str, *, header: bool) -> bytes:
    if fmt == "jsonl":
        return frame.write_ndjson().encode("utf-8")
    if fmt == "csv":
        return frame.write_csv(include_header=header).encode("utf-8")
    return frame.write_csv(separator="\t", quote_style="never", include_header=header).encode("utf-8")


def _new_columns(path, fmt: str, before: list[str], now: list[str], written: int) -> InputError:
    added = [c for c in now if c not in before]
    what = f"column '{added[0]}' first appears" if added else "the columns change"
    return InputError(
        f"{path}: {what} after the first {written:,} posts, but a {fmt.upper()} file has one set of columns, "
        f"written with the first chunk. Write JSON lines (.jsonl), or raise --chunk-size above the number of posts."
    )


def _joined_schema(schema: dict[str, pl.DataType], frame: pl.DataFrame, path, written: int) -> dict[str, pl.DataType]:
    """``schema`` widened by ``frame``'s column types, or an InputError naming the column, the first post
    of ``frame`` whose value the column's type so far cannot hold, and the field of an object that clashes."""
    out = dict(schema)
    for c, t in frame.schema.items():
        before = out.get(c, pl.Null())
        now = joined(before, t)
        if now is None:
            ids = frame["id"].to_list() if "id" in frame.columns else None
            at = (lambda i: f"post '{ids[i]}' (post {written + i + 1:,})") if ids else (lambda i: f"post {written + i + 1:,}")
            what = mixed(frame[c].to_list(), at, before) or f"{type_name(before)} before and {type_name(t)} after"
            raise InputError(
                f"{path}: column '{c}' mixes types ({what}), and a "
                f"column is written with one type. Make its values one type in the input (every value as text, \"123\"; "
                f"numbers as numbers; 1/0 for true/false), or drop the column from the input."
            )
        out[c] = now
    return out


def _to_stdout(chunks: Iterable[pl.DataFrame]) -> int:
    written = 0
    for frame in chunks:
        if frame.height:
            check_one_type(frame, STDIO)
            to_stdout(frame)
            written += frame.height
    return written


def _parquet_parts(chunks: Iterable[pl.DataFrame], tmp: Path, path) -> int:
    parts_dir = Path(tempfile.mkdtemp(dir=tmp.parent, prefix=f".{Path(path).name}.parts."))
    try:
        parts: list[Path] = []
        first: pl.DataFrame | None = None
        schema: dict[str, pl.DataType] = {}
        written = 0
        for frame in chunks:
            check_one_type(frame, path)
            if first is None:
                first, schema = frame, dict(frame.schema)
            elif not frame.height:
                continue
            else:
                if frame.columns != first.columns:
                    raise _new_columns(path, "parquet", first.columns, frame.columns, written)
                schema = _joined_schema(schema, frame, path, written)
                if not parts:
                    parts.append(parts_dir / "part-0.arrow")
                    first.write_ipc(parts[0])
                part = parts_dir / f"part-{len(parts)}.arrow"
                frame.write_ipc(part)  # Arrow IPC holds what a part may have before the join ({} objects)
                parts.append(part)
            written += frame.height
        if first is not None:
            check_frame(pl.DataFrame(schema=schema), path)
        if first is not None and not parts:
            first.write_parquet(tmp)  # one chunk: the bytes write_records gives
        elif parts:  # each part cast to the joined types (lazily: by field name for objects)
            pl.concat([pl.scan_ipc(p).cast(schema) for p in parts]).sink_parquet(tmp)
        return written
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
