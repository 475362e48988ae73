"""What training returns: one ``SeedResult`` per seed (its ``metrics.json``) and a ``TrainResult``
per run (its ``summary.json``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SeedResult:
    """One trained seed, as its ``metrics.json`` records it.

    Fields:
        seed (int): the training seed.
        best_epoch (int): the epoch kept (best validation F1 of label 1).
        best (dict[str, float]): validation ``f1``, ``precision``, ``recall`` and ``loss`` of that epoch.
        train_seconds (float): time spent training in this call (0 work for a kept seed: its record).
        test (dict | None): test ``f1``/``precision``/``recall`` where a labelled test set was predicted.
        kept (bool): finished by an earlier call and kept (``resume``).
        metrics (dict): the whole record (epochs, counts, device, ...).
    """

    seed: int
    best_epoch: int
    best: dict[str, float]
    train_seconds: float
    test: dict[str, Any] | None
    kept: bool
    metrics: dict[str, Any]

    @classmethod
    def of(cls, metrics: dict[str, Any], kept: bool = False) -> "SeedResult":
        return cls(metrics["seed"], metrics["best_epoch"], metrics["best"], metrics["train_seconds"], metrics.get("test"), kept, metrics)


@dataclass(frozen=True)
class TrainResult:
    """A run of one or more seeds, as its ``summary.json`` records it (``to_dict``).

    Fields:
        out (Path): the run folder.
        model (str): the classifier base.
        balance (str): the answer to class imbalance.
        runs (list[SeedResult]): one per seed, in the order given.
        config (dict): the run's configuration (without the seed).
        best_f1_mean, best_f1_std (float, float | None): validation F1 over seeds (no std for one seed).
        test_means (dict[str, tuple[float, float | None]]): test f1/precision/recall mean and std,
            where every seed was scored on a labelled test set; else empty.
    """

    out: Path
    model: str
    balance: str
    runs: list[SeedResult]
    config: dict[str, Any]
    best_f1_mean: float = field(init=False)
    best_f1_std: float | None = field(init=False)
    test_means: dict[str, tuple[float, float | None]] = field(init=False)

    def __post_init__(self) -> None:
        mean, std = _mean_std([r.best["f1"] for r in self.runs])
        object.__setattr__(self, "best_f1_mean", mean)
        object.__setattr__(self, "best_f1_std", std)
        tests = [r.test for r in self.runs]
        means = {k: _mean_std([t[k] for t in tests]) for k in ("f1", "precision", "recall")} if all(t is not None for t in tests) else {}
        object.__setattr__(self, "test_means", means)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        """The run's ``summary.json``."""
        summary: dict[str, Any] = {
            "model": self.model,
            "seeds": self.seeds,
            "balance": self.balance,
            "counts": self.runs[0].metrics["counts"],
            "runs": {
                str(r.seed): {"best_epoch": r.best_epoch, **{f"best_{k}": v for k, v in r.best.items()}, "train_seconds": r.train_seconds, "test": r.test}
                for r in self.runs
            },
            "best_f1_mean": self.best_f1_mean,
            "best_f1_std": self.best_f1_std,
            "config": self.config,
        }
        for k, (mean, std) in self.test_means.items():
            summary[f"test_{k}_mean"], summary[f"test_{k}_std"] = mean, std
        return summary


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)
