"""The selection rules as pure functions of texts, probabilities and vectors: no I/O, no models.

Each rule answers, for the posts it is given, which to drop and why; ``select`` chains them.

* ``dedup_drops``: exact and near duplicates within the synthetic set and copies of training
  posts (the comparison ``generate --dedup`` makes: normalised text, character 4-gram TF-IDF
  cosine); the first post of each duplicate group stays.
* ``confidence_drops``: posts whose probability of label 1 under a classifier trained on real
  data lies outside ``[min_prob, max_prob]`` (noise filtering of generated data: ZeroGen, Ye et
  al., EMNLP 2022; SunGen, Gao et al., ICLR 2023).
* ``k_center_greedy``: the core-set choice of Sener & Savarese (ICLR 2018): start from the post
  nearest the centroid, then repeatedly add the post farthest (cosine) from everything chosen.
* ``random_subset``: the seeded random subset, the control every other rule must beat.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from smm4h_cli.analysis.groups import draw
from smm4h_cli.errors import InputError
from smm4h_cli.generation.dedup import find_duplicates

#: Why a post was dropped, per rule, in the order they are reported.
REASONS = {
    "dedup": ("exact", "near", "train_exact", "train_near"),
    "confidence": ("below_min_prob", "above_max_prob"),
    "diverse": ("not_chosen",),
    "random": ("not_chosen",),
}


def dedup_drops(
    texts: Sequence[str], ids: Sequence[str], train_texts: Sequence[str], train_ids: Sequence[str], near: float
) -> dict[int, dict[str, str]]:
    """Position -> ``{"reason": kind, "of": id}`` for every post to drop as a duplicate or a copy.

    A post that repeats an earlier synthetic post is dropped and the earlier one stays, so the
    first post of each group is kept (unless it copies a training post, when all of them go).
    """
    kinds, of, _ = find_duplicates(list(texts), list(train_texts), list(train_ids), list(ids), near)
    return {i: {"reason": kind, "of": str(o)} for i, (kind, o) in enumerate(zip(kinds, of)) if kind is not None}


def confidence_drops(probs: np.ndarray, min_prob: float, max_prob: float | None) -> dict[int, dict[str, str]]:
    """Position -> ``{"reason": ...}`` for probabilities below ``min_prob`` or above ``max_prob``."""
    drops: dict[int, dict[str, str]] = {}
    for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
        if p < min_prob:
            drops[i] = {"reason": "below_min_prob"}
        elif max_prob is not None and p > max_prob:
            drops[i] = {"reason": "above_max_prob"}
    return drops


def k_center_greedy(vectors: np.ndarray, n: int) -> np.ndarray:
    """Positions of ``n`` rows chosen farthest-point first, in the order they were chosen.

    Rows are L2-normalised, so the distance is 1 - cosine. The first pick is the row nearest the
    centroid (the most typical post), so no seed is needed; ties go to the earlier row.
    Each further pick is the row whose nearest chosen row is farthest away: greedily minimising
    the largest distance from any post to the kept set (a 2-approximation of k-center).
    """
    x = np.asarray(vectors, dtype=np.float32)
    total = x.shape[0]
    n = min(n, total)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    centre = x.mean(axis=0)
    first = int(np.argmax(x @ centre))
    chosen = [first]
    nearest = 1.0 - x @ x[first]  # distance of every row to its nearest chosen row
    nearest[first] = -np.inf
    for _ in range(n - 1):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, 1.0 - x @ x[pick])
        nearest[chosen] = -np.inf
    return np.asarray(chosen, dtype=np.int64)


def random_subset(total: int, n: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded random ``n`` of ``total`` posts (the one sampler of the toolkit)."""
    n = min(n, total)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    return draw(total, n, seed, "select", stream=0)


def check_classifier(run_dir: str | Path) -> None:
    """Refuse a folder whose model is not a sequence classifier (a sentence-transformers or base
    model folder would load with a random head and score noise). Folders without any
    ``config.json`` are left to ``predict``, whose messages explain unfinished runs."""
    p = Path(run_dir)
    if not p.exists():
        raise InputError(f"--confidence {p}: no such run folder. Give the --out folder of smm4h train trained on the real data.")
    if not p.is_dir():
        raise InputError(f"--confidence {p} is a file; give the run folder that smm4h train wrote.")
    configs = [p / "config.json"] if (p / "config.json").exists() else sorted(p.glob("seed-*/config.json"))
    for config in configs:
        try:
            architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, ValueError, AttributeError):
            architectures = []
        if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
            shown = ", ".join(map(str, architectures)) or "none named"
            raise InputError(
                f"--confidence {p}: {config} is not a classifier (architectures: {shown}). Give a run folder of "
                f"smm4h train (trained on the real data), e.g. smm4h train --train TRAIN --out runs/real."
            )
