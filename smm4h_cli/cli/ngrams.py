"""``smm4h ngrams``: unique n-grams per group on equal-size samples (paper Table 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smm4h_cli.analysis.groups import groups_from_frames
from smm4h_cli.analysis.ngrams import TOKENIZERS, NgramOptions, ngram_table
from smm4h_cli.cli._common import Format, IdCol, LabelCol, Seed, TableFormat, TextCol, choices, columns, emit_table, flag, parse_list
from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records, short_names

Tokenizer = choices("Tokenizer", TOKENIZERS)


def parse_orders(value: str) -> tuple[int, ...]:
    """``--n``: comma-separated n-gram orders, such as 1,2,3."""
    return tuple(parse_list(value, "--n", int, "n-gram orders", item="order"))


def ngrams_cli(
    files: Annotated[list[Path], typer.Argument(help="Files of posts (.jsonl, .parquet, .csv, .tsv); '-' reads JSON lines from stdin.", show_default=False)],
    n: Annotated[str, typer.Option("--n", help="Comma-separated n-gram orders.")] = "1,2,3",
    by_label: Annotated[bool, flag("--by-label", help="One row per file and label (train/label 0, train/label 1); single-label files stay one row.")] = False,
    sample: Annotated[int, typer.Option("--sample", help="Posts per group: every group is sampled to min(SAMPLE, smallest group). 0 uses all.")] = 1000,
    tokenizer: Annotated[Tokenizer, typer.Option("--tokenizer", help="sklearn (CountVectorizer's, as the paper) or tweet (NLTK TweetTokenizer).")] = Tokenizer.sklearn,
    seed: Seed = 0,
    fmt: Format = TableFormat.table,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Count unique n-grams per file (or per label) on equal-size samples: the paper's Table 3.

    Also reports distinct-n (unique / total n-grams) and the gzip compression ratio, a cheap homogeneity score (higher = more repetitive). Example:

        smm4h ngrams sample_data/task5/train.jsonl synthetic.jsonl --by-label
    """
    options = NgramOptions(ns=parse_orders(n), sample=sample, seed=seed, tokenizer=tokenizer.value)
    if sum(str(f) == "-" for f in files) > 1:
        raise InputError("stdin ('-') can be read only once; give it a single time.")
    cols = columns(text_col, label_col, id_col)
    frames = [read_records(f, cols) for f in files]
    groups = groups_from_frames(list(zip(short_names(files), frames)), by_label)
    rows = ngram_table(groups, options)
    size = rows[0]["posts"]
    caption = (
        f"equal-size samples of {size:,} posts per group (seed {seed})"
        if sample
        else "all posts of each group (--sample 0): unique counts grow with size, compare distinct-n"
    )
    headers = {f"unique_{k}grams": f"n={k}" for k in options.ns}
    headers.update({f"distinct_{k}": f"distinct-{k}" for k in options.ns})
    headers["compression_ratio"] = "gzip ratio"
    emit_table(rows, fmt, title="Unique n-grams (paper Table 3)", headers=headers, caption=caption)


def register(app: typer.Typer) -> None:
    app.command("ngrams", help=ngrams_cli.__doc__, short_help="Unique n-grams, distinct-n and compression ratio per group (paper Table 3).")(ngrams_cli)
