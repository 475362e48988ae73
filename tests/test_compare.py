"""smm4h compare: Table 2 statistics on constructed predictions whose answers are checked by hand."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import polars as pl
import pytest

from smm4h_cli.errors import InputError
from smm4h_cli.training.compare import compare
from smm4h_cli.training.metrics import binary_scores, holm, majority_vote, mcnemar_exact, paired_bootstrap

from conftest import write_jsonl


def frame(labels, preds, probs=None, ids=None) -> pl.DataFrame:
    n = len(labels)
    data = {
        "id": ids or [f"p{i}" for i in range(n)],
        "text": [f"post {i}" for i in range(n)],
        "label": labels,
        "pred": preds,
    }
    if probs is not None:
        data["prob"] = probs
    return pl.DataFrame(data)


# 40 test posts, 20 positive. Arm A is right on 30; arm B on the same 30 and on 9 more, and
# wrong on 1 that A gets right: discordant posts 1 (only A right) and 9 (only B right).
LABELS = [1] * 20 + [0] * 20


def _arm_a():
    preds = [1] * 10 + [0] * 10 + [0] * 20  # 10 TP, 10 FN, 20 TN
    return preds


def _arm_b():
    preds = list(_arm_a())
    for i in range(10, 19):  # 9 of A's false negatives become true positives
        preds[i] = 1
    preds[0] = 0  # and one of A's true positives is missed
    return preds


def test_binary_scores_by_hand():
    s = binary_scores([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 1, 1, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)
    assert binary_scores([1, 0], [0, 0]).f1 == 0.0  # no prediction of 1: precision and F1 are 0


def test_mcnemar_exact_on_a_known_table():
    # two-sided binomial test with 1 and 9 discordant posts: 2 * (1 + 10) / 2**10
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_majority_vote_breaks_ties_by_probability():
    assert majority_vote(np.array([[1, 1, 0], [0, 1, 0]]), None).tolist() == [1, 0]
    two = np.array([[1, 0], [1, 0]])
    probs = np.array([[0.9, 0.3], [0.4, 0.45]])
    assert majority_vote(two, probs).tolist() == [1, 0]  # means 0.6 and 0.425


def test_identical_arms_give_zero_difference_and_p_one():
    a = frame(LABELS, _arm_a())
    result = compare([[a], [a.clone()]], ["a", "b"], bootstrap=500, seed=0).to_dict()
    pair = result["pairs"][0]
    assert pair["f1_diff"] == 0.0 and pair["ci_low"] <= 0.0 <= pair["ci_high"]
    assert pair["mcnemar_p"] == 1.0 and not pair["significant"]
    assert pair["verdict"] == "no significant difference (p = 1.00)"
    assert result["winners"]["f1"] == ["a", "b"]  # a tie marks both


def test_clearly_better_arm_is_significant():
    result = compare([[frame(LABELS, _arm_a())], [frame(LABELS, _arm_b())]], ["without", "with"], bootstrap=2000, seed=1)
    d = result.to_dict()
    f1_a, f1_b = 2 * 10 / (2 * 10 + 10), 2 * 18 / (2 * 18 + 2)
    assert d["arms"][0]["f1"] == pytest.approx(f1_a) and d["arms"][1]["f1"] == pytest.approx(f1_b)
    pair = d["pairs"][0]
    assert (pair["a"], pair["b"]) == ("without", "with")
    assert (pair["only_a_correct"], pair["only_b_correct"]) == (1, 9)
    assert pair["mcnemar_p"] == pytest.approx(22 / 1024)
    assert pair["f1_diff"] == pytest.approx(f1_b - f1_a)
    assert 0 < pair["ci_low"] <= pair["f1_diff"] <= pair["ci_high"]
    assert pair["significant"] and pair["verdict"].startswith("significant difference (p = 0.021): F1 higher by 0.281")
    assert d["winners"] == {"f1": ["with"], "precision": ["without", "with"], "recall": ["with"]}
    assert d["test_posts"] == 40 and d["test_positives"] == 20 and d["confidence"] == 0.95 and d["bootstrap"] == 2000


def test_bootstrap_is_seeded_and_contains_the_observed_difference():
    args = (np.array(LABELS), np.array(_arm_a()), np.array(_arm_b()), 1000)
    first, again, other = paired_bootstrap(*args, seed=3), paired_bootstrap(*args, seed=3), paired_bootstrap(*args, seed=4)
    assert first == again and first != other
    diff, low, high = first
    assert low < diff < high


def test_several_seeds_mean_std_and_holm():
    rng = np.random.default_rng(0)
    a_seeds = [frame(LABELS, _arm_a()), frame(LABELS, _arm_a()[:-1] + [1])]
    b_seeds = [frame(LABELS, _arm_b()), frame(LABELS, _arm_b()), frame(LABELS, list(rng.integers(0, 2, 40)))]
    c_seeds = [frame(LABELS, _arm_a())]
    d = compare([a_seeds, b_seeds, c_seeds], ["a", "b", "c"], bootstrap=500, seed=0).to_dict()
    per_a = [binary_scores(LABELS, f["pred"]).f1 for f in a_seeds]
    arm_a = d["arms"][0]
    assert arm_a["seeds"] == 2 and arm_a["f1"] == pytest.approx(np.mean(per_a))
    assert arm_a["f1_std"] == pytest.approx(np.std(per_a, ddof=1))
    assert d["arms"][2]["f1_std"] is None  # one seed: no spread
    ps = [p["mcnemar_p"] for p in d["pairs"]]
    assert [p["p_adjusted"] for p in d["pairs"]] == pytest.approx(holm(ps))
    assert all("Holm-adjusted" in p["verdict"] for p in d["pairs"])


def test_bad_inputs_to_the_library():
    a = frame(LABELS, _arm_a())
    with pytest.raises(InputError, match="not predictions on the same test set: 1 ids only in arm 'b'"):
        compare([[a], [frame(LABELS, _arm_a(), ids=[f"p{i}" for i in range(39)] + ["zz"])]], ["a", "b"], 500, 0)
    with pytest.raises(InputError, match="different labels for 1 posts"):
        compare([[a], [frame(LABELS[:-1] + [1], _arm_a())]], ["a", "b"], 500, 0)
    with pytest.raises(InputError, match="has no 'pred' column"):
        compare([[a], [a.drop("pred")]], ["a", "b"], 500, 0)
    with pytest.raises(InputError, match="no label column"):
        compare([[a], [a.drop("label")]], ["a", "b"], 500, 0)
    with pytest.raises(InputError, match="no positive post"):
        compare([[frame([0] * 40, _arm_a())]], ["a"], 500, 0)


# ------------------------------------------------------------------------------- the command


def _write(path, labels, preds, ids=None, probs=None):
    rows = frame(labels, preds, probs, ids).to_dicts()
    return write_jsonl(path, rows)


@pytest.fixture
def files(tmp_path):
    return {
        "a": _write(tmp_path / "without.jsonl", LABELS, _arm_a()),
        "b": _write(tmp_path / "with.jsonl", LABELS, _arm_b()),
    }


def test_cli_table_markdown_json_csv(cli, files):
    table = cli("compare", files["a"], files["b"], "--bootstrap", "1000")
    assert table.exit_code == 0, table.stderr
    assert "Table 2" in table.stdout and "with vs without" in table.stdout and "significant difference (p = 0.021)" in table.stdout
    md = cli("compare", files["a"], files["b"], "--bootstrap", "1000", "--format", "markdown")
    assert "| with | **0.947** | **1.000** | **0.900** | 1 |" in md.stdout  # one seed: no ± shown
    assert "| without | 0.667 | **1.000** | 0.500 | 1 |" in md.stdout
    data = json.loads(cli("compare", files["a"], files["b"], "--bootstrap", "1000", "--format", "json").stdout)
    assert data["pairs"][0]["mcnemar_p"] == pytest.approx(22 / 1024)
    rows = list(csv.DictReader(io.StringIO(cli("compare", files["a"], files["b"], "--bootstrap", "1000", "-f", "csv").stdout)))
    assert [r["arm"] for r in rows] == ["without", "with"] and rows[1]["significant"] == "True" and rows[0]["f1_diff"] == ""


def test_cli_comma_separated_seeds_and_names(cli, files, tmp_path):
    second = _write(tmp_path / "with2.jsonl", LABELS, _arm_a())
    result = cli("compare", files["a"], f"{files['b']},{second}", "--names", "base,aug", "--bootstrap", "500", "-f", "json")
    assert result.exit_code == 0, result.stderr
    arms = json.loads(result.stdout)["arms"]
    assert [a["arm"] for a in arms] == ["base", "aug"] and arms[1]["seeds"] == 2 and arms[1]["f1_std"] > 0


def test_cli_is_deterministic_for_a_seed(cli, files):
    first = cli("compare", files["a"], files["b"], "--bootstrap", "500", "--seed", "7", "-f", "json").stdout
    assert first == cli("compare", files["a"], files["b"], "--bootstrap", "500", "--seed", "7", "-f", "json").stdout


@pytest.mark.parametrize(
    "case, message",
    [
        ("mismatched ids", "are not predictions on the same test set"),
        ("different test set", "different labels"),
        ("missing labels", "has no label column"),
        ("no pred", "has no 'pred' column"),
        ("names count", "--names gives 1 names for 2 arms"),
        ("empty folder", "holds no test predictions"),
        ("stdin", "not stdin"),
        ("few resamples", "--bootstrap must be at least 100"),
    ],
)
def test_cli_bad_inputs_exit_2(cli, files, tmp_path, case, message):
    extra: list[str] = []
    other = files["b"]
    if case == "mismatched ids":
        other = _write(tmp_path / "o.jsonl", LABELS, _arm_b(), ids=[f"q{i}" for i in range(40)])
    elif case == "different test set":
        other = _write(tmp_path / "o.jsonl", LABELS[1:] + [0], _arm_b())
    elif case == "missing labels":
        rows = [{k: v for k, v in r.items() if k != "label"} for r in frame(LABELS, _arm_b()).to_dicts()]
        other = write_jsonl(tmp_path / "o.jsonl", rows)
    elif case == "no pred":
        other = write_jsonl(tmp_path / "o.jsonl", frame(LABELS, _arm_b()).drop("pred").to_dicts())
    elif case == "names count":
        extra = ["--names", "only-one"]
    elif case == "empty folder":
        other = tmp_path / "run"
        other.mkdir()
    elif case == "stdin":
        other = "-"
    elif case == "few resamples":
        extra = ["--bootstrap", "10"]
    result = cli("compare", files["a"], other, *extra)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--names", "x,x"], "--names gives x more than once"),
        (["--names", "x, ,y"], "has an empty name"),
        (["--names", "a,b,c"], "--names gives 3 names for 2 arms"),
    ],
)
def test_cli_names_are_one_comma_list(cli, files, extra, message):
    result = cli("compare", files["a"], files["b"], *extra)
    assert result.exit_code == 2 and message in " ".join(result.stderr.split()) and result.stdout == ""


def test_cli_an_arm_listing_a_file_twice_is_refused(cli, files):
    result = cli("compare", files["a"], f"{files['b']},{files['b']}")
    assert result.exit_code == 2 and "more than once" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    "command, options",
    [
        ("train", ["--with-synthetic", "--balance", "--seeds", "--resume", "--max-length", "--threads"]),
        ("predict", ["--threshold", "--out", "--batch-size"]),
        ("compare", ["--bootstrap", "--names", "--format"]),
    ],
)
def test_help(cli, command, options):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert [option for option in options if option not in result.stdout] == []
