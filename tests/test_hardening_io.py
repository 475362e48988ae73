"""Regression tests for the I/O faults of the hardening pass (issue 11): each failed before its fix."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import polars as pl
import pytest

from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records, write_records

from conftest import write_jsonl

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
LABELS = [1, 0, 1, 0, 0, 1, 0, 0]


def _predictions(path: Path, preds: list, probs: list | None = None) -> Path:
    rows = []
    for i, (label, pred) in enumerate(zip(LABELS, preds)):
        row = {"id": f"p{i}", "text": f"post number {i}", "label": label, "pred": pred}
        if probs is not None:
            row["prob"] = probs[i]
        rows.append(row)
    return write_jsonl(path, rows)


def _refused(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    message = " ".join(result.stderr.split())  # Rich wraps long lines
    for needle in needles:
        assert needle in message, message
    return message


# ------------------------------------------------------------- fault 1: prediction files checked


@pytest.mark.parametrize(
    "bad, probs, shown",
    [
        (None, None, "None on line 4"),
        (0.7, None, "0.7 on line 4"),
        (True, None, "True on line 4"),
        (1, ["high"] * 8, "'high' on line 1"),
        (1, [1.5] * 8, "1.5 on line 1"),
        (1, [-0.1] * 8, "-0.1 on line 1"),
    ],
)
def test_compare_refuses_bad_pred_or_prob_naming_file_and_line(cli, tmp_path, bad, probs, shown):
    good = _predictions(tmp_path / "good.jsonl", [1, 0, 1, 0, 0, 1, 0, 0])
    preds = [1, 0, 1, bad, 0, 1, 0, 0]
    other = _predictions(tmp_path / "other.jsonl", preds, probs)
    message = _refused(cli("compare", good, other, "--bootstrap", "200"), str(other), shown)
    assert ("pred" in message) and ("0 or 1" in message or "between 0 and 1" in message)


@pytest.mark.parametrize(
    "pred",
    [pl.Series([1, None, 0]), pl.Series([1, "x", 0], dtype=pl.Object)],
    ids=["null", "mixed-object"],
)
def test_compare_library_refuses_null_pred_without_a_polars_error(pred):
    from smm4h_cli.training.compare import compare

    frame = pl.DataFrame({"id": ["a", "b", "c"], "label": [1, 0, 1], "pred": [1, None, 0]})
    bad = frame.with_columns(pred.alias("pred"))
    with pytest.raises(InputError, match="pred values must be 0 or 1"):
        compare([[frame.with_columns(pl.lit(1).alias("pred"))], [bad]], ["a", "b"], 200, 0)


# ------------------------------------------------------------- fault 5: line separators in text


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x1c", "\x0b", "\x0c"])
def test_jsonl_round_trip_keeps_line_separators(tmp_path, separator):
    frame = pl.DataFrame({"id": ["a", "b"], "text": [f"one{separator}two", "plain"], "label": [1, 0]})
    path = tmp_path / "sep.jsonl"
    write_records(frame, path)
    assert read_records(path).equals(frame)
    if ord(separator) >= 0x20:  # control characters must be escaped in JSON; these may stand raw
        raw = f'{{"text": "x{separator}y"}}\n'.encode()
        assert read_records("-", stdin=io.BytesIO(raw))["text"].to_list() == [f"x{separator}y"]


def test_call_cache_keeps_lines_with_line_separators(tmp_path):
    from smm4h_cli.generation.engine import CallCache

    path = tmp_path / "cache.jsonl"
    cache = CallCache(path)
    answer = {"finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1, "retries": 0}  # a well-formed cached answer
    cache.append({"key": "k1", "content": "a\u2028b\u0085c", **answer})
    cache.append({"key": "k2", "content": "plain", **answer})
    again = CallCache(path)
    loaded = again.load()
    assert set(loaded) == {"k1", "k2"} and loaded["k1"]["content"] == "a\u2028b\u0085c"
    assert again.ignored == 0


# ------------------------------------------------------------- fault 6: unwritable output


def test_check_writable_refuses_a_parent_that_is_a_file(tmp_path):
    from smm4h_cli.io import check_writable

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable(blocker / "sub" / "out.jsonl")
    with pytest.raises(InputError, match="is a file"):
        check_writable(blocker, folder=True)


def test_check_writable_refuses_a_folder_that_cannot_be_written():
    # /proc refuses new files even to root: a real unwritable folder on every Linux machine.
    from smm4h_cli.io import check_writable

    with pytest.raises(InputError, match="cannot be written"):
        check_writable("/proc/out.jsonl")
    with pytest.raises(InputError, match="cannot be written"):
        check_writable("/proc/run-folder", folder=True)
    check_writable(Path("/tmp") / "smm4h-not-there" / "deeper", folder=True)  # created later: fine


def test_predict_refuses_unwritable_output_before_any_work(cli, tiny):
    _refused(cli("predict", "no-such-run", tiny, "--out", "/proc/preds.jsonl"), "/proc/preds.jsonl", "cannot be written")


@pytest.mark.skipif(ROOT_USER, reason="root may write anywhere")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    from smm4h_cli.io import check_writable

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="cannot be written"):
            check_writable(folder / "out.jsonl")
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------- fault 9: output is an input


def test_check_outputs_refuses_an_input_or_a_repeated_output(tmp_path, tiny, monkeypatch):
    from smm4h_cli.io import check_outputs

    monkeypatch.chdir(tiny.parent)
    with pytest.raises(InputError, match="--out ./tiny.jsonl is also an input"):
        check_outputs({"--out": "./tiny.jsonl"}, [tiny])
    link = tmp_path / "link.jsonl"
    link.symlink_to(tiny)
    with pytest.raises(InputError, match="also an input"):
        check_outputs([link], ["-", tiny])
    with pytest.raises(InputError, match="are the same file"):
        check_outputs({"--out": tmp_path / "new.jsonl", "--cache": "new.jsonl"}, [tiny])
    check_outputs({"--out": "-", "--cache": None}, ["-", tiny])  # stdin/stdout and absent outputs pass


def test_predict_refuses_to_write_over_its_input(cli, tiny):
    before = tiny.read_bytes()
    _refused(cli("predict", "no-such-run", tiny, "--out", tiny, "--force"), "also an input")
    assert tiny.read_bytes() == before


def test_embed_cluster_refuses_an_output_folder_holding_an_input(cli, tmp_path, tiny):
    out = tmp_path / "figure"
    out.mkdir()
    points = out / "points.parquet"
    write_records(read_records(tiny), points)
    _refused(cli("embed-cluster", points, "--out", out, "--force", "--no-plot"), "also an input")


# ------------------------------------------------------------- fault 10: unreadable input


@pytest.fixture
def unreadable(tmp_path) -> Path:
    # A file that exists but fails on read, even for root: reading /proc/self/mem from 0 is EIO.
    path = tmp_path / "broken.jsonl"
    path.symlink_to("/proc/self/mem")
    return path


def test_read_error_is_an_input_error(unreadable):
    with pytest.raises(InputError, match="could not be read"):
        read_records(unreadable)


def test_predict_and_compare_refuse_an_unreadable_input(cli, tmp_path, unreadable):
    _refused(cli("predict", tmp_path, unreadable), str(unreadable), "could not be read")
    good = _predictions(tmp_path / "good.jsonl", [1, 0, 1, 0, 0, 1, 0, 0])
    _refused(cli("compare", good, unreadable), str(unreadable), "could not be read")


@pytest.mark.skipif(ROOT_USER, reason="root reads any file")
def test_permission_denied_is_an_input_error(cli, tiny):
    tiny.chmod(0o000)
    try:
        _refused(cli("ngrams", tiny), "permission denied")
    finally:
        tiny.chmod(0o644)


# ------------------------------------------------------------- fault 13: booleans are not labels


@pytest.mark.parametrize(
    "labels",
    [[1, True, 0], [True, False, True], ["1", "true", "0"]],
    ids=["true among integers", "all booleans", "text true"],
)
def test_boolean_labels_are_rejected_alike(cli, tmp_path, labels):
    rows = [{"text": f"post {i}", "label": v} for i, v in enumerate(labels)]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    _refused(cli("ngrams", path), "labels must be 0 or 1", "on line 2", "write 1 for true and 0 for false")


def test_boolean_parquet_labels_are_rejected(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"text": ["a", "b"], "label": [True, False]}).write_parquet(path)
    with pytest.raises(InputError, match="labels must be 0 or 1; found True on row 1"):
        read_records(path)


# ------------------------------------------------------------- fault 14: CSV line numbers


def test_csv_error_after_a_quoted_line_break_names_the_right_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,text,label\na,"two\nlines",1\nb,"three\nmore\nlines",0\nc,third,maybe\n')
    with pytest.raises(InputError, match=r"'maybe' on line 7\."):
        read_records(path)


def test_duplicate_id_in_a_record_spanning_lines_names_its_first_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,text\nx,"one\ntwo"\ny,ok\nx,"again\nhere"\n')
    with pytest.raises(InputError, match="line 2 and line 5"):
        read_records(path)


@pytest.mark.parametrize(
    "content, line, what",
    [
        ('text,label\nfine,0\n"split\nover",1\ntoo,many,1\n', 5, "3 fields where the header has 2"),
        ("text,label\nfine,0\nshort\n", 3, "1 field where the header has 2"),
        ('text,label\nfine,0\n"never\nclosed,1\nmore,0\n', 3, "a quoted field is never closed"),
        ('text,label\n"ok" tail,0\n', 2, "text after the closing quote"),
    ],
    ids=["too many fields", "too few fields", "unterminated quote", "text after quote"],
)
def test_ragged_or_unterminated_csv_names_the_line(cli, tmp_path, content, line, what):
    path = tmp_path / "t.csv"
    path.write_text(content)
    _refused(cli("ngrams", path), f"{path}, line {line}: {what}")


def test_ragged_tsv_names_the_line(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("tweet_id\ttext\tlabel\n1\tfine\t0\n2\ttab\tinside\t1\n")
    with pytest.raises(InputError, match=r"line 3: 4 fields where the header has 3"):
        read_records(path)


# ------------------------------------------------------------- fault 15: Rich markup, --names


def test_compare_shows_markup_in_names_as_written(cli, tmp_path):
    a = _predictions(tmp_path / "[red]a.jsonl", [1, 0, 1, 0, 0, 1, 0, 0])
    b = _predictions(tmp_path / "b.jsonl", [1, 0, 0, 0, 0, 1, 0, 1])
    result = cli("compare", a, b, "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    assert "[red]a" in result.stdout
    named = cli("compare", a, b, "--names", "x,[/y]", "--bootstrap", "200")
    assert named.exit_code == 0, named.output
    assert "[/y]" in named.stdout and "[/y] vs x" in named.stdout


def test_ngrams_table_shows_markup_in_file_names(cli, tmp_path, tiny):
    odd = tmp_path / "[bold]x.jsonl"
    odd.write_bytes(tiny.read_bytes())
    result = cli("ngrams", odd, "--sample", "3")
    assert result.exit_code == 0, result.output
    assert "[bold]x" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([","], "has an empty file name"),
        (["A,,B"], "has an empty file name"),
        (["A", "B", "--names", "x,"], "has an empty name"),
        (["A", "B", "--names", ","], "has an empty name"),
    ],
)
def test_compare_refuses_empty_specs_and_names(cli, tmp_path, args, message):
    a = _predictions(tmp_path / "a.jsonl", [1, 0, 1, 0, 0, 1, 0, 0])
    b = _predictions(tmp_path / "b.jsonl", [1, 0, 0, 0, 0, 1, 0, 1])
    given = [str(a) if x == "A" else str(b) if x == "B" else x.replace("A", str(a)).replace("B", str(b)) for x in args]
    _refused(cli("compare", *given), message)


def test_error_messages_show_markup_in_paths(cli, tmp_path):
    path = tmp_path / "[red]missing[/].jsonl"
    _refused(cli("ngrams", path), "[red]missing[/].jsonl", "no such file")


def test_predictions_read_from_csv_strings_are_typed(tmp_path):
    from smm4h_cli.io import read_predictions

    path = tmp_path / "p.csv"
    path.write_text("id,text,label,pred,prob\na,x,1,1,0.9\nb,y,0,0,0.2\n")
    frame = read_predictions(path)
    assert frame["pred"].dtype == pl.Int64 and frame["prob"].to_list() == [0.9, 0.2]
    assert json.loads(frame.write_ndjson().splitlines()[0])["pred"] == 1
