"""``smm4h predict``: add ``pred`` and ``prob`` to every post with a trained classifier."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Iterable, Iterator

import numpy as np
import polars as pl
import typer

from smm4h_cli.cli._common import Device, Force, IdCol, LabelCol, Quiet, TextCol, Threads, columns, err
from smm4h_cli.io import check_frame, check_outputs, check_writable
from smm4h_cli.io.stream import DEFAULT_CHUNK_SIZE, iter_records, write_record_chunks
from smm4h_cli.training.metrics import binary_scores
from smm4h_cli.training.predict import PredictOptions, predict_chunks


def predict_cli(
    run_dir: Annotated[Path, typer.Argument(help="Run folder of smm4h train (its only seed-N is used), a seed-N folder, or any transformers classifier folder.", show_default=False)],
    input: Annotated[str, typer.Argument(help="Posts to label (.jsonl, .parquet, .csv, .tsv); '-' reads JSON lines from stdin.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Predictions file (format by extension); '-' writes JSON lines to stdout.")] = "-",
    threshold: Annotated[float, typer.Option("--threshold", help="pred = 1 where prob (of label 1) >= threshold.")] = 0.5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Posts per forward pass.")] = 64,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Tokens kept per post \\[default: the run's training value].", show_default=False)] = None,
    device: Device = "auto",
    threads: Threads = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Posts read, predicted and written at a time; memory grows with it, not with the file.")] = DEFAULT_CHUNK_SIZE,
    force: Force = False,
    quiet: Quiet = False,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Add pred and prob (probability of label 1) to every record; other columns pass through.

    When the input has labels, F1, precision and recall of label 1 and the confusion matrix go to stderr.
    Files of any size stream through in chunks; the output file appears, whole, at the end. Example:

        smm4h predict runs/baseline sample_data/task5/test.jsonl --out predictions.jsonl
    """
    options = PredictOptions(
        threshold=threshold, batch_size=batch_size, max_length=max_length, device=device, threads=threads, chunk_size=chunk_size
    )
    check_outputs({"--out": out}, [input])
    check_writable(out, force)
    chunks = iter_records(input, columns(text_col, label_col, id_col), chunk_size=chunk_size)
    first = next(chunks)  # before any model work: what the first chunk shows the output cannot hold
    check_frame(first, out)
    chunks = itertools.chain([first], chunks)
    tally = _Tally()
    n = write_record_chunks(tally.count(predict_chunks(run_dir, chunks, options)), out, force=force)
    if quiet:
        return
    if tally.labelled:
        s = binary_scores(np.concatenate(tally.labels), np.concatenate(tally.preds))
        err.print(
            f"{n:,} posts: F1 {s.f1:.3f}, precision {s.precision:.3f}, recall {s.recall:.3f} (label 1, threshold {threshold})\n"
            f"confusion matrix    pred 0  pred 1\n"
            f"  label 0         {s.tn:>7,} {s.fp:>7,}\n"
            f"  label 1         {s.fn:>7,} {s.tp:>7,}"
        )
    else:
        err.print(f"{n:,} posts predicted: {int(sum(p.sum() for p in tally.preds)):,} labelled 1.")


class _Tally:
    """The labels and predictions of the chunks as they pass (a byte each a post), for the summary."""

    def __init__(self) -> None:
        self.labels: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []
        self.labelled = False

    def count(self, chunks: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        for frame in chunks:
            self.labelled = "label" in frame.columns
            if self.labelled:
                self.labels.append(frame["label"].to_numpy().astype(np.int8))
            self.preds.append(frame["pred"].to_numpy().astype(np.int8))
            yield frame


def register(app: typer.Typer) -> None:
    app.command("predict", help=predict_cli.__doc__, short_help="Add pred and prob to every post with a trained classifier.")(predict_cli)
