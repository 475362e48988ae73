"""What the generation benchmarks share: PsyTAR's training sentences, label ADR, posed as a
user's own task (``--definitions``), so the few-shot prompts are real-world ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smm4h_cli.generation.prompts import TaskDefinition  # noqa: E402

DEFAULT_PSYTAR = str(ROOT.parent / "shared" / "data" / "psytar")

ADR_TASK = TaskDefinition(
    name="psytar-adr",
    definition=(
        "The following sentences come from patients' reviews of psychiatric medications. Label 1: the sentence "
        "reports an adverse drug reaction, a harmful or unpleasant effect the writer attributes to the drug. "
        "Label 0: the sentence does not (it reports effectiveness, the reason for taking the drug, or other things)."
    ),
    post_kind="sentences",
)


def psytar_train(folder: str) -> pl.DataFrame:
    """PsyTAR's training sentences with the ADR label (its few empty sentences left out)."""
    frame = pl.read_csv(Path(folder) / "train.tsv", separator="\t", quote_char=None, infer_schema_length=0)
    frame = frame.filter(pl.col("sentences").str.strip_chars().str.len_chars() > 0)
    return frame.select(
        pl.format("psytar-{}", pl.int_range(pl.len()) + 1).alias("id"),
        pl.col("sentences").alias("text"),
        pl.col("ADR").cast(pl.Int64).alias("label"),
    )


def offline() -> None:
    """Benchmarks measure the embedded model or their own loopback server, never a configured API."""
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ.pop("OPENAI_BASE_URL", None)
