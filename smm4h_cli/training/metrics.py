"""Scores of the positive class and the two significance tests ``compare`` uses.

F1, precision and recall are those of label 1, as in the paper (and SMM4H), with 0 where a
denominator is 0 (scikit-learn's ``zero_division=0``). The bootstrap works on count matrices so
that 10,000 resamples of a few thousand posts take well under a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BinaryScores:
    """F1, precision and recall of label 1, and the confusion matrix."""

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    tn: int

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num + den), where=den > 0)


def binary_scores(labels, preds) -> BinaryScores:
    """Scores of the positive class (label 1) for 0/1 ``labels`` and ``preds``."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(preds, dtype=int)
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    tn = int(((p == 0) & (y == 0)).sum())
    return BinaryScores(
        f1=float(_ratio(2 * tp, 2 * tp + fp + fn)),
        precision=float(_ratio(tp, tp + fp)),
        recall=float(_ratio(tp, tp + fn)),
        tp=tp, fp=fp, fn=fn, tn=tn,
    )


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def bootstrap_weights(n: int, resamples: int, rng: np.random.Generator, chunk: int = 1000):
    """Yield matrices (rows = resamples, columns = posts) of how often each post was drawn."""
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        flat = (idx + (np.arange(size) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)
        done += size


def seed_mean_f1(weights: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """F1 of label 1 on each resample, averaged over seeds.

    ``preds`` is posts × seeds; the result has one value per row of ``weights``.
    """
    y = labels.astype(float)[:, None]
    p = preds.astype(float)
    tp = weights @ (p * y)
    fp = weights @ (p * (1 - y))
    fn = weights @ ((1 - p) * y)
    return f1_from_counts(tp, fp, fn).mean(axis=1)


def paired_bootstrap(
    labels: np.ndarray,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Observed F1(B) - F1(A) and its percentile confidence interval over resampled test posts.

    Both arms are scored on the same resample each time (paired); with several seeds per arm the
    statistic is the difference of the seed-mean F1s. Returns (difference, low, high).
    """
    labels = np.asarray(labels)
    a = np.asarray(preds_a).reshape(len(labels), -1)
    b = np.asarray(preds_b).reshape(len(labels), -1)
    ones = np.ones((1, len(labels)))
    observed = float(seed_mean_f1(ones, labels, b)[0] - seed_mean_f1(ones, labels, a)[0])
    rng = np.random.default_rng(seed)
    diffs = np.concatenate([
        seed_mean_f1(w, labels, b) - seed_mean_f1(w, labels, a)
        for w in bootstrap_weights(len(labels), resamples, rng)
    ])
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return observed, float(low), float(high)


def mcnemar_exact(only_a_correct: int, only_b_correct: int) -> float:
    """McNemar's exact test: two-sided binomial test of the discordant posts against p = 1/2.

    With no discordant post the two models agree everywhere and p = 1.
    """
    n = only_a_correct + only_b_correct
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_a_correct, n, 0.5, alternative="two-sided").pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate across the pairs)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def implied_threshold(preds: np.ndarray, probs: np.ndarray) -> float:
    """The threshold one seed's ``pred`` was cut at, as far as its own (``prob``, ``pred``) pairs tell.

    Prediction files do not record the threshold. 0.5 (``predict``'s default) where the seed's
    predictions are exactly ``prob >= 0.5``; otherwise the lowest threshold that gives them (its
    smallest ``prob`` with ``pred`` 1, or just above its largest ``prob`` when no post is 1); and 0.5
    where no threshold gives them (edited files).
    """
    preds, probs = np.asarray(preds).astype(bool), np.asarray(probs, dtype=float)
    if np.array_equal(probs >= 0.5, preds):
        return 0.5
    low = probs[~preds].max() if (~preds).any() else -np.inf
    if not preds.any():
        return float(np.nextafter(low, np.inf))
    high = float(probs[preds].min())
    return high if low < high else 0.5


def majority_vote(preds: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
    """One prediction per post from several seeds: the majority; a tie goes by the probabilities.

    A tie is 1 where the seeds' mean probability is at or above the mean of their thresholds
    (:func:`implied_threshold`), so the vote follows the cut the seeds' own predictions were made
    at: 0.5 for ``predict``'s default, 0.3 for files predicted with ``--threshold 0.3``. Without
    probabilities a tie is 1.
    """
    preds = np.asarray(preds).reshape(preds.shape[0], -1)
    share = preds.mean(axis=1)
    vote = (share > 0.5).astype(int)
    tie = share == 0.5
    if tie.any():
        if probs is not None:
            probs = np.asarray(probs, dtype=float).reshape(preds.shape[0], -1)
            cut = np.mean([implied_threshold(preds[:, s], probs[:, s]) for s in range(preds.shape[1])])
            vote[tie] = (probs[tie].mean(axis=1) >= cut).astype(int)
        else:
            vote[tie] = 1
    return vote
