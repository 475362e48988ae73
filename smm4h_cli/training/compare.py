"""Table 2 of the paper, and whether its differences are real.

Each arm (a training set-up: without synthetic data, with it, class weighting, ...) is one or
more prediction frames on the same labelled test set, one per training seed. How the statistics
treat several seeds, so that no test counts the same test post twice:

* **Scores** (F1, precision, recall of label 1): computed per seed; the table shows the mean over
  seeds and, with two seeds or more, their standard deviation (``ddof=1``) — the spread due to
  training randomness.
* **Paired bootstrap**: the test posts are resampled with replacement (``bootstrap`` times); on
  each resample both arms are scored on the same posts and the statistic is the difference of
  their seed-mean F1s. The percentile interval is the uncertainty due to the finite test set,
  given these trained models; it does not add the seed-to-seed spread (that is the ``*_std``).
* **McNemar's exact test**: on the posts where the two arms' predictions are right/wrong
  differently. With several seeds each arm is first reduced to one prediction per post by
  majority vote (a tie goes by the mean probability against the threshold the seeds' own
  predictions imply: ``metrics.implied_threshold``), so each test post enters the 2×2 table
  once; pooling the seeds' tables instead would count every post several times and make
  p-values too small.
* Every other arm is compared with the first; with several pairs the McNemar p-values are
  Holm-adjusted and the verdict (``significant`` at 0.05) uses the adjusted value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io import check_predictions
from smm4h_cli.tables import p_clause
from smm4h_cli.training.metrics import binary_scores, holm, majority_vote, mcnemar_exact, paired_bootstrap

CONFIDENCE = 0.95
ALPHA = 0.05
_SHOWN = 3


@dataclass
class Arm:
    name: str
    seeds: int
    f1: float
    precision: float
    recall: float
    f1_std: float | None
    precision_std: float | None
    recall_std: float | None
    per_seed: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "arm": self.name, "f1": self.f1, "precision": self.precision, "recall": self.recall,
            "f1_std": self.f1_std, "precision_std": self.precision_std, "recall_std": self.recall_std,
            "seeds": self.seeds,
        }


@dataclass
class Pair:
    a: str
    b: str
    f1_diff: float
    ci_low: float
    ci_high: float
    only_a_correct: int
    only_b_correct: int
    mcnemar_p: float
    p_adjusted: float
    significant: bool
    verdict: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Comparison:
    arms: list[Arm]
    pairs: list[Pair]
    test_posts: int
    test_positives: int
    bootstrap: int
    seed: int
    confidence: float = CONFIDENCE

    @property
    def winners(self) -> dict[str, list[str]]:
        out = {}
        for metric in ("f1", "precision", "recall"):
            best = max(getattr(a, metric) for a in self.arms)
            out[metric] = [a.name for a in self.arms if np.isclose(getattr(a, metric), best, rtol=0, atol=1e-12)]
        return out

    def to_dict(self) -> dict:
        return {
            "arms": [a.to_dict() for a in self.arms],
            "per_seed": {a.name: a.per_seed for a in self.arms},
            "pairs": [p.to_dict() for p in self.pairs],
            "winners": self.winners,
            "test_posts": self.test_posts,
            "test_positives": self.test_positives,
            "confidence": self.confidence,
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "method": (
                "scores: mean (± std) over seeds; CI: paired percentile bootstrap over test posts of the "
                "difference in seed-mean F1; McNemar: exact binomial test on discordant posts of the "
                "seeds' majority vote; Holm-adjusted across pairs"
            ),
        }


def _check_frame(frame: pl.DataFrame, name: str, index: int) -> pl.DataFrame:
    """``frame`` with ``pred`` (and ``prob``) checked and typed by the data contract's rule."""
    where = f"arm '{name}'" + (f" (seed file {index + 1})" if index else "")
    if "label" not in frame.columns:
        raise InputError(
            f"{where} has no label column: compare needs predictions on a labelled test set "
            f"(columns found: {', '.join(frame.columns)}). Predict a test file that has labels."
        )
    frame = check_predictions(frame, where)
    if frame["label"].null_count():
        raise InputError(f"{where}: missing labels; every test post needs a 0/1 label.")
    return frame


def _aligned(arms: list[list[pl.DataFrame]], names: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray | None]]:
    """Labels, and per arm posts × seeds matrices of predictions and probabilities, in one id order."""
    ref = arms[0][0]
    ref_name = names[0]
    ids = ref["id"].cast(pl.String)
    order = pl.DataFrame({"id": ids, "_label_ref": ref["label"].cast(pl.Int64)})
    preds, probs = [], []
    for name, frames in zip(names, arms):
        columns_p, columns_q = [], []
        for index, frame in enumerate(frames):
            frame = _check_frame(frame, name, index)
            f = frame.select(
                pl.col("id").cast(pl.String), pl.col("label").cast(pl.Int64),
                pl.col("pred").cast(pl.Int64),
                (pl.col("prob").cast(pl.Float64) if "prob" in frame.columns else pl.lit(None, dtype=pl.Float64)).alias("prob"),
            )
            mine = set(f["id"].to_list())
            theirs = set(ids.to_list())
            if mine != theirs:
                only_here = sorted(mine - theirs)
                only_ref = sorted(theirs - mine)
                what = f"arm '{name}'" + (f" (seed file {index + 1})" if index else "")
                parts = []
                if only_here:
                    parts.append(f"{len(only_here)} ids only in {what} (e.g. {', '.join(only_here[:_SHOWN])})")
                if only_ref:
                    parts.append(f"{len(only_ref)} ids only in '{ref_name}' (e.g. {', '.join(only_ref[:_SHOWN])})")
                raise InputError(
                    f"{what} and '{ref_name}' are not predictions on the same test set: "
                    + "; ".join(parts) + ". Predict the same test file with every model."
                )
            joined = order.join(f, on="id", how="left", maintain_order="left")
            differ = joined.filter(pl.col("label") != pl.col("_label_ref"))
            if differ.height:
                raise InputError(
                    f"arm '{name}' and '{ref_name}' give different labels for {differ.height} posts "
                    f"(e.g. id '{differ['id'][0]}': {differ['label'][0]} vs {differ['_label_ref'][0]}): "
                    f"they are not the same test set."
                )
            columns_p.append(joined["pred"].to_numpy())
            q = joined["prob"]
            columns_q.append(None if q.null_count() else q.to_numpy())
        preds.append(np.column_stack(columns_p))
        probs.append(None if any(q is None for q in columns_q) else np.column_stack(columns_q))
    return order["_label_ref"].to_numpy(), preds, probs


def _verdict(diff: float, low: float, high: float, p: float, adjusted: bool, significant: bool) -> str:
    shown = "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
    label = ("Holm-adjusted " if adjusted else "") + p_clause(p, shown)
    if not significant:
        if low > 0 or high < 0:
            # McNemar tests the errors, the interval the F1 of label 1; say so rather than pick one.
            return f"no significant difference in errors ({label}), though the F1 interval excludes 0"
        return f"no significant difference ({label})"
    if low > 0 or high < 0:
        return f"significant difference ({label}): F1 {'higher' if diff > 0 else 'lower'} by {abs(diff):.3f}"
    return f"significant difference in errors ({label}), but the F1 interval includes 0"


def compare(arms: list[list[pl.DataFrame]], names: list[str], bootstrap: int = 10_000, seed: int = 0) -> Comparison:
    """Score each arm and test every other arm against the first (see the module's docstring)."""
    if len(arms) != len(names):
        raise ValueError("one name per arm")
    if not arms or any(not frames for frames in arms):
        raise InputError("compare needs at least one prediction file per arm.")
    if len(set(names)) != len(names):
        raise InputError(f"arm names must be distinct; got {', '.join(names)}. Name them with --names.")
    if bootstrap < 100:
        raise InputError(f"--bootstrap must be at least 100 resamples (10,000 is usual); got {bootstrap}.")
    labels, preds, probs = _aligned(arms, names)
    if labels.sum() == 0:
        raise InputError("the test set has no positive post (label 1): F1 of the positive class is undefined.")

    scored = []
    for name, p in zip(names, preds):
        per_seed = [binary_scores(labels, p[:, s]).to_dict() for s in range(p.shape[1])]
        stat = {}
        for metric in ("f1", "precision", "recall"):
            values = np.array([s[metric] for s in per_seed])
            stat[metric] = float(values.mean())
            stat[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        scored.append(Arm(name=name, seeds=p.shape[1], per_seed=per_seed, **stat))

    raw = []
    votes = [majority_vote(p, q) for p, q in zip(preds, probs)]
    for i in range(1, len(arms)):
        diff, low, high = paired_bootstrap(labels, preds[0], preds[i], bootstrap, seed)
        right_a, right_b = votes[0] == labels, votes[i] == labels
        only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
        raw.append((i, diff, low, high, only_a, only_b, mcnemar_exact(only_a, only_b)))
    adjusted = holm([r[-1] for r in raw]) if raw else []
    several = len(raw) > 1
    pairs = []
    for (i, diff, low, high, only_a, only_b, p), p_adj in zip(raw, adjusted):
        significant = p_adj < ALPHA
        pairs.append(Pair(
            a=names[0], b=names[i], f1_diff=diff, ci_low=low, ci_high=high, only_a_correct=only_a,
            only_b_correct=only_b, mcnemar_p=p, p_adjusted=p_adj, significant=significant,
            verdict=_verdict(diff, low, high, p_adj, several, significant),
        ))
    return Comparison(scored, pairs, len(labels), int(labels.sum()), bootstrap, seed)
