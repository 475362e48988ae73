"""Predictions of a trained classifier: ``pred`` and ``prob`` (probability of label 1) per post.

Batched for speed: no gradients, posts sorted by token length so that each batch pads only to
its own longest post, then put back in the input order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from smm4h_cli.errors import InputError

TRAIN_CONFIG = "train_config.json"


@dataclass
class PredictOptions:
    """Options of ``smm4h predict``.

    Fields:
        threshold (float, 0.5): ``pred`` is 1 where ``prob`` >= threshold.
        batch_size (int, 64): posts per forward pass.
        max_length (int | None, None): tokens kept per post; None takes the run's training value.
        device (str, "auto"): ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads (int | None, None): torch CPU threads; None keeps torch's default.
    """

    threshold: float = 0.5
    batch_size: int = 64
    max_length: int | None = None
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold must be between 0 and 1; got {self.threshold}.")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}.")
        if self.max_length is not None and self.max_length < 2:
            raise InputError(f"--max-length must be at least 2 tokens; got {self.max_length}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1; got {self.threads}.")


def resolve_run_dir(path: str | Path) -> Path:
    """The folder holding the model: ``path`` itself, or its only ``seed-N`` sub-folder."""
    try:
        return _resolve_run_dir(Path(path))
    except PermissionError:
        raise InputError(f"{path}: permission denied, the run folder cannot be read. Check its permissions (ls -l '{path}').") from None
    except OSError as exc:
        raise InputError(f"{path}: the run folder could not be read ({exc.strerror or exc}).") from None


def _resolve_run_dir(p: Path) -> Path:
    if not p.exists():
        raise InputError(f"{p}: no such run folder. Give the --out folder of smm4h train (or one of its seed-N folders).")
    if not p.is_dir():
        raise InputError(f"{p} is a file; give the run folder that smm4h train wrote (it holds config.json and the model).")
    if (p / "config.json").exists():
        return p
    seeds = sorted(d for d in p.glob("seed-*") if (d / "config.json").exists())
    if len(seeds) == 1:
        return seeds[0]
    if len(seeds) > 1:
        names = ", ".join(str(d) for d in seeds[:3])
        raise InputError(f"{p} holds {len(seeds)} trained seeds ({names}, ...); give one of them, e.g. {seeds[0]}.")
    raise InputError(
        f"{p} holds no trained model (no config.json, no finished seed-N folder). Finish the run "
        f"(smm4h train ... --resume) or give the right folder."
    )


def run_config(run_dir: Path) -> dict:
    path = run_dir / TRAIN_CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} could not be read ({getattr(exc, 'strerror', None) or exc}).") from None


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def load_classifier(run_dir: Path, device: str):
    """Model (in eval mode, on ``device``) and tokenizer from a run folder or any HF classifier folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from smm4h_cli.training.train import quiet_transformers

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(run_dir)
        model = AutoModelForSequenceClassification.from_pretrained(run_dir)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{run_dir}: could not load the model and tokenizer ({first}).") from None
    if model.config.num_labels != 2:
        raise InputError(f"{run_dir}: the model has {model.config.num_labels} labels; smm4h classifiers are binary (2).")
    return model.to(device).eval(), tokenizer


def positive_probabilities(model, tokenizer, texts: list[str], *, batch_size: int, max_length: int, device: str) -> np.ndarray:
    """Probability of label 1 for each text, in the order given."""
    import torch

    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    probs = np.empty(len(texts), dtype=np.float64)
    keys = [k for k in encoded.keys()]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer.pad([{k: encoded[k][i] for k in keys} for i in idx], return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            probs[idx] = torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()
    return probs


def with_predictions(frame: pl.DataFrame, probs: np.ndarray, threshold: float) -> pl.DataFrame:
    """``frame`` with ``pred`` and ``prob`` (replacing any already there)."""
    base = frame.drop([c for c in ("pred", "prob") if c in frame.columns])
    return base.with_columns(
        pl.Series("pred", (probs >= threshold).astype(np.int64)),
        pl.Series("prob", probs.round(6)),
    )


def predict(run_dir: str | Path, frame: pl.DataFrame, options: PredictOptions = PredictOptions()) -> pl.DataFrame:
    """Add ``pred`` and ``prob`` to every record of ``frame`` with the model in ``run_dir``."""
    from smm4h_cli.models import resolve_device

    folder = resolve_run_dir(run_dir)
    device = resolve_device(options.device)
    set_threads(options.threads)
    model, tokenizer = load_classifier(folder, device)
    max_length = options.max_length or run_config(folder).get("max_length") or 128
    probs = positive_probabilities(
        model, tokenizer, frame["text"].to_list(), batch_size=options.batch_size, max_length=max_length, device=device
    )
    return with_predictions(frame, probs, options.threshold)
