"""The dose-response study (``smm4h study --doses ... --selections ...``): how many, and which,
synthetic posts help?

The grid: every dose above 0 crossed with every selection rule is one arm; dose 0 is the
baseline (the real data alone, ``runs/baseline``). A dose is a multiple of the real positives
in the training set (``--dose-unit multiple``, the default: ``--doses 0,0.5,1`` adds half as
many synthetic posts as there are real positives, then as many) or a number of posts
(``--dose-unit posts``). The posts an arm asks for are ``round(dose × positives)`` (at least 1).

One pool, generated once: ``ceil(largest dose in posts × overgenerate)`` posts (default factor
1.5: room for what ``dedup`` and ``confidence`` drop). Each selection rule turns the pool into
one ordered list of posts (a step of its own, ``synthetic/selections/<rule>.jsonl``); the arm
at dose d takes the first d posts of its rule's list, so a rule's sets are nested (the 0.5x
set is part of the 1x set) and only the dose differs between them:

* ``none``: the pool in a seeded random order (``numpy.random.default_rng(seed).permutation``).
* ``dedup``: ``select --dedup`` on the pool (duplicates within it and copies of training
  posts dropped, the first of each group kept), the kept posts in ``none``'s order (the pool's
  seeded order with the dropped posts taken out: at a dose, ``dedup`` and ``none`` differ only
  by what ``dedup`` dropped, not by a fresh random draw).
* ``confidence``: ``select --confidence`` with the baseline's model of the first seed
  (``runs/baseline/seed-N``, trained on the real data alone, so no extra training), default
  ``--min-prob`` 0.5, the kept posts in ``none``'s order.
* ``diverse``: ``select --diverse`` over the whole pool: k-center greedy in MiniLM space, in
  the order the posts were picked (its first d are the greedy choice of d).

When a rule keeps fewer posts than a dose asks for, the arm takes all of them; the table shows
the posts each arm actually added. Each arm's set (``synthetic/dose/<arm>.jsonl``) is measured
against the real positives (Vendi, positive-cluster coverage, precision/recall/density/
coverage, in MiniLM space with the study's embedding cache) and trained over the seeds like
any arm; its fingerprint is its set's content, so adding a dose or a selection trains only
the new arms (a dose above the pool's reach makes a larger pool: every arm then changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from smm4h_cli.errors import RunError
from smm4h_cli.io import read_records, write_json, write_records
from smm4h_cli.progress import ProgressFn
from smm4h_cli.study.layout import StudyLayout
from smm4h_cli.study.options import ARM_BASELINE, StudyOptions
from smm4h_cli.study.steps import EventFn, Steps, file_digest


@dataclass(frozen=True)
class DoseArm:
    """One arm of the grid: its run folder name, rule, dose and the posts it asks for."""

    name: str
    selection: str
    dose: float
    label: str
    asked: int

    @property
    def key(self) -> str:
        """The arm's name without ``synthetic-``: its set's name (``none-0.5x``)."""
        return self.name.removeprefix("synthetic-")

    @property
    def shown(self) -> str:
        return f"{self.selection} @ {self.label}"


def dose_label(dose: float, unit: str) -> str:
    return f"{dose:g}x" if unit == "multiple" else f"{int(dose)}p"


def plan(options: StudyOptions, positives: int) -> tuple[list[DoseArm], int]:
    """The grid's arms (doses in increasing order, then rules as given) and the pool's size."""
    arms = []
    for dose in sorted(d for d in options.doses if d > 0):
        asked = max(1, round(dose * positives)) if options.dose_unit == "multiple" else int(dose)
        label = dose_label(dose, options.dose_unit)
        for rule in options.selections:
            arms.append(DoseArm(f"synthetic-{rule}-{label}", rule, dose, label, asked))
    pool = math.ceil(max(a.asked for a in arms) * options.overgenerate)
    return arms, pool


def run_dose_study(
    options: StudyOptions, layout: StudyLayout, paths: dict[str, Path], frames: dict[str, pl.DataFrame],
    digests: dict[str, Any], generator: tuple[str, str | None], on_event: EventFn | None, progress: ProgressFn | None,
    executor: Any,
):
    """The dose grid, end to end: generate the pool, analyse it, train the baseline, select,
    measure each arm's set, train the arms, compare them all with the baseline, report."""
    from smm4h_cli.study import pipeline
    from smm4h_cli.study.dose_report import write_dose_report
    from smm4h_cli.training.hf import set_threads

    positives = int(frames["train"]["label"].sum())
    arms, pool_n = plan(options, positives)
    options = replace(options, n=pool_n)
    set_threads(options.threads)
    total = 1 + 2 + 1 + len(options.selections) + 1 + len(arms) + 1
    steps = Steps(layout.out, total, options.force, on_event)
    study = pipeline._Study(options, layout, steps, paths, frames, digests, progress, executor)
    strategy = options.strategies[0]
    pool_path = pipeline._generation_steps(study, *generator)[strategy]
    pool, pool_digest = read_records(pool_path), file_digest(pool_path)
    pipeline._analysis_steps(study, {strategy: pool}, {strategy: pool_digest})
    pipeline._training_steps(study, [ARM_BASELINE], {}, {})
    orders = _selection_steps(study, pool, pool_digest)
    sets: dict[str, pl.DataFrame] = {}
    set_digests: dict[str, str] = {}
    for arm in arms:
        path = layout.dose_set(arm.key)
        sets[arm.key] = orders[arm.selection].head(arm.asked)
        write_records(sets[arm.key], path, force=True)
        set_digests[arm.key] = file_digest(path)
    _measure_step(study, arms, sets, set_digests)
    pipeline._training_steps(study, [a.name for a in arms], sets, set_digests)
    pipeline._compare_step(study, [ARM_BASELINE] + [a.name for a in arms])
    report_md, report_html, numbers = write_dose_report(layout.out, options, paths, frames, {strategy: pool_path}, arms, positives)
    return pipeline.StudyResult(layout.out, report_md, report_html, steps.ran, steps.skipped, numbers)


# ------------------------------------------------------------------------------ selection


def _selection_steps(study, pool: pl.DataFrame, pool_digest: str) -> dict[str, pl.DataFrame]:
    """One step per rule: the pool turned into the rule's ordered list; returns the lists."""
    from smm4h_cli.training.run_dir import seed_dir

    options, layout, steps = study.options, study.layout, study.steps
    scorer = seed_dir(layout.run(ARM_BASELINE), options.seeds[0])
    orders = {}
    for rule in options.selections:
        key: dict[str, Any] = {"pool": pool_digest, "train": study.digests["train"], "columns": study.digests["columns"], "rule": rule, "seed": options.seed}
        if rule == "confidence":
            key["classifier"] = {"models": steps.parts(f"train {ARM_BASELINE}").get("models"), "seed": options.seeds[0]}
        target = layout.selection(rule)
        name = f"select {rule}"
        steps.run(
            name, key, [target, StudyLayout.meta(target)],
            lambda resume, r=rule, t=target, n=name: _select(options, r, pool, study.frames["train"], t, scorer, layout, study.tell(n)),
        )
        orders[rule] = read_records(target)
    return orders


def _select(
    options: StudyOptions, rule: str, pool: pl.DataFrame, train: pl.DataFrame, target: Path, scorer: Path,
    layout: StudyLayout, progress: ProgressFn | None,
) -> None:
    from smm4h_cli.selection.pipeline import SELECTION_COL, SelectOptions, select

    if rule == "none":
        kept, meta = pool, {"rules": [], "posts_in": pool.height, "posts_kept": pool.height, "posts_dropped": 0}
    else:
        chosen = SelectOptions(
            dedup=rule == "dedup", diverse=pool.height if rule == "diverse" else None, seed=options.seed,
            device=options.device, threads=options.threads, cache_dir=layout.embedding_cache,
        )
        result = select(pool, train, chosen, run_dir=scorer if rule == "confidence" else None, progress=progress)
        kept, meta = result.kept, result.to_dict()
        if kept.height == 0:  # every arm of the rule would add nothing: say why instead of training copies of the baseline
            reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(meta.get("dropped", {}).get(rule, {}).items()) if count)
            why = (" (the baseline's model, trained on the real data alone, scored every pooled post below --min-prob 0.5:"
                   " with so weak a baseline the rule cannot tell positives apart)") if rule == "confidence" else ""
            raise RunError(
                f"the {rule} rule kept none of the {pool.height:,} pooled posts{f' ({reasons})' if reasons else ''}{why}. "
                f"Leave {rule} out of --selections, or give the study more training data or epochs, then run it again: "
                "the finished steps are kept."
            )
    if rule == "diverse":
        import json

        order = np.argsort([json.loads(s)["pick"] for s in kept[SELECTION_COL].to_list()], kind="stable")
    else:  # the pool's one seeded random order, less what the rule dropped: rules differ by their drops alone
        pool_order = pool["id"].to_numpy()[np.random.default_rng(options.seed).permutation(pool.height)]
        place = {post: i for i, post in enumerate(pool_order.tolist())}
        order = np.argsort([place[post] for post in kept["id"].to_list()], kind="stable")
    write_records(kept[order.tolist()], target, force=True)
    write_json(StudyLayout.meta(target), {**meta, "order": "k-center greedy pick order" if rule == "diverse" else f"seeded random (seed {options.seed})"})


# ------------------------------------------------------------------------------ measures of each arm's set


def _measure_step(study, arms: list[DoseArm], sets: dict[str, pl.DataFrame], set_digests: dict[str, str]) -> None:
    options, layout = study.options, study.layout
    key = {"train": study.digests["train"], "columns": study.digests["columns"], "sets": set_digests, "k": options.k, "seed": options.seed}
    name = "measure the arms' sets"
    study.steps.run(
        name, key, [layout.table("dose_sets")],
        lambda resume: write_json(layout.table("dose_sets"), set_measures(study.frames["train"], arms, sets, options, layout.embedding_cache, study.tell(name))),
    )


def set_measures(
    train: pl.DataFrame, arms: list[DoseArm], sets: dict[str, pl.DataFrame], options: StudyOptions, cache_dir: Path | None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Each arm's set against the real training positives, in MiniLM space.

    Vendi score of the set; positive-cluster coverage: k-means (the study's k; 10 for "auto")
    fitted on all real training posts, the share of the clusters holding real positives that
    the set reaches; precision/recall/density/coverage (k = 5 neighbours, fewer for tiny sets).
    """
    from sklearn.cluster import KMeans

    from smm4h_cli.analysis.diversity import REALISM_K, coverage, prdc, vendi_score
    from smm4h_cli.analysis.embeddings import SentenceEmbedder, embed_texts, model_label
    from smm4h_cli.progress import report

    texts = train["text"].to_list()
    for arm in arms:
        texts += sets[arm.key]["text"].to_list()
    report(progress, "embed", 0, len(texts))
    embedder = SentenceEmbedder(None, device=options.device)
    vectors, _ = embed_texts(texts, embedder, model_label(None), cache_dir, progress=progress)
    real = vectors[: train.height]
    is_positive = train["label"].to_numpy() == 1
    k = min(options.k if isinstance(options.k, int) else 10, train.height)
    kmeans = KMeans(n_clusters=k, random_state=options.seed, n_init=10).fit(real)
    positive_clusters = kmeans.labels_[is_positive]
    positives = real[is_positive]
    rows, start = {}, train.height
    for arm in arms:
        n = sets[arm.key].height
        v = vectors[start:start + n]
        start += n
        reached, occupied = coverage(kmeans.predict(v) if n else np.zeros(0, dtype=int), positive_clusters)
        used = min(REALISM_K, len(positives) - 1, n - 1)
        realism = prdc(positives, v, used) if used >= 1 else {"precision": None, "recall": None, "density": None, "coverage": None}
        rows[arm.name] = {
            "posts": n, "vendi": vendi_score(v) if n else 0.0, "clusters_reached": reached, "clusters": occupied,
            "positive_coverage": reached / occupied if occupied else None, "realism_k": used if used >= 1 else None, **realism,
        }
    return {"arms": rows, "k": k, "real_positives": int(is_positive.sum()), "real_positives_vendi": vendi_score(positives), "model": model_label(None)}
