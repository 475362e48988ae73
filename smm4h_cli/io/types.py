"""One column type for JSON values, exactly: the type a whole file's column gets, and how two chunks' types join.

polars infers a nested column from its first value (``{"model": "x"}`` then ``{"model": "x",
"temperature": 0.7}`` loses ``temperature``) and coerces mixed values (``true`` and ``1`` become
``1``; ``[1]`` and ``[1.5]`` become ``[1]``). Here the type is built from every value:

* ``null`` fits any type; integers and decimals join as decimals (``Float64``, as polars reads
  ``1`` and ``1.5`` together); objects join as the union of their keys (a key missing from one
  is null there); lists join by their items;
* anything else (text and numbers, ``true`` and ``1``, integers beyond 64 bits) has no common
  type: ``None``, which the readers turn into a refusal naming the column and the lines.

:func:`joined` is the same rule on two polars types: how a streamed chunk's column joins the
columns of the chunks before it (:mod:`smm4h_cli.io.stream`).
"""

from __future__ import annotations

import polars as pl

_INT64 = (-(2**63), 2**63 - 1)
_NUMBERS = (pl.Int64, pl.Float64)


def value_type(value: object) -> pl.DataType | None:
    """The polars type of one JSON value; ``None`` where it has none (an integer beyond 64 bits)."""
    if value is None:
        return pl.Null()
    if isinstance(value, bool):
        return pl.Boolean()
    if isinstance(value, int):
        return pl.Int64() if _INT64[0] <= value <= _INT64[1] else None
    if isinstance(value, float):
        return pl.Float64()
    if isinstance(value, str):
        return pl.String()
    if isinstance(value, list):
        inner = column_type(value)
        return None if inner is None else pl.List(inner)
    if isinstance(value, dict):
        fields: dict[str, pl.DataType] = {}
        for key, item in value.items():
            t = value_type(item)
            if t is None:
                return None
            fields[str(key)] = t
        return pl.Struct(fields)
    return None


def joined(a: pl.DataType | None, b: pl.DataType | None) -> pl.DataType | None:
    """The type that holds values of both ``a`` and ``b`` without changing any; ``None`` if there is none."""
    if a is None or b is None:
        return None
    if a == pl.Null:
        return b
    if b == pl.Null or a == b and not isinstance(a, (pl.List, pl.Struct)):
        return a
    if a in _NUMBERS and b in _NUMBERS:
        return pl.Float64()
    if isinstance(a, pl.List) and isinstance(b, pl.List):
        inner = joined(a.inner, b.inner)
        return None if inner is None else pl.List(inner)
    if isinstance(a, pl.Struct) and isinstance(b, pl.Struct):
        fields = {f.name: f.dtype for f in a.fields}
        for f in b.fields:
            t = joined(fields.get(f.name, pl.Null()), f.dtype)
            if t is None:
                return None
            fields[f.name] = t
        return pl.Struct(fields)
    return None


def column_type(values: list) -> pl.DataType | None:
    """The type of a column of JSON values (:func:`joined` over all of them), or ``None``."""
    return conflict(values)[0]


def conflict(values: list) -> tuple[pl.DataType | None, int]:
    """``(type, -1)``, or ``(None, i)``: value ``i`` is the first that no type shared with those before holds."""
    t: pl.DataType | None = pl.Null()
    for i, v in enumerate(values):
        t = joined(t, value_type(v))
        if t is None:
            return None, i
    return t, -1


def conformed(values: list, dtype: pl.DataType) -> pl.Series:
    """``values`` as a series of ``dtype`` (from :func:`column_type`): whole numbers where decimals are
    expected made decimals first, as polars cannot build a nested series that meets 0 before 0.0."""
    return pl.Series(values=[_conform(v, dtype) for v in values], dtype=dtype)


def _conform(value: object, dtype: pl.DataType) -> object:
    if value is None:
        return None
    if dtype == pl.Float64 and isinstance(value, int):
        return float(value)
    if isinstance(dtype, pl.List):
        return [_conform(v, dtype.inner) for v in value]  # type: ignore[union-attr]
    if isinstance(dtype, pl.Struct):
        return {f.name: _conform(value.get(f.name), f.dtype) for f in dtype.fields}  # type: ignore[union-attr]
    return value


def nested(dtype: pl.DataType) -> bool:
    """Whether a column of ``dtype`` holds lists or objects (which CSV and TSV cannot)."""
    return isinstance(dtype, (pl.List, pl.Array, pl.Struct)) or dtype == pl.Object


def empty_object(dtype: pl.DataType) -> bool:
    """Whether ``dtype`` has an object without keys in it (``{}``), which Parquet cannot hold."""
    if isinstance(dtype, pl.Struct):
        return not dtype.fields or any(empty_object(f.dtype) for f in dtype.fields)
    if isinstance(dtype, (pl.List, pl.Array)):
        return empty_object(dtype.inner)
    return False


def kind(value: object) -> str:
    """A JSON value's kind, for messages."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number" if _INT64[0] <= value <= _INT64[1] else "a whole number beyond 64 bits"
    return {float: "a decimal number", str: "text", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def type_name(dtype: pl.DataType) -> str:
    """A polars type in the words of :func:`kind`."""
    if dtype == pl.Boolean:
        return "true/false"
    if dtype == pl.Int64:
        return "whole numbers"
    if dtype == pl.Float64:
        return "decimal numbers"
    if dtype == pl.String:
        return "text"
    if isinstance(dtype, pl.Struct):
        return "objects with keys " + ", ".join(f.name for f in dtype.fields)
    if isinstance(dtype, (pl.List, pl.Array)):
        return f"lists of {type_name(dtype.inner)}"
    return str(dtype)
