"""A chunked read agrees with a whole-file read, or both refuse: column types across chunks, blank
lines, nested and mixed JSON columns, a TSV's quoting; what CSV cannot hold is refused before any
model work; ``pred`` follows the written ``prob``; majority-vote ties follow the seeds' threshold.
No model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records, write_records
from smm4h_cli.io.stream import iter_records, write_record_chunks
from smm4h_cli.training.metrics import majority_vote
from smm4h_cli.training.predict import with_predictions


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _chunks(path, k: int) -> list[pl.DataFrame]:
    return list(iter_records(path, chunk_size=k))


def _both(path, k: int) -> tuple[str, str]:
    with pytest.raises(InputError) as whole:
        read_records(path)
    with pytest.raises(InputError) as chunked:
        _chunks(path, k)
    return str(whole.value), str(chunked.value)


# ---------------------------------------------------------------- 1. column types across chunks


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_column_that_widens_to_decimals_keeps_every_value(tmp_path, suffix):
    src = _jsonl(tmp_path / "in.jsonl", [{"text": "a", "n": 1}, {"text": "b", "n": 2}, {"text": "c", "n": 2.75}, {"text": "d", "n": None}])
    whole = read_records(src)
    assert whole["n"].to_list() == [1.0, 2.0, 2.75, None]
    out = tmp_path / f"out{suffix}"
    write_record_chunks(iter_records(src, chunk_size=1), out)
    back = read_records(out)
    assert back["n"].to_list() == [1, 2, 2.75, None]  # 2.75 was written as 2 by the old cast
    if suffix == ".parquet":  # the types of a whole-file read
        assert back.schema == whole.schema


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_a_null_first_text_column_joins_later_chunks(tmp_path, suffix):
    src = _jsonl(tmp_path / "in.jsonl", [{"text": "a", "note": None}, {"text": "b", "note": "hi"}, {"text": "c", "note": "yo"}])
    out = tmp_path / f"out{suffix}"
    write_record_chunks(iter_records(src, chunk_size=1), out)
    assert read_records(out)["note"].to_list() == [None, "hi", "yo"]


@pytest.mark.parametrize(
    "values,what",
    [
        ([1, 2, "x"], "a whole number on post 'p0' and text on post 'p2'"),
        ([True, False, 1], "true/false on post 'p0' and a whole number on post 'p2'"),
        (["x", None, 3.5], "text on post 'p0' and a decimal number on post 'p2'"),
        ([{"v": 1}, {"w": "a"}, {"v": "x"}], "field 'v' is a whole number on post 'p0' and text on post 'p2'"),
    ],
)
def test_a_column_of_mixed_types_is_read_as_written_and_refused_where_it_is_written(tmp_path, values, what):
    src = _jsonl(tmp_path / "in.jsonl", [{"id": f"p{i}", "text": t, "extra": v} for i, (t, v) in enumerate(zip("abc", values))])
    whole = read_records(src)  # commands that never write the column (train, ngrams, select's scoring) read it
    assert whole["extra"].dtype == pl.Object and whole["extra"].to_list() == values
    for k in (1, 2, 3):
        assert [c["text"].to_list() for c in _chunks(src, k)] == [list("abc")[i : i + k] for i in range(0, 3, k)]
    for suffix in (".jsonl", ".csv", ".parquet"):
        out = tmp_path / f"out{suffix}"
        with pytest.raises(InputError) as exc:
            write_records(whole, out)
        assert f"column 'extra' mixes types ({what})" in str(exc.value) and "drop the column" in str(exc.value)
        for k in (1, 2, 3):  # a chunk of objects alone is refused for CSV as objects
            with pytest.raises(InputError, match="column 'extra' (mixes types|holds lists or objects)"):
                write_record_chunks(iter_records(src, chunk_size=k), out)
        assert not out.exists()


def test_the_chunk_writer_refuses_a_type_it_cannot_join_naming_the_post_that_clashes(tmp_path):
    a, b = pl.DataFrame({"id": ["1"], "n": [1]}), pl.DataFrame({"id": ["2"], "n": ["x"]})
    for suffix in (".parquet", ".jsonl"):
        with pytest.raises(InputError, match=r"column 'n' mixes types \(a whole number in the posts before and text on post '2' \(post 2\)"):
            write_record_chunks([a, b], tmp_path / f"out{suffix}")
        assert not (tmp_path / f"out{suffix}").exists()
    # The first post of the chunk fits; the third clashes (field 'v'), and is the one named.
    rows = [{"id": "p1", "text": "a", "m": {"v": 1}}, {"id": "p2", "text": "b", "m": {"w": "a"}}, {"id": "p3", "text": "c", "m": {"w": "b"}}, {"id": "p4", "text": "d", "m": {"v": "x"}}]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    for k in (1, 2):
        with pytest.raises(InputError) as exc:
            write_record_chunks(iter_records(src, chunk_size=k), tmp_path / "out.jsonl")
        assert "column 'm' mixes types" in str(exc.value)
        assert "field 'v' is a whole number in the posts before and text on post 'p4' (post 4)" in str(exc.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_commands_read_a_mixed_column_they_never_write_and_predict_refuses_it_before_model_work(cli, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"text": f"post {i}", "label": i % 2, "uid": 123 if i else "abc"} for i in range(6)])
    assert cli("ngrams", str(src)).exit_code == 0
    result = cli("predict", str(tmp_path / "no-run"), str(src), "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "column 'uid' mixes types (text on post 'in-1' and a whole number on post 'in-2')" in " ".join(result.stderr.split())
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------- 2 and 8. blank lines in CSV/TSV


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_blank_lines_anywhere_are_skipped_and_lines_counted(tmp_path, sep, suffix):
    body = "\n \nid{s}text{s}label\n1{s}post 1{s}1\n\n2{s}post 2{s}0\n3{s}post 3{s}1\n4{s}post 4{s}0\n5{s}post 5{s}1\n\n\n".replace("{s}", sep)
    p = tmp_path / f"in{suffix}"
    p.write_text(body, encoding="utf-8")
    whole = read_records(p)
    assert whole["id"].to_list() == ["1", "2", "3", "4", "5"]
    for k in (1, 2, 4, 5, 10):
        chunks = _chunks(p, k)
        assert all(c.height for c in chunks)  # no 0-row chunk reaches predict
        assert pl.concat(chunks).equals(whole)
    bad = p.with_name(f"bad{suffix}")
    bad.write_text(body.replace(f"4{sep}post 4", f"4{sep} "), encoding="utf-8")
    for k in (1, 2, 10):
        for message in _both(bad, k):
            assert "empty or missing text on line 8" in message
    ragged = p.with_name(f"ragged{suffix}")
    ragged.write_text(body.replace(f"3{sep}post 3{sep}1", f"3{sep}post 3"), encoding="utf-8")
    for k in (1, 2, 10):
        for message in _both(ragged, k):
            assert "line 7: 2 fields where the header has 3" in message


def test_a_stray_quote_in_a_csv_field_names_its_line(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text('id,text,label\n0,fine,0\n1,5" screen,1\n', encoding="utf-8")
    for k in (1, 5):
        for message in _both(p, k):
            assert "line 3: a double quote inside a field" in message


# ---------------------------------------------------------------- 4. nested objects: the union of keys


def test_nested_objects_keep_every_key_whole_and_chunked(tmp_path):
    rows = [
        {"id": "s1", "text": "one", "meta": {"model": "x"}, "tags": [1]},
        {"id": "s2", "text": "two", "meta": {"model": "x", "temperature": 0.7}, "tags": [1.5]},
    ]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    whole = read_records(src)
    assert whole["meta"].to_list() == [{"model": "x", "temperature": None}, {"model": "x", "temperature": 0.7}]
    assert whole["tags"].to_list() == [[1.0], [1.5]]  # polars alone read [1.5] as [1]
    for suffix in (".parquet", ".jsonl"):
        out = tmp_path / f"out{suffix}"
        write_record_chunks(iter_records(src, chunk_size=1), out, force=True)
        back = read_records(out)
        assert back["meta"].to_list() == whole["meta"].to_list()
        assert back["tags"].to_list() == whole["tags"].to_list()


# ---------------------------------------------------------------- 5. CSV/TSV cannot hold nested columns


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_nested_columns_to_csv_or_tsv_are_refused(tmp_path, suffix):
    frame = pl.DataFrame({"id": ["1"], "text": ["a"], "meta": [{"model": "x"}]})
    with pytest.raises(InputError, match="'meta' holds lists or objects.*Write .jsonl or .parquet"):
        write_records(frame, tmp_path / f"out{suffix}")
    with pytest.raises(InputError, match="'meta' holds lists or objects"):
        write_record_chunks([frame], tmp_path / f"out{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_predict_refuses_nested_columns_for_csv_before_any_model_work(cli, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"text": "a", "meta": {"model": "x"}}])
    # The run folder does not exist: the refusal comes before the model is even looked for.
    result = cli("predict", str(tmp_path / "no-run"), str(src), "--out", str(tmp_path / "out.csv"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "lists or objects" in " ".join(result.stderr.split())
    assert not (tmp_path / "out.csv").exists()


# ---------------------------------------------------------------- 6. a TSV's quoting is decided once


def test_tsv_quoting_does_not_depend_on_the_chunk_size(tmp_path):
    p = tmp_path / "in.tsv"
    p.write_text('id\ttext\n1\t"a"\n2\t"multi\nline"\n', encoding="utf-8")
    whole = read_records(p)
    assert whole["text"].to_list() == ["a", "multi\nline"]
    for k in (1, 2, 3):
        try:
            chunked = pl.concat(_chunks(p, k))
        except InputError as exc:  # a chunked read agrees, or refuses saying why
            assert "line 4" in str(exc) and "--chunk-size" in str(exc)
        else:
            assert chunked.equals(whole)


def test_a_tsv_read_without_quoting_counts_a_line_with_a_stray_quote_as_one_record(tmp_path):
    # The first chunk decides: no quoting. A tweet further down opens a " it never closes; the
    # chunks must still hold chunk_size posts each, not the rest of the file in one.
    texts = [f"post {i}" for i in range(2000)]
    texts[500] = '"so tired of this drug'
    rows = [f"{i}\t{t}\t{i % 2}" for i, t in enumerate(texts)]
    p = tmp_path / "in.tsv"
    p.write_text("id\ttext\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    whole = read_records(p)
    assert whole.height == 2000 and whole["text"][500] == '"so tired of this drug'
    chunks = _chunks(p, 100)
    assert [c.height for c in chunks] == [100] * 20
    assert pl.concat(chunks).equals(whole)


# ---------------------------------------------------------------- 7. pred follows the written prob


def test_pred_is_thresholded_on_the_prob_as_written():
    frame = pl.DataFrame({"id": ["a", "b", "c"], "text": ["x", "y", "z"]})
    out = with_predictions(frame, np.array([0.4999996, 0.4999994, 0.2999999]), 0.5)
    assert out["prob"].to_list() == [0.5, 0.499999, 0.3]
    assert out["pred"].to_list() == [1, 0, 0]
    assert with_predictions(frame, np.array([0.4999996, 0.4999994, 0.2999999]), 0.3)["pred"].to_list() == [1, 1, 1]


# ---------------------------------------------------------------- 10. majority-vote ties


def test_majority_vote_ties_follow_the_threshold_the_seeds_were_cut_at():
    # Two seeds predicted at --threshold 0.3: every prob >= 0.3 is 1. Post 0 is a tie (mean 0.35).
    preds = np.array([[1, 0], [1, 1], [0, 0], [1, 1]])
    probs = np.array([[0.45, 0.25], [0.6, 0.7], [0.1, 0.2], [0.3, 0.31]])
    assert majority_vote(preds, probs).tolist() == [1, 1, 0, 1]  # mean 0.35 >= 0.3; the old rule gave 0
    # At the default 0.5 nothing changes.
    preds = np.array([[1, 0], [1, 0], [1, 1]])
    probs = np.array([[0.9, 0.3], [0.5, 0.45], [0.6, 0.7]])
    assert majority_vote(preds, probs).tolist() == [1, 0, 1]
