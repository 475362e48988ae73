"""Property tests of the data contract (issue 11): what is written reads back the same, in every
format and through ``-``; and no bytes make a reader fail with anything but an InputError.

Bounded by the ``ci`` Hypothesis profile of conftest.py (a few seconds); no model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import io
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records, write_records
from smm4h_cli.io.stream import iter_records, write_record_chunks

#: Characters that have broken readers and writers before, mixed into arbitrary code points.
AWKWARD = list("\u2028\u2029\u0085\x0b\x0c\x1c\x1d\x1e\n\r\t,;\"'\\ |[]{}") + ["\r\n", "😀", "👩‍⚕️", "\ufeff", "é", "\u0301"]
pieces = st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(AWKWARD))
strings = st.lists(pieces, min_size=1, max_size=30).map("".join).filter(lambda s: s.strip() != "")
#: TSV cannot hold tabs or line breaks (the writer refuses them), so its texts are drawn without.
tsv_strings = strings.map(lambda s: s.replace("\t", "·").replace("\n", "¶").replace("\r", "¤")).filter(lambda s: s.strip() != "")


@st.composite
def records(draw, tsv: bool = False) -> pl.DataFrame:
    strings_ = tsv_strings if tsv else strings
    n = draw(st.integers(min_value=1, max_value=6))
    ids = draw(st.lists(strings_, min_size=n, max_size=n, unique=True))
    texts = draw(st.lists(strings_, min_size=n, max_size=n))
    columns = [pl.Series("id", ids, dtype=pl.String), pl.Series("text", texts, dtype=pl.String)]
    if draw(st.booleans()):
        columns.append(pl.Series("label", draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)), dtype=pl.Int64))
    return pl.DataFrame(columns)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv", ".tsv"])
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_write_then_read_gives_the_same_records(suffix, data):
    frame = data.draw(records(tsv=suffix == ".tsv"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"posts{suffix}"
        write_records(frame, path)
        back = read_records(path)
    assert back.to_dicts() == frame.to_dicts()
    assert back.schema == frame.schema


@given(frame=records())
def test_stdout_then_stdin_gives_the_same_records(frame):
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")  # a locale that cannot print the text
    with contextlib.redirect_stdout(out):
        write_records(frame, "-")
    data = out.buffer.getvalue()
    assert data.endswith(b"\n") and data.count(b"\n") == frame.height
    back = read_records("-", stdin=io.BytesIO(data))
    assert back.to_dicts() == frame.to_dicts()


def _valid_bytes(suffix: str) -> bytes:
    frame = pl.DataFrame({"id": ["a", "b"], "text": ['say "hi", ok', "two\nlines"], "label": [1, 0]})
    if suffix == ".tsv":
        frame = frame.with_columns(pl.Series("text", ["plain", 'a "quote']))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"v{suffix}"
        write_records(frame, path)
        return path.read_bytes()


@st.composite
def damaged(draw, suffix: str) -> bytes:
    """Arbitrary bytes, or a valid file of ``suffix`` cut, spliced and overwritten at random."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(_VALID[suffix])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        what = draw(st.sampled_from(["cut", "insert", "overwrite"]))
        chunk = draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from([b'"', b",", b"\t", b"\n", b"\r", b"{", b"}", b"\\u", b"\xe2\x80\xa8", b"\xff", b"true", b"\x00"])))
        if what == "cut":
            del data[at:]
        elif what == "insert":
            data[at:at] = chunk
        else:
            data[at : at + len(chunk)] = chunk
    return bytes(data)


_VALID = {s: _valid_bytes(s) for s in (".jsonl", ".parquet", ".csv", ".tsv")}


def _read_or_refuse(read) -> None:
    try:
        frame = read()
    except InputError as exc:
        assert str(exc).strip(), "an InputError needs a message"
        return
    # What a reader accepts is a set of records by the contract.
    assert frame.columns[:2] == ["id", "text"] and frame.height > 0
    assert frame["id"].n_unique() == frame.height
    assert all(isinstance(t, str) and t.strip() for t in frame["text"].to_list())
    if "label" in frame.columns:
        assert set(frame["label"].to_list()) <= {0, 1}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv", ".tsv"])
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_bytes_give_records_or_an_input_error(suffix, data):
    raw = data.draw(damaged(suffix))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"f{suffix}"
        path.write_bytes(raw)
        _read_or_refuse(lambda: read_records(path))
        _read_or_refuse(lambda: read_records(path, require_label=True, predictions=True))
    if suffix == ".jsonl":
        _read_or_refuse(lambda: read_records("-", stdin=io.BytesIO(raw)))


def test_the_ci_profile_is_bounded():
    assert settings.default.max_examples <= 100 or "thorough" in sys.argv


# ------------------------------------------------------- a chunked read agrees with a whole read

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), tsv_strings),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abc"), inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def jsonl_with_a_passed_column(draw) -> bytes:
    """Posts with a pass-through column of any JSON values (mixed types, nested objects), blank lines between."""
    n = draw(st.integers(min_value=1, max_value=6))
    lines = []
    for i in range(n):
        row = {"id": f"p{i}", "text": f"post {i}"}
        if draw(st.booleans()):
            row["extra"] = draw(json_values)
        lines.append(json.dumps(row) + "\n" + draw(st.sampled_from(["", "\n", " \n"])))
    return "".join(lines).encode("utf-8")


@st.composite
def with_blank_lines(draw, suffix: str) -> bytes:
    """A valid file of ``suffix`` with blank lines before, between (where a record starts) and after."""
    frame = draw(records(tsv=suffix == ".tsv"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"v{suffix}"
        write_records(frame, path)
        data = path.read_bytes()
    blank = lambda: draw(st.sampled_from([b"", b"\n", b"\n\n", b" \r\n"]))  # noqa: E731
    return blank() + data + blank()


def _outcome(read):
    try:
        return read()
    except InputError as exc:
        return exc


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv", ".tsv"])
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_chunked_read_and_write_agrees_with_a_whole_read_or_both_refuse(suffix, data):
    strategies = [damaged(suffix)] + ([] if suffix == ".parquet" else [with_blank_lines(suffix)])
    if suffix == ".jsonl":
        strategies.append(jsonl_with_a_passed_column())
    raw = data.draw(st.one_of(strategies))
    k = data.draw(st.integers(min_value=1, max_value=4))
    with tempfile.TemporaryDirectory() as folder:
        path, out, one = Path(folder) / f"f{suffix}", Path(folder) / "out.parquet", Path(folder) / "one.parquet"
        path.write_bytes(raw)
        whole = _outcome(lambda: (write_records(read_records(path), one), read_records(one))[1])
        chunks = _outcome(lambda: [c.height for c in iter_records(path, chunk_size=k)])
        chunked = _outcome(lambda: (write_record_chunks(iter_records(path, chunk_size=k), out), read_records(out))[1])
    if isinstance(whole, InputError):
        assert isinstance(chunked, InputError), f"whole refused ({whole}), chunked gave {chunked}"
    elif isinstance(chunked, InputError):  # a chunked read may refuse what it cannot see ahead, saying so
        assert "--chunk-size" in str(chunked), str(chunked)
    else:
        assert 0 not in chunks  # no empty chunk is passed on
        assert chunked.schema == whole.schema
        assert chunked.to_dicts() == whole.to_dicts()
