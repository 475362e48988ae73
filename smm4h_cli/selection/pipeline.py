"""``select``: the selection rules applied to a synthetic set in their fixed order.

dedup -> confidence -> diverse | random. Each rule sees only the posts the rules before it kept.
The function takes and returns values (frames, a result object); it never prints and writes
nothing but the embedding cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.progress import ProgressFn, report
from smm4h_cli.selection.rules import REASONS, check_classifier, confidence_drops, dedup_drops, k_center_greedy, random_subset

#: The order the rules run in, whatever the order of the flags.
RULE_ORDER = ("dedup", "confidence", "diverse", "random")
#: Columns ``select`` adds: provenance on kept and dropped posts; rule and reason on dropped ones.
SELECTION_COL, DROPPED_BY_COL, REASON_COL = "selection", "dropped_by", "reason"


def _default_cache_dir() -> Path | None:
    from smm4h_cli.analysis.embeddings import default_cache_dir

    return default_cache_dir()


@dataclass(frozen=True)
class SelectOptions:
    """Options of ``smm4h select`` (the confidence rule's run folder is ``select``'s ``run_dir``).

    Fields:
        dedup (bool, False): drop exact and near duplicates and copies of training posts.
        near (float, 0.9): character 4-gram TF-IDF cosine at or above which two posts are near
            duplicates (as ``generate --similarity``).
        min_prob (float, 0.5): with a run folder, drop posts whose probability of label 1 is below.
        max_prob (float | None, None): with a run folder, also drop posts above it (too easy).
        diverse (int | None, None): keep this many posts by k-center greedy in MiniLM space.
        random (int | None, None): keep this many posts at random (seeded): the control.
        seed (int, 0): seed of ``random``.
        device (str, "auto"): device of the classifier and the embedding model.
        threads (int | None, None): torch CPU threads for scoring; None keeps torch's default.
        batch_size (int, 64): posts per forward pass, scoring and embedding.
        cache_dir (Path | None, ~/.cache/smm4h/embeddings): embedding cache; None: no cache.
    """

    dedup: bool = False
    near: float = 0.9
    min_prob: float = 0.5
    max_prob: float | None = None
    diverse: int | None = None
    random: int | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    batch_size: int = 64
    cache_dir: Path | None = field(default_factory=_default_cache_dir)

    def __post_init__(self) -> None:
        if not 0.0 < self.near <= 1.0:
            raise InputError(f"--near must be a cosine similarity in (0, 1]; got {self.near}.")
        if not 0.0 <= self.min_prob <= 1.0:
            raise InputError(f"--min-prob must be between 0 and 1; got {self.min_prob}.")
        if self.max_prob is not None and not self.min_prob < self.max_prob <= 1.0:
            raise InputError(f"--max-prob must be above --min-prob ({self.min_prob}) and at most 1; got {self.max_prob}.")
        if self.diverse is not None and self.random is not None:
            raise InputError("--diverse and --random both choose the final subset; give one (run select twice to compare them).")
        for flag, n in (("--diverse", self.diverse), ("--random", self.random)):
            if n is not None and n < 1:
                raise InputError(f"{flag} takes the number of posts to keep, at least 1; got {n}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1; got {self.threads}.")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}.")

    @property
    def subset(self) -> tuple[str, int] | None:
        """``("diverse" | "random", N)`` where a subset rule is asked for."""
        if self.diverse is not None:
            return "diverse", self.diverse
        if self.random is not None:
            return "random", self.random
        return None


@dataclass
class SelectionResult:
    """What ``select`` returns.

    kept: the kept posts, input columns and order, plus ``selection`` (JSON: the rules that ran,
        the post's ``prob`` and diverse ``pick`` order where there are).
    dropped: the dropped posts, input order, plus ``dropped_by`` (the rule), ``reason`` and
        ``selection`` (JSON: rule, reason, the id a duplicate repeats, the probability).
    rules: the rules that ran, in order.
    dropped_counts: rule -> reason -> posts dropped (every reason of every rule that ran).
    posts_in, posts_kept: counts.
    short: where a subset rule asked for more posts than the earlier rules left,
        ``{"rule", "asked", "available"}`` (all of them are kept); else None.
    measures: Vendi score of the posts entering the subset rule and of the kept ones (MiniLM).
    seconds: wall time.
    """

    kept: pl.DataFrame
    dropped: pl.DataFrame
    rules: list[str]
    dropped_counts: dict[str, dict[str, int]]
    posts_in: int
    posts_kept: int
    short: dict[str, Any] | None = None
    measures: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary that ``smm4h select`` writes to ``KEPT.meta.json``."""
        return {
            "rules": self.rules,
            "posts_in": self.posts_in,
            "posts_kept": self.posts_kept,
            "posts_dropped": self.posts_in - self.posts_kept,
            "dropped": self.dropped_counts,
            "short": self.short,
            "measures": self.measures,
            "seconds": round(self.seconds, 3),
        }


def check_request(synthetic: pl.DataFrame, train: pl.DataFrame, options: SelectOptions, run_dir: str | Path | None) -> None:
    """Every check that needs no model: run before any work (and by the CLI before writing)."""
    if not (options.dedup or run_dir is not None or options.subset):
        raise InputError("no selection rule given: add at least one of --dedup, --confidence RUN_DIR, --diverse N, --random N.")
    if run_dir is None and options.max_prob is not None:
        raise InputError("--max-prob needs --confidence RUN_DIR (the classifier that scores the posts).")
    if "label" not in train.columns:
        raise InputError("--train has no label column; select needs the labelled real training posts (0 or 1). Name it with --label-col.")
    if not (train["label"] == 1).any():
        raise InputError(
            f"--train has no positive posts (label 1) among its {train.height:,}: select compares synthetic positives with "
            f"real ones. Give the real training file, or map the right column with --label-col."
        )
    if options.subset and options.subset[1] > synthetic.height:
        rule, n = options.subset
        raise InputError(f"--{rule} {n:,} asks for more posts than the {synthetic.height:,} synthetic posts given; ask for at most {synthetic.height:,}.")
    if run_dir is not None:
        check_classifier(run_dir)


def select(
    synthetic: pl.DataFrame,
    train: pl.DataFrame,
    options: SelectOptions,
    *,
    run_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> SelectionResult:
    """Apply the rules of ``options`` (and the confidence rule when ``run_dir`` is given) to
    ``synthetic`` in the order dedup -> confidence -> diverse | random.

    ``train`` is the labelled real training set: dedup drops copies of any of its posts.
    """
    check_request(synthetic, train, options, run_dir)
    started = time.monotonic()
    frame = synthetic.drop([c for c in (SELECTION_COL, DROPPED_BY_COL, REASON_COL) if c in synthetic.columns])
    alive = np.arange(frame.height)  # positions, in input order, of the posts still kept
    drops: dict[int, dict[str, Any]] = {}
    probs: dict[int, float] = {}
    picks: dict[int, int] = {}
    rules: list[str] = []
    short = None
    measures: dict[str, float] = {}
    texts = frame["text"].to_list()

    def drop(rule: str, found: dict[int, dict[str, Any]]) -> None:
        nonlocal alive
        gone = {int(alive[i]) for i in found}
        for i, info in found.items():
            p = int(alive[i])
            drops[p] = {"rule": rule, **info, **({"prob": probs[p]} if p in probs else {})}
        alive = np.asarray([p for p in alive if int(p) not in gone], dtype=np.int64)

    if options.dedup:
        rules.append("dedup")
        report(progress, "dedup", 0, 1)
        ids = frame["id"].to_list()
        drop("dedup", dedup_drops([texts[p] for p in alive], [ids[p] for p in alive], train["text"].to_list(), train["id"].to_list(), options.near))
        report(progress, "dedup", 1, 1, f"{len(alive):,} left", milestone=True)

    if run_dir is not None:
        rules.append("confidence")
        report(progress, "score", 0, 1)
        scored = _score(run_dir, frame[alive.tolist()], options) if len(alive) else np.zeros(0)
        probs.update({int(p): round(float(s), 6) for p, s in zip(alive, scored)})
        drop("confidence", confidence_drops(scored, options.min_prob, options.max_prob))
        report(progress, "score", 1, 1, f"{len(alive):,} left", milestone=True)

    if options.subset:
        rule, n = options.subset
        rules.append(rule)
        if n > len(alive):
            short = {"rule": rule, "asked": n, "available": int(len(alive))}
        vectors = _embed([texts[p] for p in alive], options, progress)
        chosen = k_center_greedy(vectors, n) if rule == "diverse" else random_subset(len(alive), n, options.seed)
        if rule == "diverse":
            picks.update({int(alive[i]): order + 1 for order, i in enumerate(chosen)})
        keep = set(chosen.tolist())
        drop(rule, {i: {"reason": "not_chosen"} for i in range(len(alive)) if i not in keep})
        if len(vectors):
            from smm4h_cli.analysis.diversity import vendi_score

            measures = {"vendi_before": vendi_score(vectors), "vendi_kept": vendi_score(vectors[np.sort(chosen)])}

    kept = _with_provenance(frame, alive, rules, probs, picks)
    dropped = _dropped_frame(frame, drops)
    counts = {rule: {reason: 0 for reason in REASONS[rule]} for rule in rules}
    for info in drops.values():
        counts[info["rule"]][info["reason"]] += 1
    return SelectionResult(
        kept=kept, dropped=dropped, rules=rules, dropped_counts=counts, posts_in=frame.height, posts_kept=kept.height,
        short=short, measures=measures, seconds=time.monotonic() - started,
    )


def _score(run_dir: str | Path, frame: pl.DataFrame, options: SelectOptions) -> np.ndarray:
    from smm4h_cli.training.predict import PredictOptions, predict

    predicted = predict(run_dir, frame, PredictOptions(batch_size=options.batch_size, device=options.device, threads=options.threads))
    return predicted["prob"].to_numpy().astype(np.float64)


def _embed(texts: list[str], options: SelectOptions, progress: ProgressFn | None) -> np.ndarray:
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    from smm4h_cli.analysis.embeddings import SentenceEmbedder, embed_texts, model_label

    report(progress, "embed", 0, len(texts))
    embedder = SentenceEmbedder(None, device=options.device, batch_size=options.batch_size)
    vectors, _ = embed_texts(
        texts, embedder, model_label(None), options.cache_dir,
        progress=progress,  # embed_texts reports ProgressEvents itself (a two-argument callback crashed here)
    )
    return vectors


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def _with_provenance(frame: pl.DataFrame, alive: np.ndarray, rules: list[str], probs: dict[int, float], picks: dict[int, int]) -> pl.DataFrame:
    rows = []
    for p in alive.tolist():
        info: dict[str, Any] = {"rules": rules}
        if p in probs:
            info["prob"] = probs[p]
        if p in picks:
            info["pick"] = picks[p]
        rows.append(_json(info))
    return frame[alive.tolist()].with_columns(pl.Series(SELECTION_COL, rows, dtype=pl.String))


def _dropped_frame(frame: pl.DataFrame, drops: dict[int, dict[str, Any]]) -> pl.DataFrame:
    order = sorted(drops)
    return frame[order].with_columns(
        pl.Series(DROPPED_BY_COL, [drops[p]["rule"] for p in order], dtype=pl.String),
        pl.Series(REASON_COL, [drops[p]["reason"] for p in order], dtype=pl.String),
        pl.Series(SELECTION_COL, [_json(drops[p]) for p in order], dtype=pl.String),
    )
