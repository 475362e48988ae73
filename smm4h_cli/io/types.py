"""One column type for JSON values, exactly: the type a whole file's column gets, and how two chunks' types join.

polars infers a nested column from its first value (``{"model": "x"}`` then ``{"model": "x",
"temperature": 0.7}`` loses ``temperature``) and coerces mixed values (``true`` and ``1`` become
``1``; ``[1]`` and ``[1.5]`` become ``[1]``). Here the type is built from every value:

* ``null`` fits any type; integers and decimals join as decimals (``Float64``, as polars reads
  ``1`` and ``1.5`` together); objects join as the union of their keys (a key missing from one
  is null there); lists join by their items;
* anything else (text and numbers, ``true`` and ``1``, integers beyond 64 bits) has no common
  type: ``None``. The readers keep such a column as the values themselves (``pl.Object``), and
  the writers refuse it, naming the column and the post where it clashes (:func:`mixed`).

Types are inferred as light, hashable shapes (``"int"``, ``("list", inner)``, ``("struct",
((key, shape), ...))``), joins are memoised (a column's values mostly share one shape), and the
shape becomes a polars type once. :func:`joined` is the same rule on two polars types: how a
streamed chunk's column joins the columns of the chunks before it (:mod:`smm4h_cli.io.sink`).
"""

from __future__ import annotations

import functools
from typing import Callable

import polars as pl

_INT64 = (-(2**63), 2**63 - 1)
_SCALARS = {type(None): "null", bool: "bool", float: "float", str: "str"}
_TO_POLARS = {"null": pl.Null(), "bool": pl.Boolean(), "int": pl.Int64(), "float": pl.Float64(), "str": pl.String()}
_WORDS = {"null": "null", "bool": "true/false", "int": "a whole number", "float": "a decimal number", "str": "text"}
Shape = object  # str | tuple | None


def shape(value: object) -> Shape:
    """The shape of one JSON value; ``None`` where it has none (an integer beyond 64 bits, a list of mixed items)."""
    t = type(value)
    s = _SCALARS.get(t)
    if s is not None:
        return s
    if t is int:
        return "int" if _INT64[0] <= value <= _INT64[1] else None  # type: ignore[operator]
    if t is dict:
        fields = []
        for key, item in value.items():  # type: ignore[attr-defined]
            s = shape(item)
            if s is None:
                return None
            fields.append((key if type(key) is str else str(key), s))
        return ("struct", tuple(fields))
    if t is list:
        inner = _column_shape(value)[0]  # type: ignore[arg-type]
        return None if inner is None else ("list", inner)
    return _shape_of_subclass(value)


def _shape_of_subclass(value: object) -> Shape:
    """Subclasses of the JSON types (not made by ``json.loads``), by ``isinstance``."""
    for base in (bool, int, float, str, dict, list):
        if isinstance(value, base):
            return shape(base(value) if base is not dict else {str(k): v for k, v in value.items()})  # type: ignore[call-overload, attr-defined]
    return None


@functools.lru_cache(maxsize=4096)
def join(a: Shape, b: Shape) -> Shape:
    """The shape that holds values of both ``a`` and ``b`` without changing any; ``None`` if there is none."""
    if a is None or b is None:
        return None
    if a == "null" or a == b:
        return b
    if b == "null":
        return a
    if a in ("int", "float") and b in ("int", "float"):
        return "float"
    if type(a) is tuple and type(b) is tuple and a[0] == b[0]:
        if a[0] == "list":
            inner = join(a[1], b[1])
            return None if inner is None else ("list", inner)
        if a[0] == "struct":
            fields = dict(a[1])
            for key, t in b[1]:
                j = join(fields.get(key, "null"), t)
                if j is None:
                    return None
                fields[key] = j
            return ("struct", tuple(fields.items()))
    return None


def _column_shape(values: list) -> tuple[Shape, int]:
    """``(shape, -1)`` of all ``values``, or ``(None, i)``: value ``i`` is the first no shape shared with those before holds."""
    t: Shape = "null"
    for i, v in enumerate(values):
        s = shape(v)
        if s != t:
            t = join(t, s)
            if t is None:
                return None, i
    return t, -1


def to_polars(s: Shape) -> pl.DataType:
    if type(s) is str:
        return _TO_POLARS[s]
    if s[0] == "list":  # type: ignore[index]
        return pl.List(to_polars(s[1]))  # type: ignore[index]
    if s[0] == "struct":  # type: ignore[index]
        return pl.Struct({key: to_polars(t) for key, t in s[1]})  # type: ignore[index]
    return s[1]  # type: ignore[index]  ("pl", a polars type of no JSON shape)


def of_polars(dtype: pl.DataType) -> Shape:
    for name, t in _TO_POLARS.items():
        if dtype == t:
            return name
    if isinstance(dtype, pl.List):
        return ("list", of_polars(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return ("struct", tuple((f.name, of_polars(f.dtype)) for f in dtype.fields))
    return ("pl", dtype)


def value_type(value: object) -> pl.DataType | None:
    """The polars type of one JSON value; ``None`` where it has none (an integer beyond 64 bits)."""
    s = shape(value)
    return None if s is None else to_polars(s)


def joined(a: pl.DataType | None, b: pl.DataType | None) -> pl.DataType | None:
    """The type that holds values of both ``a`` and ``b`` without changing any; ``None`` if there is none."""
    if a is None or b is None:
        return None
    j = join(of_polars(a), of_polars(b))
    return None if j is None else to_polars(j)


def column_type(values: list) -> pl.DataType | None:
    """The type of a column of JSON values (:func:`joined` over all of them), or ``None``."""
    return conflict(values)[0]


def conflict(values: list) -> tuple[pl.DataType | None, int]:
    """``(type, -1)``, or ``(None, i)``: value ``i`` is the first that no type shared with those before holds."""
    s, bad = _column_shape(values)
    return (None, bad) if s is None else (to_polars(s), -1)


def conformed(values: list, dtype: pl.DataType) -> pl.Series:
    """``values`` as a series of ``dtype`` (from :func:`column_type`). Given the whole type, polars fills
    an object's missing keys with null and makes whole numbers decimals where decimals are expected,
    except inside a list that meets 0 before 0.0: only then is every value rebuilt first."""
    try:
        return pl.Series(values=values, dtype=dtype, strict=True)
    except (TypeError, pl.exceptions.PolarsError):
        return pl.Series(values=[_conform(v, dtype) for v in values], dtype=dtype)


def _conform(value: object, dtype: pl.DataType) -> object:
    if value is None:
        return None
    if dtype == pl.Float64 and isinstance(value, int):
        return float(value)
    if isinstance(dtype, pl.List):
        return [_conform(v, dtype.inner) for v in value]  # type: ignore[union-attr, attr-defined]
    if isinstance(dtype, pl.Struct):
        return {f.name: _conform(value.get(f.name), f.dtype) for f in dtype.fields}  # type: ignore[union-attr, attr-defined]
    return value


def mixed(values: list, where: Callable[[int], str], before: pl.DataType | None = None) -> str | None:
    """Why no one type holds ``values`` (after values of type ``before``), in words naming the posts by
    ``where`` (and the field of an object that clashes); ``None`` if one does."""
    t: Shape = "null" if before is None else of_polars(before)
    for i, v in enumerate(values):
        s = shape(v)
        if s != t and join(t, s) is None:
            return _clash(values, i, t, s, where, before)
        t = t if s == t else join(t, s)
    return None


def _clash(values: list, i: int, t: Shape, s: Shape, where: Callable[[int], str], before: pl.DataType | None) -> str:
    if s is None:
        return f"{_unholdable(values[i])} on {where(i)}, which no column type holds"
    path: list[str] = []
    while type(t) is tuple and type(s) is tuple and t[0] == s[0] == "struct":  # down to the field that clashes
        fields = dict(t[1])  # type: ignore[index]
        key, sub = next((k, u) for k, u in s[1] if join(fields.get(k, "null"), u) is None)  # type: ignore[index]
        path.append(key)
        t, s = fields[key], sub
    field = f"field '{'.'.join(path)}' is " if path else ""
    if before is not None:
        return f"{field}{_words(t)} in the posts before and {_words(s)} on {where(i)}"
    j = next(j for j in range(i) if _at(values[j], path) is not None)
    return f"{field}{_words(shape(_at(values[j], path)))} on {where(j)} and {_words(s)} on {where(i)}"


def _at(value: object, path: list[str]) -> object:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _unholdable(value: object) -> str:
    """What in ``value`` has no type: a whole number beyond 64 bits, or a list whose items mix types."""
    if isinstance(value, dict):
        for key, item in value.items():
            if shape(item) is None:
                return f"field '{key}' holding {_unholdable(item)}"
    if isinstance(value, list):
        inner, bad = _column_shape(value)
        first = next(shape(v) for v in value if v is not None)
        item = shape(value[bad])
        if item is None:
            return f"a list holding {_unholdable(value[bad])}"
        return f"a list mixing {_words(first)} and {_words(item)}"
    return kind(value)


def _words(s: Shape) -> str:
    if type(s) is str:
        return _WORDS[s]
    if s[0] == "list":  # type: ignore[index]
        return "a list"
    if s[0] == "struct":  # type: ignore[index]
        return "an object"
    return str(s[1])  # type: ignore[index]


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
