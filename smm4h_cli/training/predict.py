"""Predictions of a trained classifier: ``pred`` and ``prob`` (probability of label 1) per post.

Batched for speed: no gradients, posts sorted by token length so that each batch pads only to
its own longest post, then put back in the input order. ``predict_chunks`` does it a chunk of
posts at a time, with the model loaded once, so that a file of any size predicts in the memory
of one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.training.hf import encode, load_classifier, set_threads
from smm4h_cli.training.run_dir import resolve_run_dir, run_config


@dataclass
class PredictOptions:
    """Options of ``smm4h predict``.

    Fields:
        threshold (float, 0.5): ``pred`` is 1 where ``prob`` >= threshold.
        batch_size (int, 64): posts per forward pass.
        max_length (int | None, None): tokens kept per post; None takes the run's training value.
        device (str, "auto"): ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads (int | None, None): torch CPU threads; None keeps torch's default.
        chunk_size (int, 10000): posts read, predicted and written at a time (``predict_chunks``).
    """

    threshold: float = 0.5
    batch_size: int = 64
    max_length: int | None = None
    device: str = "auto"
    threads: int | None = None
    chunk_size: int = 10_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold must be between 0 and 1; got {self.threshold}.")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}.")
        if self.max_length is not None and self.max_length < 2:
            raise InputError(f"--max-length must be at least 2 tokens; got {self.max_length}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1; got {self.threads}.")
        if self.chunk_size < 1:
            raise InputError(f"--chunk-size must be at least 1; got {self.chunk_size}.")


def positive_probabilities(model, tokenizer, texts: list[str], *, batch_size: int, max_length: int, device: str) -> np.ndarray:
    """Probability of label 1 for each text, in the order given."""
    import torch

    encoded = encode(tokenizer, texts, max_length)
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
    """``frame`` with ``pred`` and ``prob`` (replacing any already there).

    ``prob`` is written to 6 decimals and ``pred`` is 1 where that written value is >= ``threshold``,
    so the file itself satisfies the rule (0.4999996 is written 0.5, and is 1 at threshold 0.5).
    """
    base = frame.drop([c for c in ("pred", "prob") if c in frame.columns])
    written = probs.round(6)
    return base.with_columns(
        pl.Series("pred", (written >= threshold).astype(np.int64)),
        pl.Series("prob", written),
    )


def predict(run_dir: str | Path, frame: pl.DataFrame, options: PredictOptions = PredictOptions()) -> pl.DataFrame:
    """Add ``pred`` and ``prob`` to every record of ``frame`` with the model in ``run_dir``."""
    return next(predict_chunks(run_dir, [frame], options))


def predict_chunks(
    run_dir: str | Path, chunks: Iterable[pl.DataFrame], options: PredictOptions = PredictOptions()
) -> Iterator[pl.DataFrame]:
    """``predict`` on each frame of ``chunks`` (such as ``io.stream.iter_records``), yielded as it is done.

    The first chunk is taken before the model loads, so that bad input in it fails at once.
    Each chunk is batched on its own, and a post's probability depends, in float rounding, on
    the batch it is padded in: a file of more than one chunk can differ from a one-chunk run in
    the last of the 6 decimals of a few posts (as a different --batch-size does); with
    ``batch_size=1`` (no padding) the output is the same whatever the chunks.
    """
    from smm4h_cli.models import resolve_device

    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        return
    folder = resolve_run_dir(run_dir)
    device = resolve_device(options.device)
    set_threads(options.threads)
    model, tokenizer = load_classifier(folder, device=device)
    max_length = options.max_length or run_config(folder).get("max_length") or 128
    frame: pl.DataFrame | None = first
    while frame is not None:
        probs = positive_probabilities(
            model, tokenizer, frame["text"].to_list(), batch_size=options.batch_size, max_length=max_length, device=device
        )
        yield with_predictions(frame, probs, options.threshold)
        frame = next(chunks, None)
