"""`smm4h ngrams`: the paper's Table 3, its options, and agreement with CountVectorizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sklearn.feature_extraction.text import CountVectorizer

from smm4h_cli.analysis.groups import Group
from smm4h_cli.analysis.ngrams import NgramOptions, count_ngrams, ngram_table, tokenize
from smm4h_cli.errors import InputError

from conftest import ROOT, SAMPLE, write_jsonl


def _vocab_size(texts, n):
    cv = CountVectorizer(ngram_range=(n, n))
    X = cv.fit_transform(texts)
    return len(cv.vocabulary_), int(X.sum())


def test_counts_by_hand():
    # "the cat sat" / "the cat": unigrams {the, cat, sat}; bigrams {the cat, cat sat}; 1 trigram
    counts = count_ngrams(tokenize(["The cat sat", "the CAT", "a"]), (1, 2, 3))
    assert counts == {1: (3, 5), 2: (2, 3), 3: (1, 1)}


def test_tokens_match_python_word_characters_exactly():
    # U+FE0F (emoji variation selector) and U+0301 (combining accent) are word characters for
    # polars' regex engine but not for Python's: CountVectorizer's tokens must win.
    texts = ["keycap #1\ufe0f\u20e3 today", "cafe\u0301 ok x\u00b2 \u00bd \u0130stanbul", "_under_score 42 a1"]
    assert {n: count_ngrams(tokenize(texts), (n,))[n] for n in (1, 2, 3)} == {n: _vocab_size(texts, n) for n in (1, 2, 3)}


@pytest.mark.parametrize("task", [5, 6])
def test_default_counts_equal_countvectorizer_on_sample_data(task):
    texts = [json.loads(line)["text"] for line in (SAMPLE / f"task{task}" / "train.jsonl").open()]
    ours = count_ngrams(tokenize(texts), (1, 2, 3))
    assert {n: ours[n] for n in (1, 2, 3)} == {n: _vocab_size(texts, n) for n in (1, 2, 3)}


def test_distinct_and_compression_ratio_rank_repetition():
    varied = Group("varied", [f"word{i} other{i * 7} thing{i * 13}" for i in range(60)])
    same = Group("same", ["my son has autism and i love him"] * 60)
    rows = {r["group"]: r for r in ngram_table([varied, same], NgramOptions(sample=0))}
    assert rows["same"]["unique_1grams"] == 7 and rows["same"]["distinct_1"] == pytest.approx(7 / 420)
    assert rows["varied"]["distinct_2"] > rows["same"]["distinct_2"]
    assert rows["same"]["compression_ratio"] > rows["varied"]["compression_ratio"]


@pytest.mark.parametrize("bad", [dict(ns=()), dict(ns=(0,)), dict(ns=(1, 1)), dict(sample=-1), dict(tokenizer="bpe")])
def test_options_are_validated(bad):
    with pytest.raises(InputError):
        NgramOptions(**bad)


# ------------------------------------------------------------------------------------- CLI


def _json(result):
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_by_label_json_schema(cli, tiny, tmp_path):
    syn = write_jsonl(tmp_path / "synthetic.jsonl", [{"text": f"my kid {i} has asthma", "label": 1} for i in range(5)])
    rows = _json(cli("ngrams", tiny, syn, "--by-label", "--format", "json"))
    assert [r["group"] for r in rows] == ["tiny/label 0", "tiny/label 1", "synthetic"]
    assert all(r["posts"] == 2 for r in rows)  # min(1000, smallest group)
    assert list(rows[0]) == [
        "group", "posts", "unique_1grams", "unique_2grams", "unique_3grams",
        "distinct_1", "distinct_2", "distinct_3", "compression_ratio",
    ]


def test_cli_orders_sample_and_tokenizer(cli, tiny):
    rows = _json(cli("ngrams", tiny, "--n", "2", "--sample", "0", "--tokenizer", "tweet", "--format", "json"))
    assert list(rows[0]) == ["group", "posts", "unique_2grams", "distinct_2", "compression_ratio"]
    assert rows[0]["posts"] == 6
    sklearn_rows = _json(cli("ngrams", tiny, "--n", "1", "--sample", "0", "--format", "json"))
    # the tweet tokenizer keeps one-letter tokens ("a") and punctuation ("'s"): more unigrams
    assert sklearn_rows[0]["unique_1grams"] < _json(cli("ngrams", tiny, "--n", "1", "--sample", "0", "--tokenizer", "tweet", "--format", "json"))[0]["unique_1grams"]


def test_cli_seed_changes_sample_and_is_reproducible(cli, tmp_path):
    p = write_jsonl(tmp_path / "big.jsonl", [{"text": f"w{i} w{i % 7} w{i % 3} common words", "label": i % 2} for i in range(200)])
    one = _json(cli("ngrams", p, "--by-label", "--sample", "20", "--seed", "1", "--format", "json"))
    again = _json(cli("ngrams", p, "--by-label", "--sample", "20", "--seed", "1", "--format", "json"))
    other = _json(cli("ngrams", p, "--by-label", "--sample", "20", "--seed", "2", "--format", "json"))
    assert one == again and one != other and one[0]["posts"] == 20


def test_cli_csv_markdown_and_table(cli, tiny):
    csv_out = cli("ngrams", tiny, "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("group,posts,unique_1grams") and csv_out[1].startswith("tiny,6,")
    md = cli("ngrams", tiny, "--format", "markdown").stdout
    assert md.startswith("| group | posts | n=1 | n=2 | n=3 |") and "| tiny | 6 |" in md
    table = cli("ngrams", tiny).stdout
    assert "Table 3" in table and "tiny" in table


def test_cli_reads_stdin(cli, tiny):
    rows = _json(cli("ngrams", "-", "--format", "json", input=tiny.read_text()))
    assert rows[0]["group"] == "stdin" and rows[0]["posts"] == 6


def test_cli_same_stems_get_folder_names(cli, tmp_path, tiny):
    for d in ("task5", "task6"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "train.jsonl").write_text(tiny.read_text())
    rows = _json(cli("ngrams", tmp_path / "task5" / "train.jsonl", tmp_path / "task6" / "train.jsonl", "--format", "json"))
    assert [r["group"] for r in rows] == ["task5/train", "task6/train"]


@pytest.mark.parametrize("args, message", [(["--n", "1,x"], "--n takes"), (["--n", "0"], "positive"), (["--sample", "-5"], "--sample"), (["--tokenizer", "bpe"], "--tokenizer"), (["--n", "1,,2"], "has an empty order"), (["--n", "2,2"], "more than once")])
def test_cli_bad_options(cli, tiny, args, message):
    result = cli("ngrams", tiny, *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_cli_stdin_twice(cli, tiny):
    result = cli("ngrams", "-", "-", input=tiny.read_text())
    assert result.exit_code == 2 and "only once" in result.stderr


def test_help_lists_commands_and_version(cli):
    result = cli("--help")
    assert result.exit_code == 0 and "ngrams" in result.stdout
    assert cli("--version").stdout.startswith("smm4h ")
    assert "--by-label" in cli("ngrams", "--help").stdout


def test_real_pipe_between_processes(tiny):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    producer = subprocess.Popen(["cat", str(tiny)], stdout=subprocess.PIPE)
    out = subprocess.run(
        [sys.executable, "-m", "smm4h_cli", "ngrams", "-", str(tiny), "--format", "json"],
        stdin=producer.stdout, capture_output=True, text=True, env=env, check=True,
    )
    producer.wait()
    rows = json.loads(out.stdout)
    assert [r["group"] for r in rows] == ["stdin", "tiny"]
    assert rows[0]["unique_3grams"] == rows[1]["unique_3grams"]
    assert out.stderr == ""
