"""Writing: outputs checked before any work, written atomically, never over an input.

Files are written to a temporary file in the same folder and renamed into place, so a failed
command never leaves half a file behind; an existing file is replaced only with ``force``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io.parse import STDIO, _reason, format_of, stem_of
from smm4h_cli.io.types import empty_object, mixed, nested


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


def to_stdout(frame: pl.DataFrame) -> None:
    """``frame`` as JSON lines on stdout: UTF-8 whatever the locale, and no newline translation."""
    data = frame.write_ndjson()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data)
    else:
        sys.stdout.flush()
        buffer.write(data.encode("utf-8"))
        buffer.flush()
    sys.stdout.flush()


def check_frame(frame: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Fail if ``frame`` cannot be written to ``path``'s format: a column of mixed types in any format
    (:func:`check_one_type`), lists or objects in CSV/TSV, tabs or line breaks in TSV, objects without
    keys in Parquet. ``write_records`` and ``write_record_chunks`` call it; a streaming command calls it
    on its first chunk too, before any model work."""
    check_one_type(frame, path)
    if str(path) == STDIO:
        return
    fmt = format_of(path)
    if fmt == "parquet":
        empty = [c for c, t in frame.schema.items() if empty_object(t)]
        if empty:
            raise InputError(
                f"{path}: column '{empty[0]}' holds objects with no keys ({{}}), which Parquet cannot hold. "
                f"Write .jsonl instead, or drop the column."
            )
    if fmt not in ("csv", "tsv"):
        return
    deep = [c for c, t in frame.schema.items() if nested(t)]
    if deep:
        listed = ", ".join(f"'{c}'" for c in deep)
        raise InputError(
            f"{path}: column{'s' if len(deep) > 1 else ''} {listed} hold{'' if len(deep) > 1 else 's'} lists or objects, "
            f"which {fmt.upper()} cannot hold. Write .jsonl or .parquet instead."
        )
    if fmt == "tsv" and frame.height:
        if any(frame.select(pl.col(pl.String).str.contains(r"[\t\n\r]").any()).row(0)):
            raise InputError(
                f"{path}: some texts contain tabs or line breaks, which TSV cannot hold. "
                f"Write .jsonl, .parquet or .csv instead."
            )


def check_one_type(frame: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Fail if a column of ``frame`` holds values of no one type (``123`` and ``"abc"``, ``true`` and ``1``,
    an object field that is a number here and text there): the readers keep such a pass-through column
    as written, for the commands that never write it, and every format is written with one type a column."""
    for c, t in frame.schema.items():
        if t != pl.Object:
            continue
        ids = frame["id"].to_list() if "id" in frame.columns and frame.schema["id"] == pl.String else None
        what = mixed(frame[c].to_list(), (lambda i: f"post '{ids[i]}'") if ids else (lambda i: f"row {i + 1}"))
        raise InputError(
            f"{'<stdout>' if str(path) == STDIO else path}: column '{c}' mixes types ({what or 'values of no one type'}), and a column is written "
            f"with one type. Make its values one type in the input (every value as text, \"123\"; numbers as numbers; "
            f"1/0 for true/false), or drop the column from the input."
        )


def write_records(frame: pl.DataFrame, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write ``frame`` by the extension of ``path`` (``-``: JSON lines on stdout), atomically."""
    check_frame(frame, path)
    if str(path) == STDIO:
        to_stdout(frame)
        return
    check_writable(path, force)
    fmt = format_of(path)

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
