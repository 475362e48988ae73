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
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.io import check_writable, write_json, write_records
from smm4h_cli.training.metrics import binary_scores
from smm4h_cli.training.predict import encode, positive_probabilities, set_threads, with_predictions
from smm4h_cli.training.run_dir import (  # noqa: F401 (SUMMARY, TEST_PREDICTIONS: re-exported)
    CHECKPOINTS,
    METRICS,
    SUMMARY,
    TEST_PREDICTIONS,
    TRAIN_CONFIG,
    check_complete,
    foreign_entries,
    sealed_files,
    seed_dir as seed_folder,
)

BALANCES = ("none", "class-weight", "oversample")
PADDINGS = ("dynamic", "max_length")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Settings that must match for --resume to go on with a run (the rest may change: device, threads),
#: with the option that sets each.
_RESUME_KEYS = {
    "model": "--model", "epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "max_length": "--max-length",
    "balance": "--balance", "warmup_ratio": "--warmup", "weight_decay": "--weight-decay", "padding": "padding",
    "group_by_length": "group_by_length",
}
#: Seconds the reachability probe of the Hugging Face Hub may take, all in all (no retries).
HUB_PROBE_SECONDS = 3.0

Progress = Callable[[dict[str, Any]], None]


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


# ----------------------------------------------------------------------------- data


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


class _Posts:
    """A list of tokenized posts, the shape the ``Trainer`` and its length grouping accept."""

    def __init__(self, features: list[dict[str, Any]]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def _tokenize(tokenizer, frame: pl.DataFrame, options: TrainOptions) -> _Posts:
    padding = "max_length" if options.padding == "max_length" else False
    enc = encode(tokenizer, frame["text"].to_list(), options.max_length, padding)
    labels = frame["label"].to_list()
    keys = list(enc.keys())
    return _Posts([{**{k: enc[k][i] for k in keys}, "labels": labels[i]} for i in range(len(labels))])


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelSource:
    """Where the classifier base comes from.

    Fields:
        name (str): the model as given (``--model``), or the embedded model's name.
        ref (str): what ``from_pretrained`` loads: a local folder, or the Hub id when it downloads.
        download (bool): not on this machine; loading it downloads it from the Hugging Face Hub.
    """

    name: str
    ref: str
    download: bool = False


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(endpoint: str, repo_id: str, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hub answers at all (any HTTP status), within ``timeout`` seconds, one try.

    The request runs in a thread so that a name lookup that hangs cannot hold the command either.
    """
    import threading
    import urllib.error
    import urllib.request

    answered: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/models/{repo_id}", method="HEAD"), timeout=timeout)
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # 401/404 and the like: the Hub is there; loading will say what is wrong
        except (OSError, ValueError):
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def locate_model(model: str | None) -> ModelSource:
    """The classifier base: the embedded MiniLM, a local folder, the local Hugging Face cache,
    or (only where the Hub answers within seconds) a download.

    Raises ``InputError`` at once, saying how to make the model available, when it is on none of
    these and the Hub cannot be reached: no retries against an unreachable Hub.
    """
    from smm4h_cli.models import EMBEDDED_MINILM, minilm_path

    if model is None:
        return ModelSource(EMBEDDED_MINILM, str(minilm_path()))
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--model {model} is a file; give the folder holding the model (config.json and weights), or a Hugging Face id.")
        return ModelSource(model, str(path))
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        cached = Path(snapshot_download(model, local_files_only=True))
    except HFValidationError:
        raise InputError(f"--model {model}: no such folder, and not a Hugging Face id (org/name). Check the path or the id.") from None
    except (LocalEntryNotFoundError, OSError):
        cached = None
    if cached is not None and any(any(cached.glob(w)) for w in ("*.safetensors", "*.bin")):
        return ModelSource(model, str(cached))  # with its weights, not only a config fetched earlier
    how = (
        f"Make it available: download it where the Hub is reachable (hf download {model}) and copy the cache "
        f"folder here ({constants.HF_HUB_CACHE}, or another one named by HF_HOME), or pass --model with a local "
        "folder holding the model."
    )
    if _offline():
        raise InputError(f"--model {model} is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set, so nothing is downloaded. {how}")
    if not _hub_reachable(constants.ENDPOINT, model):
        raise InputError(f"--model {model} is not in the local Hugging Face cache, and the Hub ({constants.ENDPOINT}) cannot be reached from here. {how}")
    return ModelSource(model, model, download=True)


def quiet_transformers() -> None:
    """No load reports, warnings or tqdm bars from transformers: library code never prints."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _load(model_ref: str, seed: int):  # model_ref: ModelSource.ref
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    quiet_transformers()

    set_seed(seed)  # the new classification head starts from the same weights for the same seed
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_ref)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_ref, num_labels=2, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1}
        )
    except (OSError, ValueError) as exc:
        raise _unloadable(model_ref, exc) from None
    return model, tokenizer


def resolve_precision(precision: str, device: str) -> str:
    """The arithmetic of training: ``fp32``, ``bf16`` or ``fp16`` (mixed precision, fp32 weights)."""
    import torch

    if device.startswith("cuda"):
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision
    if precision == "fp16":
        raise InputError("--precision fp16 needs a CUDA device; on CPU use bf16 or fp32.")
    if precision == "auto":
        # bf16 autocast is about 3x faster than fp32 on CPUs with native bf16 (AVX512-BF16, AMX)
        # and slower on the others.
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return precision


def _precision(precision: str) -> dict[str, bool]:
    return {"bf16": True} if precision == "bf16" else {"fp16": True} if precision == "fp16" else {}


def _trainer_class(class_weights):
    import torch
    from transformers import Trainer

    if class_weights is None:
        return Trainer

    class WeightedTrainer(Trainer):
        """Cross-entropy weighted by inverse class frequency (``--balance class-weight``)."""

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            weight = torch.tensor(class_weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


def _progress_callback(progress: Progress | None, seed: int, epochs: int):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            self.loss = None
            self.f1 = None

        def _emit(self, state, kind):
            if progress is not None:
                progress({
                    "event": kind, "seed": seed, "epoch": state.epoch or 0.0, "epochs": epochs,
                    "step": state.global_step, "steps": state.max_steps, "loss": self.loss, "val_f1": self.f1,
                })

        def on_train_begin(self, args, state, control, **kwargs):
            self._emit(state, "begin")

        def on_step_end(self, args, state, control, **kwargs):
            self._emit(state, "step")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_f1" in metrics:
                self.f1 = float(metrics["eval_f1"])
            self._emit(state, "evaluate")

    return ProgressCallback()


def _compute_metrics(eval_pred) -> dict[str, float]:
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    scores = binary_scores(eval_pred.label_ids, np.asarray(logits).argmax(axis=-1))
    return {"f1": scores.f1, "precision": scores.precision, "recall": scores.recall}


def _epoch_table(log_history: list[dict]) -> list[dict[str, Any]]:
    """Per epoch: validation F1/precision/recall/loss and the mean training loss of that epoch."""
    rows: dict[int, dict[str, Any]] = {}
    train_losses: dict[int, list[float]] = {}
    for entry in log_history:
        epoch = entry.get("epoch")
        if epoch is None:
            continue
        if "eval_f1" in entry:
            e = round(epoch)
            rows[e] = {
                "epoch": e, "f1": entry["eval_f1"], "precision": entry["eval_precision"],
                "recall": entry["eval_recall"], "loss": entry["eval_loss"], "step": entry.get("step"),
            }
        elif "loss" in entry:
            train_losses.setdefault(max(1, math.ceil(epoch - 1e-9)), []).append(entry["loss"])
    for e, row in rows.items():
        losses = train_losses.get(e)
        row["train_loss"] = sum(losses) / len(losses) if losses else None
    return [rows[e] for e in sorted(rows)]


# ----------------------------------------------------------------------------- training


def _seed_finished(seed_dir: Path) -> bool:
    """Finished (its marker is there); ``check_complete`` then vouches for its files."""
    return (seed_dir / METRICS).exists() and check_complete(seed_dir) is not None


def _write_metrics(seed_dir: Path, metrics: dict[str, Any]) -> None:
    """The seed's completion marker, written last: its metrics and the sizes of its model and predictions."""
    write_json(seed_dir / METRICS, {**metrics, "files": sealed_files(seed_dir)})


def _last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last)."""
    done = [c for c in checkpoints.glob("checkpoint-*") if (c / "trainer_state.json").exists() and c.name.split("-")[-1].isdigit()]
    return str(max(done, key=lambda c: int(c.name.split("-")[-1]))) if done else None


def _check_resumable(out: Path, seeds: list[int], config: dict[str, Any]) -> None:
    """--resume goes on only with the settings the run was started with: those its summary and
    every seed folder already there (finished or not) record."""
    recorded: list[tuple[Path, dict]] = []
    for path in [out / SUMMARY] + [seed_folder(out, s) / TRAIN_CONFIG for s in seeds]:
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise InputError(f"{path}: unreadable ({exc}), so --resume cannot check the run's settings. Pass --force to start over.") from None
            recorded.append((path, old.get("config", {}) if path.name == SUMMARY else old))
    for path, old in recorded:
        changed = [k for k in _RESUME_KEYS if k in old and old[k] != config.get(k)]
        if changed:
            settings = ", ".join(f"{_RESUME_KEYS[k]} {old[k]} (now {config.get(k)})" for k in changed)
            raise InputError(
                f"{out} was trained with other settings ({path.name}): {settings}. --resume goes on with the "
                f"same settings only, so that the run records the settings its models were trained with. Pass the "
                f"same options, or --force to start over."
            )


def train_one(
    options: TrainOptions,
    seed: int,
    train: pl.DataFrame,
    validation: pl.DataFrame,
    synthetic: pl.DataFrame | None,
    seed_dir: Path,
    progress: Progress | None = None,
    test_frame: pl.DataFrame | None = None,
    model_ref: str | None = None,
) -> dict[str, Any]:
    """Train one seed into ``seed_dir``; returns its metrics (also written to ``metrics.json``).

    ``model_ref``: what to load (``ModelSource.ref``); None locates ``options.model``."""
    import torch
    from transformers import DataCollatorWithPadding, TrainingArguments

    from smm4h_cli.models import resolve_device

    device = resolve_device(options.device)
    set_threads(options.threads)
    precision = resolve_precision(options.precision, device)
    config = {**options.config(), "seed": seed, "device": device, "precision": precision}
    checkpoints = seed_dir / CHECKPOINTS
    last = None
    if options.resume and checkpoints.is_dir():  # the settings were checked by check_out
        last = _last_complete_checkpoint(checkpoints)
    if last is None and seed_dir.exists():
        shutil.rmtree(seed_dir)  # nothing to resume from: start this seed clean
    seed_dir.mkdir(parents=True, exist_ok=True)
    write_json(seed_dir / TRAIN_CONFIG, config)

    data, counts = training_set(train, synthetic, options.balance, seed)
    val = validation
    counts["validation"] = val.height
    counts["validation_positives"] = _check_validation(val)

    model, tokenizer = _load(model_ref or locate_model(options.model).ref, seed)
    train_ds, val_ds = _tokenize(tokenizer, data, options), _tokenize(tokenizer, val, options)
    class_weights = None
    if options.balance == "class-weight":
        pos = counts["train_positives"]
        neg = counts["train_total"] - pos
        class_weights = [counts["train_total"] / (2 * neg), counts["train_total"] / (2 * pos)]

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
        **_precision(precision),
    )
    trainer_cls = _trainer_class(class_weights)
    collator = DataCollatorWithPadding(tokenizer) if options.padding == "dynamic" else None
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, data_collator=collator,
        processing_class=tokenizer, compute_metrics=_compute_metrics,
        callbacks=[_progress_callback(progress, seed, options.epochs)],
    )
    from transformers import PrinterCallback, ProgressCallback

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

    epochs = _epoch_table(trainer.state.log_history)
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
        "counts": counts,
    }
    if not _main_process():  # under accelerate launch / torchrun, rank 0 writes the files
        return metrics
    if test_frame is not None:
        from smm4h_cli.training.predict import load_classifier

        # The saved model, as `smm4h predict` loads it: the Trainer's copy may still run under
        # mixed-precision autocast.
        saved, saved_tokenizer = load_classifier(seed_dir, device)
        metrics["test"] = _predict_test(saved, saved_tokenizer, test_frame, options, device, seed_dir)
    _write_metrics(seed_dir, metrics)  # last: it marks the seed finished
    shutil.rmtree(checkpoints, ignore_errors=True)
    return metrics


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _predict_test(model, tokenizer, test_frame: pl.DataFrame, options: TrainOptions, device: str, seed_dir: Path) -> dict | None:
    model.eval()
    probs = positive_probabilities(
        model, tokenizer, test_frame["text"].to_list(), batch_size=options.eval_batch_size,
        max_length=options.max_length, device=device,
    )
    out = with_predictions(test_frame, probs, 0.5)
    write_records(out, seed_dir / TEST_PREDICTIONS, force=True)
    if "label" not in out.columns:
        return None
    return binary_scores(out["label"], out["pred"]).to_dict()


def _predict_saved(seed_dir: Path, test_frame: pl.DataFrame, options: TrainOptions) -> dict | None:
    from smm4h_cli.models import resolve_device
    from smm4h_cli.training.predict import load_classifier

    device = resolve_device(options.device)
    model, tokenizer = load_classifier(seed_dir, device)
    return _predict_test(model, tokenizer, test_frame, options, device, seed_dir)


def _unloadable(model_ref: str, exc: Exception) -> InputError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(
        f"--model {model_ref}: could not load it ({first}). Give a folder holding a transformers model, "
        f"or a Hugging Face id of one."
    )


def preflight(
    options: TrainOptions, train: pl.DataFrame, validation: pl.DataFrame, synthetic: pl.DataFrame | None,
    source: ModelSource | None = None,
) -> ModelSource:
    """Every check that can fail on bad input, before anything is written. Returns the model's source."""
    from transformers import AutoConfig

    from smm4h_cli.models import resolve_device

    training_set(train, synthetic, "none", 0)
    _check_validation(validation)
    resolve_precision(options.precision, resolve_device(options.device))
    source = source or locate_model(options.model)
    quiet_transformers()
    try:
        AutoConfig.from_pretrained(source.ref)
    except (OSError, ValueError) as exc:
        raise _unloadable(source.name, exc) from None
    return source


def _check_validation(validation: pl.DataFrame) -> int:
    positives = int(_labelled(validation, "validation")["label"].sum())
    if positives == 0:
        raise InputError("the validation posts have no positive (label 1): the best epoch is chosen by validation F1 of label 1, which needs positives.")
    return positives


def check_out(options: TrainOptions, seeds: list[int]) -> None:
    """The run folder can take this run (checks only; nothing is changed).

    ``--force`` replaces the run folder as a whole, so it is refused for a folder that holds
    anything but a run (it would be deleted); ``--resume`` is refused with changed settings.
    """
    out = options.out
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --out takes a folder for the run.")
    check_writable(out, folder=True)  # before any model is loaded or anything trained
    existing = out.is_dir() and ((out / SUMMARY).exists() or any(seed_folder(out, s).exists() for s in seeds))
    if existing and not (options.resume or options.force):
        raise InputError(f"{out} already holds a run. Pass --resume to go on with it, --force to replace it, or choose another --out.")
    others = foreign_entries(out) if options.force and out.is_dir() else []
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(
            f"{out} holds files that are not part of a smm4h run ({shown}), and --force replaces the run folder "
            f"as a whole. Choose another --out (a new or empty folder), or move those files away."
        )
    if options.resume:
        _check_resumable(out, seeds, options.config())


def _prepare_out(options: TrainOptions, seeds: list[int]) -> None:
    out = options.out
    check_out(options, seeds)
    if options.force and out.is_dir():
        shutil.rmtree(out)  # the whole run: no seed of an earlier call is left for a reader to find
    out.mkdir(parents=True, exist_ok=True)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def train_seeds(
    options: TrainOptions,
    seeds,
    train: pl.DataFrame,
    validation: pl.DataFrame,
    synthetic: pl.DataFrame | None,
    progress: Progress | None = None,
    test_frame: pl.DataFrame | None = None,
    source: ModelSource | None = None,
) -> dict[str, Any]:
    """Train one run per seed in ``options.out/seed-N`` and write ``options.out/summary.json``.

    With ``test_frame`` each seed's best model also predicts it (``seed-N/test_predictions.jsonl``).
    With ``options.resume`` finished seeds are kept and an interrupted one goes on from its last
    checkpoint. ``source``: the model as ``locate_model`` found it (located again when None).
    Returns the summary.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds takes distinct seeds such as 1,2,3; got {seeds}.")
    source = preflight(options, train, validation, synthetic, source)
    _prepare_out(options, seeds)
    runs: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        seed_dir = seed_folder(options.out, seed)
        if options.resume and _seed_finished(seed_dir):
            metrics = json.loads((seed_dir / METRICS).read_text(encoding="utf-8"))
            metrics.pop("files", None)
            if test_frame is not None and not (seed_dir / TEST_PREDICTIONS).exists():
                metrics["test"] = _predict_saved(seed_dir, test_frame, options)
                _write_metrics(seed_dir, metrics)
            if progress is not None:
                progress({"event": "skipped", "seed": seed, "epochs": options.epochs})
        else:
            metrics = train_one(options, seed, train, validation, synthetic, seed_dir, progress, test_frame, source.ref)
        runs[str(seed)] = metrics
        if progress is not None:
            progress({"event": "seed_done", "seed": seed, "epochs": options.epochs, "metrics": metrics})

    f1s = [runs[str(s)]["best"]["f1"] for s in seeds]
    mean, std = _mean_std(f1s)
    first = runs[str(seeds[0])]
    summary: dict[str, Any] = {
        "model": options.model_name,
        "seeds": seeds,
        "balance": options.balance,
        "counts": first["counts"],
        "runs": {
            s: {"best_epoch": m["best_epoch"], **{f"best_{k}": v for k, v in m["best"].items()},
                "train_seconds": m["train_seconds"], "test": m.get("test")}
            for s, m in runs.items()
        },
        "best_f1_mean": mean,
        "best_f1_std": std,
        "config": {k: v for k, v in options.config().items() if k != "seed"},
    }
    tests = [runs[str(s)].get("test") for s in seeds]
    if all(t is not None for t in tests):
        for k in ("f1", "precision", "recall"):
            summary[f"test_{k}_mean"], summary[f"test_{k}_std"] = _mean_std([t[k] for t in tests])
    if _main_process():
        write_json(options.out / SUMMARY, summary)
    return summary
