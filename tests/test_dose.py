"""The dose-response study (`smm4h study --doses --selections`) and `study --definitions`, on tiny
data with the real embedded generator, MiniLM and classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smm4h_cli.errors import InputError
from smm4h_cli.study import StudyOptions, run_study
from smm4h_cli.study.dose import plan
from smm4h_cli.study.dose_report import dose_conclusion

from test_study import study_files

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dose-data")
    definitions = d / "kids.yaml"
    definitions.write_text(
        "name: Kids' health\npost_kind: tweets\ndefinition: |\n"
        "  A tweet is ' label 1' if the user reports that their own child has ADHD, autism, delayed speech or asthma;\n"
        "  otherwise ' label 0'.\n",
        encoding="utf-8",
    )
    return {**study_files(d), "definitions": definitions}


def _options(data, out: Path, **changes) -> StudyOptions:
    base = dict(
        out=out, train=data["train"], validation=data["validation"], test=data["test"], definitions=data["definitions"],
        epochs=1, batch_size=8, max_length=48, sample=0, k=2, bootstrap=200, device="cpu",
        doses=(0, 1), selections=("none", "dedup"),
    )
    return StudyOptions(**{**base, **changes})


# ------------------------------------------------------------------------------ fast


def test_plan_counts_doses_in_real_positives_or_posts(data, tmp_path):
    arms, pool = plan(_options(data, tmp_path / "s", doses=(0, 0.5, 2), selections=("none", "diverse")), positives=8)
    assert [(a.name, a.asked) for a in arms] == [
        ("synthetic-none-0.5x", 4), ("synthetic-diverse-0.5x", 4), ("synthetic-none-2x", 16), ("synthetic-diverse-2x", 16),
    ]
    assert pool == 24  # 16 × the over-generation factor 1.5
    arms, pool = plan(_options(data, tmp_path / "s", doses=(0, 30), dose_unit="posts", overgenerate=1.0), positives=8)
    assert [(a.name, a.asked) for a in arms] == [("synthetic-none-30p", 30), ("synthetic-dedup-30p", 30)] and pool == 30


@pytest.mark.parametrize("args, message", [
    (["--doses", "0,-1"], "--doses must be numbers of at least 0"),
    (["--doses", "0,half"], "--doses takes comma-separated numbers"),
    (["--doses", "0,nan"], "--doses must be numbers of at least 0"),
    (["--doses", "0"], "at least one dose above 0"),
    (["--doses", "0,1", "--selections", "none,best"], "unknown selection 'best'"),
    (["--doses", "0,1", "--selections", "none,none"], "--selections gives none more than once"),
    (["--doses", "0,0.5", "--dose-unit", "posts"], "whole numbers of synthetic posts"),
    (["--doses", "0,1", "--dose-unit", "percent"], "--dose-unit must be one of multiple, posts"),
    (["--definitions", "kids.yaml"], "--definitions gives your own task"),
])
def test_bad_doses_and_selections_exit_2_and_write_nothing(cli, tmp_path, args, message):
    out = tmp_path / "study"
    result = cli("study", "--out", out, "--quiet", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def _row(arm, delta, low, high, p, significant, vendi=5.0):
    return {
        "arm": arm, "selection": arm.split(" @ ")[0], "dose": 1.0, "posts added": 10, "f1": 0.7 + delta, "f1_std": None,
        "delta_f1": delta, "ci_low": low, "ci_high": high, "mcnemar_p": p, "p_holm": p, "significant": significant, "vendi": vendi,
    }


def test_a_rule_that_keeps_no_post_stops_with_the_reason_and_writes_no_order(data, tmp_path):
    # every pooled post copies a training post: dedup keeps none, so its arms would add nothing
    import polars as pl

    from smm4h_cli.errors import RunError
    from smm4h_cli.io import read_records
    from smm4h_cli.study.dose import _select
    from smm4h_cli.study.layout import StudyLayout

    train = read_records(data["train"], require_label=True)
    pool = train.filter(pl.col("label") == 1).with_columns(pl.lit("synthetic").alias("source"), ("syn-" + pl.col("id")).alias("id"))
    target = tmp_path / "dedup.jsonl"
    with pytest.raises(RunError, match=r"the dedup rule kept none of the 8 pooled posts \(train_exact 8\)\. Leave dedup out of --selections"):
        _select(_options(data, tmp_path / "study"), "dedup", pool, train, target, tmp_path / "no-run", StudyLayout(tmp_path / "study"), None)
    assert not target.exists()


def test_dedup_keeps_the_order_of_none_less_what_it_dropped(data, tmp_path):
    # Fault: each rule drew its own permutation of what it kept, so dedup at a dose differed from
    # none by a fresh random draw (one post fewer kept: a wholly other order), not by its drops alone.
    import polars as pl

    from smm4h_cli.io import read_records
    from smm4h_cli.study.dose import _select
    from smm4h_cli.study.layout import StudyLayout

    train = read_records(data["train"], require_label=True)
    novel = read_records(data["test"], require_label=True).with_columns(pl.lit(1).alias("label"), pl.lit("synthetic").alias("source"))
    repeats = novel.head(3).with_columns(("again-" + pl.col("id")).alias("id"))  # duplicates within the pool
    pool = pl.concat([novel, repeats]).sample(fraction=1.0, shuffle=True, seed=3)
    options, layout = _options(data, tmp_path / "study"), StudyLayout(tmp_path / "study")
    orders = {}
    for rule in ("none", "dedup"):
        _select(options, rule, pool, train, tmp_path / f"{rule}.jsonl", tmp_path / "no-run", layout, None)
        orders[rule] = read_records(tmp_path / f"{rule}.jsonl")["id"].to_list()
    assert sorted(orders["none"]) == sorted(pool["id"].to_list())
    assert len(orders["dedup"]) < len(orders["none"])  # the repeats went
    assert orders["dedup"] == [post for post in orders["none"] if post in set(orders["dedup"])]


def test_the_conclusion_says_plainly_when_nothing_helps():
    base = {"arm": "baseline (dose 0)", "f1": 0.7}
    text = dose_conclusion([base, _row("none @ 1x", 0.01, -0.05, 0.07, 0.8, False), _row("dedup @ 1x", -0.02, -0.09, 0.04, 0.9, False)], "multiple")
    assert "the best is none @ 1x" in text and "No arm helps" in text
    text = dose_conclusion([base, _row("none @ 1x", 0.08, 0.03, 0.12, 0.01, True), _row("dedup @ 1x", 0.0, -0.05, 0.05, 1.0, False)], "multiple")
    assert "the best is none @ 1x" in text and "1 arm(s) improve significantly after adjustment (none @ 1x)" in text
    assert "No arm helps" not in text
    # the p-value reads as a sentence: "p = 0.010", "p < 0.001" (was "p 0.010")
    assert "McNemar p = 0.010 Holm-adjusted" in text
    tiny = dose_conclusion([base, _row("none @ 1x", 0.08, 0.03, 0.12, 0.0004, True)], "multiple")
    assert "McNemar p < 0.001 Holm-adjusted" in tiny
    # Fault: significant after Holm with its F1 interval across 0 fell through to "No arm helps",
    # beside a table marking the arm significant; such an arm with a lower F1 went unmentioned.
    mixed = dose_conclusion([base, _row("none @ 1x", 0.05, -0.01, 0.11, 0.01, True), _row("dedup @ 1x", -0.04, -0.1, 0.02, 0.02, True)], "multiple")
    assert "No arm helps" not in mixed and "the evidence is mixed" in mixed and "(none @ 1x)" in mixed
    assert "1 arm(s) err on significantly other posts with an F1 no higher, whose interval includes 0 (dedup @ 1x)" in mixed


# ------------------------------------------------------------------------------ a real dose study


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dose") / "s"
    return out, run_study(_options(data, out))


def _models(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "runs").glob("*/seed-*/model.safetensors")}


@slow
def test_the_dose_report_has_the_figures_the_table_and_the_conclusion(finished):
    out, result = finished
    md = result.report_md.read_text(encoding="utf-8")
    page = result.report_html.read_text(encoding="utf-8")
    for rel in ["dose/dose.png", "dose/dose.svg", "dose/gain.png", "tables/dose.csv", "tables/dose_sets.json",
                "synthetic/selections/none.jsonl", "synthetic/selections/dedup.jsonl", "synthetic/dose/none-1x.jsonl"]:
        assert (out / rel).is_file(), rel
    assert "![F1 of label 1 against dose" in md and "![ΔF1 of each arm" in md
    assert page.count("data:image/png;base64,") == 3  # the dose curve, diversity vs gain, the pool's t-SNE
    # the table: every arm, the columns the issue asks for
    for header in ["posts added", "F1 (label 1)", "ΔF1 [95% CI]", "McNemar p (Holm)", "Vendi", "pos. clusters", "precision", "recall", "density", "coverage"]:
        assert header in md, header
    rows = json.loads((out / "tables" / "dose.json").read_text())
    assert [r["arm"] for r in rows] == ["baseline (dose 0)", "none @ 1x", "dedup @ 1x"]
    pool = len((out / "synthetic" / "paper.jsonl").read_text().splitlines())
    # dose 1x = the 8 real positives, or all the pool holds where the generator gave fewer (then the report says so)
    assert rows[1]["posts added"] == min(8, pool) and 0 < rows[2]["posts added"] <= rows[1]["posts added"]
    assert pool >= 8 or "Short of the dose" in md
    assert all(r["band_low"] <= r["f1"] <= r["band_high"] for r in rows)
    assert result.numbers["conclusion"].startswith("The baseline trained on the real data alone")
    assert "the best is" in result.numbers["conclusion"] and "Holm-adjusted" in result.numbers["conclusion"]
    assert f"> {result.numbers['conclusion'][:40]}" in md
    # --definitions: the title follows the user's task, not an SMM4H one
    assert md.startswith("# How many, and which, synthetic positives help? Kids") and "SMM4H Task" not in md
    # the dose arms' sets are nested prefixes of their rule's order
    none = (out / "synthetic" / "selections" / "none.jsonl").read_text().splitlines()
    assert (out / "synthetic" / "dose" / "none-1x.jsonl").read_text().splitlines() == none[:8]


@slow
def test_a_resumed_dose_study_trains_only_the_new_arms(finished, data):
    out, first = finished
    before = _models(out)
    assert set(before) == {f"runs/{a}/seed-0/model.safetensors" for a in ("baseline", "synthetic-none-1x", "synthetic-dedup-1x")}
    again = run_study(_options(data, out, doses=(0, 0.5, 1), selections=("none", "dedup", "diverse")))
    trained = sorted(s for s in again.ran if s.startswith("train "))
    assert trained == ["train synthetic-dedup-0.5x", "train synthetic-diverse-0.5x", "train synthetic-diverse-1x", "train synthetic-none-0.5x"]
    assert "generate paper" in again.skipped and "select none" in again.skipped and "select diverse" in again.ran
    after = _models(out)
    assert {k: after[k] for k in before} == before  # the existing arms' models were not touched
    rows = json.loads((out / "tables" / "dose.json").read_text())
    assert len(rows) == 1 + 6


def test_definitions_need_the_users_data(tmp_path):
    with pytest.raises(InputError, match="--definitions gives your own task"):
        StudyOptions(out=tmp_path / "s", definitions=tmp_path / "d.yaml")
