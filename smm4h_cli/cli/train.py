"""``smm4h train``: fine-tune the classifier with or without synthetic posts (paper §3.2)."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from smm4h_cli.cli._common import (
    DEFAULT_SYNTHETIC, ClassifierModel, Device, Force, Format, IdCol, LabelCol, Quiet, Seed, TableFormat, TextCol, Threads,
    columns, emit_table, err, flag, parse_list, SEED_MAX, seed_value,
)
from smm4h_cli.cli._progress import ProgressDisplay
from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records
from smm4h_cli.sample import sample_path
from smm4h_cli.training.hf import locate_model
from smm4h_cli.training.train import BALANCES, TrainOptions, check_out, preflight, train_seeds

#: Where the one KeyboardInterrupt handler (smm4h_cli.cli) finds the command that goes on.
RESUME_HINT = "smm4h.resume"


def resume_command(ctx: typer.Context) -> str:
    """This command with its options, and --resume in place of --force: what goes on after an interruption."""
    words = ["smm4h", ctx.info_name or "train"]
    for param in ctx.command.params:
        if param.param_type_name != "option" or param.name in ("resume", "force"):
            continue
        value = ctx.params.get(param.name)
        if value is None or value == param.default:
            continue
        if param.is_flag:
            if value:
                words.append(param.opts[0])
            continue
        words += [param.opts[0], str(value.value if isinstance(value, Enum) else value)]
    return " ".join(shlex.quote(w) for w in words + ["--resume"])


#: The answers to class imbalance, as the library names them.
Balance = Enum("Balance", {b: b for b in BALANCES}, type=str)


def train_cli(
    ctx: typer.Context,
    train: Annotated[Path | None, typer.Option("--train", help="Labelled training posts \\[default: the --task sample data].", show_default=False)] = None,
    validation: Annotated[Path | None, typer.Option("--validation", help="Labelled validation posts; the best epoch is chosen on them \\[default: the --task sample data].", show_default=False)] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Test posts to predict with each seed's best model (seed-N/test_predictions.jsonl, for smm4h compare) \\[default: the --task sample test data when --train is not given].", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder \\[default: runs/baseline, or runs/synthetic with --with-synthetic].", show_default=False)] = None,
    task: Annotated[int, typer.Option("--task", help="SMM4H task (5 or 6) whose sample data are the default inputs.")] = 5,
    with_synthetic: Annotated[bool, flag("--with-synthetic", help=f"Add the synthetic posts (from --synthetic FILE, by default {DEFAULT_SYNTHETIC}, where smm4h generate writes) to the training set; never to validation or test.")] = False,
    synthetic: Annotated[Path | None, typer.Option("--synthetic", help="Synthetic posts to add to training (implies --with-synthetic); unlabelled posts count as label 1.", show_default=False)] = None,
    model: ClassifierModel = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs (the paper: 10).")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate, decaying linearly to 0 (the paper: 5e-5).")] = 5e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 32,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens kept per post; batches are padded only to their longest post.")] = 128,
    warmup: Annotated[float, typer.Option("--warmup", help="Share of the steps with a linear learning-rate warm-up (the paper: 0).")] = 0.0,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (the Trainer's default: 0). Above 0 every word-embedding row decays, so the whole embedding table stays in the optimizer.")] = 0.0,
    balance: Annotated[Balance, typer.Option("--balance", help="Answer to class imbalance: none; class-weight (loss weighted by inverse class frequency); oversample (positives repeated until the classes are equal).")] = Balance.none,
    seed: Seed = 0,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Several seeds in one call, e.g. 1,2,3: one seed-N folder each and a summary with mean and standard deviation.", show_default=False)] = None,
    device: Device = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto: bf16 mixed precision where the hardware computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX: about 3x faster), fp16 on older GPUs, else fp32. Or fp32, bf16, fp16.")] = "auto",
    threads: Threads = None,
    resume: Annotated[bool, flag("--resume", help="Go on with an interrupted run from each seed's last checkpoint; finished seeds are kept.")] = False,
    force: Force = False,
    fmt: Format = TableFormat.table,
    quiet: Quiet = False,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Fine-tune a classifier with the Hugging Face Trainer, as the paper: 10 epochs, learning rate 5e-5 decaying linearly to 0, validation F1 of label 1 after every epoch, the best epoch kept.

    The run folder holds one seed-N folder per seed (model and tokenizer, loadable by transformers; metrics.json; train_config.json; test_predictions.jsonl with --test) and summary.json. --force replaces the run folder as a whole (refused for a folder holding other files). The table of best validation scores (and test scores with --test) goes to stdout. Examples:

        smm4h train --epochs 3

        smm4h train --with-synthetic --seeds 1,2,3

        smm4h train --train train.tsv --validation dev.tsv --test test.tsv --out runs/base
    """
    with_synthetic = with_synthetic or synthetic is not None
    seed_list = parse_list(seeds, "--seeds", seed_value, f"integers from 0 to {SEED_MAX}") if seeds is not None else [seed]
    options = TrainOptions(
        out=out or Path("runs/synthetic" if with_synthetic else "runs/baseline"),
        model=model, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, device=device,
        balance=balance.value, resume=resume, force=force, seed=seed_list[0], threads=threads, warmup_ratio=warmup, weight_decay=weight_decay,
        precision=precision,
    )
    cols = columns(text_col, label_col, id_col)
    if sum(str(p) == "-" for p in (train, validation, test, synthetic) if p is not None) > 1:
        raise InputError("stdin ('-') can be read only once; give it for one input.")
    if test is None and train is None:
        test = sample_path(task, "test")
    train_path = train or sample_path(task, "train")
    validation_path = validation or sample_path(task, "validation")
    train_frame = read_records(train_path, cols, require_label=True)
    validation_frame = read_records(validation_path, cols, require_label=True)
    test_frame = read_records(test, cols) if test is not None else None
    synthetic_frame = None
    if with_synthetic:
        syn_path = synthetic or DEFAULT_SYNTHETIC
        if not Path(syn_path).exists() and str(syn_path) != "-":
            raise InputError(
                f"{syn_path}: no such file of synthetic posts. Run smm4h generate first (it writes "
                f"{DEFAULT_SYNTHETIC} by default), or give the file with --synthetic FILE."
            )
        synthetic_frame = read_records(syn_path, cols)

    # every check that can fail, before the start line (train_seeds repeats them for library callers)
    check_out(options, seed_list)
    source = locate_model(model)
    if source.download and not quiet:
        err.print(f"{escape(str(model))} is not in the local Hugging Face cache: downloading it from the Hub.", soft_wrap=True)
    preflight(options, train_frame, validation_frame, synthetic_frame, source)
    ctx.meta[RESUME_HINT] = resume_command(ctx)  # from here on, an interrupted run goes on with --resume
    if not quiet:
        extra = f" + {synthetic_frame.height:,} synthetic" if synthetic_frame is not None else ""
        err.print(
            f"Training {escape(options.model_name)} on {train_frame.height:,} posts{extra} "
            f"(validation {validation_frame.height:,}), {epochs} epochs, seeds {', '.join(map(str, seed_list))} → {escape(str(options.out))}",
            soft_wrap=True,
        )
    with ProgressDisplay(quiet) as show:
        result = train_seeds(options, seed_list, train_frame, validation_frame, synthetic_frame, progress=show, test_frame=test_frame, source=source)

    rows = []
    for run in result.runs:
        row = {"seed": run.seed, "best epoch": run.best_epoch, "val F1": run.best["f1"], "val precision": run.best["precision"], "val recall": run.best["recall"]}
        if run.test:
            row.update({"test F1": run.test["f1"], "test precision": run.test["precision"], "test recall": run.test["recall"]})
        row["seconds"] = round(run.train_seconds)
        rows.append(row)
    emit_table(rows, fmt, title=f"smm4h train → {options.out}")
    if not quiet:
        if len(seed_list) > 1:
            err.print(f"validation F1 over {len(seed_list)} seeds: {result.best_f1_mean:.3f} ± {result.best_f1_std:.3f}")
        err.print(f"Saved {escape(str(options.out))}/summary.json and {', '.join(f'seed-{s}' for s in seed_list)}/ (model, tokenizer, metrics.json).", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train", help=train_cli.__doc__, short_help="Fine-tune the classifier with or without synthetic posts (paper §3.2).")(train_cli)
