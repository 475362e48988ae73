"""The posts a classifier trains on: raw training posts, synthetic ones, oversampling, and the
checks that training and validation posts can serve (labels, both classes, validation positives)."""

from __future__ import annotations

import numpy as np
import polars as pl

from smm4h_cli.errors import InputError


def _labelled(frame: pl.DataFrame, what: str) -> pl.DataFrame:
    if "label" not in frame.columns:
        raise InputError(f"the {what} posts have no label column; training needs 0/1 labels (name the column with --label-col).")
    return frame


def training_set(train: pl.DataFrame, synthetic: pl.DataFrame | None, balance: str, seed: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """The posts to train on (raw + synthetic, oversampled if asked) and their counts.

    Synthetic posts without a label are positives (that is what ``smm4h generate`` writes).
    """
    raw = _labelled(train, "training").select("text", pl.col("label").cast(pl.Int64)).with_columns(pl.lit("raw").alias("source"))
    parts = [raw]
    n_syn = 0
    if synthetic is not None:
        syn = synthetic if "label" in synthetic.columns else synthetic.with_columns(pl.lit(1).alias("label"))
        syn = syn.select("text", pl.col("label").cast(pl.Int64)).with_columns(pl.lit("synthetic").alias("source"))
        n_syn = syn.height
        parts.append(syn)
    data = pl.concat(parts)
    positives = int(data["label"].sum())
    if positives == 0 or positives == data.height:
        raise InputError(
            f"the training posts are all label {int(positives > 0)}: a classifier needs both labels "
            f"(found {positives} positive of {data.height})."
        )
    oversampled = 0
    if balance == "oversample":
        counts = {0: data.height - positives, 1: positives}
        minority = min(counts, key=counts.get)
        need = counts[1 - minority] - counts[minority]
        pool = data.filter(pl.col("label") == minority)
        rng = np.random.default_rng(seed)
        extra = pool[rng.integers(0, pool.height, size=need).tolist()]
        data = pl.concat([data, extra])
        oversampled = need
    counts = {
        "raw_train": raw.height,
        "raw_train_positives": int(raw["label"].sum()),
        "synthetic": n_syn,
        "oversampled": oversampled,
        "train_total": data.height,
        "train_positives": int(data["label"].sum()),
    }
    return data, counts


def check_validation(validation: pl.DataFrame) -> int:
    positives = int(_labelled(validation, "validation")["label"].sum())
    if positives == 0:
        raise InputError("the validation posts have no positive (label 1): the best epoch is chosen by validation F1 of label 1, which needs positives.")
    return positives
