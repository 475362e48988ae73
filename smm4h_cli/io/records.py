"""Frames to records: the columns of a post, and every check of the data contract.

:func:`read_records` reads a file (or ``-``) through :mod:`smm4h_cli.io.parse` and checks it:
text non-empty, ids unique, labels 0 or 1 (never booleans), predictions 0/1 with a probability
in [0, 1] — each problem an :class:`~smm4h_cli.errors.InputError` naming the file and line.
Other columns pass through: with one type where one holds every value (``1`` and ``1.5`` as
decimals, objects as the union of their keys), else as written (``pl.Object``), which a command
that never writes the column can use and every writer refuses (:func:`smm4h_cli.io.write.check_one_type`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import IO

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io.delimited import _parse_delimited
from smm4h_cli.io.types import conflict, conformed
from smm4h_cli.io.parse import (  # the parsers are this package's own: private to it, shared in it
    _MAX_LISTED,
    ID_COLUMNS,
    LABEL_COLUMNS,
    TEXT_COLUMNS,
    _decode,
    _parse_jsonl,
    _parse_parquet,
    _read_bytes,
    _Where,
    display_name,
    format_of,
    stem_of,
)


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the text, the label and the id (``None``: the usual names)."""

    text: str | None = None
    label: str | None = None
    id: str | None = None



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
    checked_later = ("pred", "prob") if predictions else ()
    records = _to_records(frame, where, name, stem_of(path), columns, require_label, checked_later=checked_later)
    if predictions:
        records = check_predictions(records, name, where)
    return records


def read_predictions(path: str | os.PathLike[str], columns: Columns = Columns()) -> pl.DataFrame:
    """Read a labelled file of predictions (``smm4h predict`` output): ``label``, ``pred`` and maybe ``prob``, checked."""
    return read_records(path, columns, require_label=True, predictions=True)


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
    checked_later: tuple[str, ...] = (),
) -> pl.DataFrame:
    """The validated records of ``frame``; ``first_row``: rows of the file before it (a streamed chunk), for generated ids.
    ``checked_later``: pass-through columns left as read, for a check of their own (``check_predictions``)."""
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
    return pl.DataFrame(out + [s if s.name in checked_later else _passed_through(s, where, name) for s in rest])


def _passed_through(col: pl.Series, where: _Where, name: str) -> pl.Series:
    """A pass-through column as one type that holds every value unchanged (1 and 1.5 as decimals); a
    column whose values no one type holds (1 and "x", true and 1) stays as they are written
    (``pl.Object``), for the commands that never write it: the writers refuse it (``write.check_one_type``)."""
    if col.dtype != pl.Object:
        return col
    values = col.to_list()
    dtype, _ = conflict(values)
    return col if dtype is None else conformed(values, dtype).alias(col.name)


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
