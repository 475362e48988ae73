"""Fine-tuning a sequence classifier as in the paper (§3.2), with the Hugging Face ``Trainer``.

The paper's defaults: 10 epochs, learning rate 5e-5 decaying linearly to 0, evaluation on the
validation set after every epoch by F1 of the positive class, and the best epoch kept. Beyond
the paper: the classic answers to class imbalance (class weighting, oversampling) and several
training seeds in one call.

A run folder (``TrainOptions.out``) holds one ``seed-N`` folder per seed and ``summary.json``.
Each seed folder holds the best model and its tokenizer (``from_pretrained(seed_dir)`` works),
``metrics.json`` (per epoch validation scores, best epoch, time, counts), ``train_config.json``
(the exact configuration) and, when a test set is given, ``test_predictions.jsonl``. While a
seed trains, its ``checkpoints/`` hold the best and the last epoch so that ``resume`` can go on
after an interruption; they are removed once the seed is finished.

Speed on CPU comes from dynamic padding (``DataCollatorWithPadding``) and length-grouped
batches (``group_by_length``): a batch is padded to its own longest post, not to ``max_length``.
The validation posts are evaluated in order of length (``hf.trainer_class``), so that an
evaluation batch holds posts of similar length too; the scores of a set do not depend on its order.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.io import write_json, write_records
from smm4h_cli.progress import ProgressFn, report
from smm4h_cli.training import hf, run_dir
from smm4h_cli.training.data import check_validation, training_set
from smm4h_cli.training.hf import ModelSource, locate_model
from smm4h_cli.training.metrics import binary_scores
from smm4h_cli.training.predict import positive_probabilities, with_predictions
from smm4h_cli.training.results import SeedResult, TrainResult
from smm4h_cli.training.run_dir import SUMMARY

BALANCES = ("none", "class-weight", "oversample")
PADDINGS = ("dynamic", "max_length")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainOptions:
    """Options of ``smm4h train``.

    Fields:
        out (Path, "run"): run folder; one ``seed-N`` folder per seed and ``summary.json``.
        model (str | None, None): Hugging Face id or local folder; None = the embedded all-MiniLM-L6-v2.
        epochs (int, 10): training epochs (the paper: 10).
        lr (float, 5e-5): peak learning rate, decaying linearly to 0 (the paper).
        batch_size (int, 32): training batch size.
        max_length (int, 128): tokens kept per post (longer posts are truncated).
        device (str, "auto"): ``auto`` (CUDA with bf16/fp16 where supported, else CPU), ``cpu``, ``cuda``.
        balance (str, "none"): ``none``, ``class-weight`` (loss weighted by inverse class frequency)
            or ``oversample`` (positives repeated until the classes are equal).
        resume (bool, False): go on from each seed's last checkpoint; finished seeds are kept.
        force (bool, False): replace an existing run.
        seed (int, 0): the seed of a single-seed run (``train_seeds`` takes the list).
        threads (int | None, None): torch CPU threads; None keeps torch's default.
        warmup_ratio (float, 0.0): share of steps with a linear warm-up (the paper: none).
        weight_decay (float, 0.0): AdamW weight decay.
        eval_batch_size (int, 64): batch size of evaluation and prediction.
        padding (str, "dynamic"): ``dynamic`` (pad each batch to its longest post) or
            ``max_length`` (pad everything; only for the speed benchmark).
        group_by_length (bool, True): batches of posts of similar length (with random order).
        precision (str, "auto"): ``auto`` (bf16 mixed precision where the hardware computes bf16
            natively: CUDA with bf16, or a CPU with AVX512-BF16/AMX; fp16 on older GPUs; else
            fp32), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
    """

    out: Path = Path("run")
    model: str | None = None
    epochs: int = 10
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    device: str = "auto"
    balance: str = "none"
    resume: bool = False
    force: bool = False
    seed: int = 0
    threads: int | None = None
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    eval_batch_size: int = 64
    padding: str = "dynamic"
    group_by_length: bool = True
    precision: str = "auto"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1; got {self.epochs}."),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number; got {self.lr}."),
            (self.batch_size >= 1, f"--batch-size must be at least 1; got {self.batch_size}."),
            (self.eval_batch_size >= 1, f"eval batch size must be at least 1; got {self.eval_batch_size}."),
            (self.max_length >= 8, f"--max-length must be at least 8 tokens; got {self.max_length}."),
            (self.balance in BALANCES, f"--balance must be one of {', '.join(BALANCES)}; got '{self.balance}'."),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}; got '{self.precision}'."),
            (self.padding in PADDINGS, f"padding must be one of {', '.join(PADDINGS)}; got '{self.padding}'."),
            (self.threads is None or self.threads >= 1, f"--threads must be at least 1; got {self.threads}."),
            (0.0 <= self.warmup_ratio < 1.0, f"--warmup must be in [0, 1); got {self.warmup_ratio}."),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more; got {self.weight_decay}."),
            (not (self.resume and self.force), "--resume and --force contradict each other: resume keeps the run, force replaces it. Pass one."),
            (
                self.device == "auto" or self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:"),
                f"--device must be auto, cpu, cuda or cuda:N; got '{self.device}'.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    @property
    def model_name(self) -> str:
        from smm4h_cli.models import EMBEDDED_MINILM

        return self.model or EMBEDDED_MINILM

    def config(self) -> dict[str, Any]:
        """The exact configuration, as written to ``train_config.json``."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["model"] = self.model_name
        for transient in ("resume", "force"):
            d.pop(transient)
        return d


# ----------------------------------------------------------------------------- training


def train_one(
    options: TrainOptions,
    seed: int,
    train: pl.DataFrame,
    validation: pl.DataFrame,
    synthetic: pl.DataFrame | None,
    seed_dir: Path,
    progress: ProgressFn | None = None,
    test_frame: pl.DataFrame | None = None,
    model_ref: str | None = None,
) -> SeedResult:
    """Train one seed into ``seed_dir``; its metrics are also written to ``metrics.json``.

    ``model_ref``: what to load (``ModelSource.ref``); None locates ``options.model``."""
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, ProgressCallback, TrainingArguments

    from smm4h_cli.models import resolve_device
    from smm4h_cli.training import cpu, embedding_rows

    device = resolve_device(options.device)
    hf.set_threads(options.threads)
    precision = hf.resolve_precision(options.precision, device)
    config = {**options.config(), "seed": seed, "device": device, "precision": precision}
    # the settings of a resumed seed were checked by check_out
    last = run_dir.start_seed(seed_dir, config, options.resume)

    data, counts = training_set(train, synthetic, options.balance, seed)
    counts["validation"] = validation.height
    counts["validation_positives"] = check_validation(validation)

    ref = model_ref or locate_model(options.model).ref
    model, tokenizer = hf.load_classifier(ref, name=f"--model {ref}", hint=hf.BASE_HINT, new_head_seed=seed)
    pad_to_max = options.padding == "max_length"
    train_ds = hf.labelled_posts(tokenizer, data["text"].to_list(), data["label"].to_list(), options.max_length, pad_to_max)
    rows_trained = None
    if device == "cpu":
        cpu.install(model)  # the same dropout, its masks drawn 4x faster than torch's on a CPU
        # the same training, with only the word-embedding rows of the training set's tokens in
        # the optimizer (no weight decay: the others never change); not where data-parallel
        # processes would broadcast the frozen table every step
        one_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
        if one_process and embedding_rows.install(model, embedding_rows.dataset_rows(train_ds, tokenizer), options.weight_decay):
            rows_trained = len(model.get_input_embeddings().rows)
    val_ds = hf.labelled_posts(tokenizer, validation["text"].to_list(), validation["label"].to_list(), options.max_length, pad_to_max)
    class_weights = None
    if options.balance == "class-weight":
        pos = counts["train_positives"]
        neg = counts["train_total"] - pos
        class_weights = [counts["train_total"] / (2 * neg), counts["train_total"] / (2 * pos)]

    checkpoints = seed_dir / run_dir.CHECKPOINTS
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=options.epochs,
        learning_rate=options.lr,
        lr_scheduler_type="linear",
        warmup_steps=options.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=options.weight_decay,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.eval_batch_size,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,  # with load_best_model_at_end the best checkpoint is kept as well
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=max(1, min(10, math.ceil(counts["train_total"] / options.batch_size))),  # a training loss every epoch
        train_sampling_strategy="group_by_length" if options.group_by_length else "random",
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        save_only_model=False,
        **hf.precision_args(precision),
    )
    collator = DataCollatorWithPadding(tokenizer) if options.padding == "dynamic" else None
    trainer = hf.trainer_class(class_weights)(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, data_collator=collator,
        processing_class=tokenizer, compute_metrics=hf.compute_metrics,
        callbacks=[hf.progress_callback(progress, seed, options.epochs)],
    )
    for noisy in (PrinterCallback, ProgressCallback):  # we never print; the CLI shows progress
        trainer.remove_callback(noisy)
    # read before training: the Trainer rotates old checkpoints away as it goes
    resumed_epoch = 0.0 if last is None else json.loads((Path(last) / "trainer_state.json").read_text())["epoch"]
    started = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    except torch.OutOfMemoryError:
        raise RunError(f"out of memory while training seed {seed}: lower --batch-size or --max-length.") from None
    seconds = time.perf_counter() - started

    epochs = hf.epoch_table(trainer.state.log_history)
    if not epochs:
        raise RunError(f"seed {seed}: training finished without a validation score; see {checkpoints}.")
    best = max(epochs, key=lambda r: r["f1"])  # the first of equal scores, as the Trainer keeps it
    trainer.save_model(str(seed_dir))
    tokenizer.save_pretrained(str(seed_dir))
    trained_epochs = options.epochs - resumed_epoch
    metrics: dict[str, Any] = {
        "seed": seed,
        "model": options.model_name,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "best": {k: best[k] for k in ("f1", "precision", "recall", "loss")},
        "train_seconds": round(seconds, 2),
        "seconds_per_epoch": round(seconds / max(1, trained_epochs), 2),
        "train_loss": result.training_loss,
        "resumed_from": None if last is None else Path(last).name,
        "device": device,
        "embedding_rows_trained": rows_trained,  # None: the whole word embedding
        "counts": counts,
    }
    if not _main_process():  # under accelerate launch / torchrun, rank 0 writes the files
        return SeedResult.of(metrics)
    if test_frame is not None:
        # The saved model, as `smm4h predict` loads it: the Trainer's copy may still run under
        # mixed-precision autocast.
        metrics["test"] = _predict_test(seed_dir, test_frame, options, device)
    run_dir.finish_seed(seed_dir, metrics)  # last: it marks the seed finished
    return SeedResult.of(metrics)


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _predict_test(seed_dir: Path, test_frame: pl.DataFrame, options: TrainOptions, device: str) -> dict | None:
    """The saved model of ``seed_dir`` predicts the test posts (``test_predictions.jsonl``);
    their scores where the posts have labels."""
    model, tokenizer = hf.load_classifier(seed_dir, device=device)
    probs = positive_probabilities(
        model, tokenizer, test_frame["text"].to_list(), batch_size=options.eval_batch_size,
        max_length=options.max_length, device=device,
    )
    out = with_predictions(test_frame, probs, 0.5)
    write_records(out, seed_dir / run_dir.TEST_PREDICTIONS, force=True)
    if "label" not in out.columns:
        return None
    return binary_scores(out["label"], out["pred"]).to_dict()


def preflight(
    options: TrainOptions, train: pl.DataFrame, validation: pl.DataFrame, synthetic: pl.DataFrame | None,
    source: ModelSource | None = None,
) -> ModelSource:
    """Every check that can fail on bad input, before anything is written. Returns the model's source."""
    from smm4h_cli.models import resolve_device

    training_set(train, synthetic, "none", 0)
    check_validation(validation)
    hf.resolve_precision(options.precision, resolve_device(options.device))
    source = source or locate_model(options.model)
    hf.load_classifier(source.ref, name=f"--model {source.name}", hint=hf.BASE_HINT, config_only=True)
    return source


def check_out(options: TrainOptions, seeds: list[int]) -> None:
    """The run folder can take this run (checks only; nothing is changed): ``run_dir.check_out``."""
    run_dir.check_out(options.out, seeds, resume=options.resume, force=options.force, config=options.config())


def train_seeds(
    options: TrainOptions,
    seeds,
    train: pl.DataFrame,
    validation: pl.DataFrame,
    synthetic: pl.DataFrame | None,
    progress: ProgressFn | None = None,
    test_frame: pl.DataFrame | None = None,
    source: ModelSource | None = None,
) -> TrainResult:
    """Train one run per seed in ``options.out/seed-N`` and write ``options.out/summary.json``.

    With ``test_frame`` each seed's best model also predicts it (``seed-N/test_predictions.jsonl``).
    With ``options.resume`` finished seeds are kept and an interrupted one goes on from its last
    checkpoint. ``source``: the model as ``locate_model`` found it (located again when None).
    ``progress`` hears stage ``seed N``: optimizer steps, a milestone per evaluation, and one when
    the seed is finished (or kept).
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds takes distinct seeds such as 1,2,3; got {seeds}.")
    source = preflight(options, train, validation, synthetic, source)
    run_dir.prepare_out(options.out, seeds, resume=options.resume, force=options.force, config=options.config())
    runs = [train_seed(options, seed, train, validation, synthetic, progress, test_frame, source.ref) for seed in seeds]
    return write_summary(options, runs)


def train_seed(
    options: TrainOptions,
    seed: int,
    train: pl.DataFrame,
    validation: pl.DataFrame,
    synthetic: pl.DataFrame | None,
    progress: ProgressFn | None = None,
    test_frame: pl.DataFrame | None = None,
    model_ref: str | None = None,
) -> SeedResult:
    """One seed of :func:`train_seeds` in a run folder that ``run_dir.prepare_out`` made ready:
    kept when ``options.resume`` finds it finished (predicting ``test_frame`` again where its
    predictions were taken away), else trained (from its last checkpoint with ``options.resume``).
    The study's executors run it seed by seed, in one process or as parallel tasks."""
    folder = run_dir.seed_dir(options.out, seed)
    if options.resume and run_dir.seed_finished(folder):
        metrics = run_dir.read_metrics(folder)
        if test_frame is not None and not (folder / run_dir.TEST_PREDICTIONS).exists():
            from smm4h_cli.models import resolve_device

            metrics["test"] = _predict_test(folder, test_frame, options, resolve_device(options.device))
            run_dir.finish_seed(folder, metrics)
        run = SeedResult.of(metrics, kept=True)
        steps = metrics["epochs"][-1].get("step") if metrics.get("epochs") else None
        report(progress, f"seed {seed}", steps or 0, steps, "already finished, kept", milestone=True)
    else:
        run = train_one(options, seed, train, validation, synthetic, folder, progress, test_frame, model_ref)
        steps = run.metrics["epochs"][-1].get("step")
        report(progress, f"seed {seed}", steps or 0, steps, f"best epoch {run.best_epoch}, validation F1 {run.best['f1']:.3f}", milestone=True)
    return run


def write_summary(options: TrainOptions, runs: list[SeedResult]) -> TrainResult:
    """The run's result over its seeds (in the order given), written to ``summary.json`` once
    every seed is finished."""
    result = TrainResult(options.out, options.model_name, options.balance, runs, {k: v for k, v in options.config().items() if k != "seed"})
    if _main_process():
        write_json(options.out / SUMMARY, result.to_dict())
    return result
