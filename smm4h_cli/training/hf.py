"""Everything that touches Hugging Face transformers: where a model comes from, loading it (one
function, one error message), the one tokenization, precision and threads, and the ``Trainer``
adapters (weighted loss, progress, metrics, the per-epoch table).

Library code never prints: transformers' own reports and bars are silenced here.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.progress import ProgressFn, report
from smm4h_cli.training.batches import LengthBuckets, length_order, post_lengths
from smm4h_cli.training.metrics import binary_scores

#: Seconds the reachability probe of the Hugging Face Hub may take, all in all (no retries).
HUB_PROBE_SECONDS = 3.0
#: Characters of a post kept for every token of ``max_length`` before tokenizing (see ``encode``).
CHARS_PER_TOKEN = 16
#: How far ``encode`` looks into a post of unusually long words, in characters per token.
_MAX_CHARS_PER_TOKEN = 1024


# ----------------------------------------------------------------------------- where a model is


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


# ----------------------------------------------------------------------------- loading


#: What to do about a model that does not load: a classifier base (``--model``), or a trained folder.
BASE_HINT = "Give a folder holding a transformers model, or a Hugging Face id of one."
TRAINED_HINT = "The folder is incomplete or a file in it is damaged: copy it again, or train again."


def quiet_transformers() -> None:
    """No load reports, warnings or tqdm bars from transformers: library code never prints."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def unloadable(name: str, exc: Exception, hint: str) -> InputError:
    """The one message for a model that does not load: what, why (the first line), how to fix it."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"{name}: could not load the model ({first}). {hint}")


def load_classifier(ref: str | Path, *, name: str | None = None, hint: str = TRAINED_HINT, new_head_seed: int | None = None, device: str | None = None, config_only: bool = False):
    """The one loader of a binary sequence classifier and its tokenizer.

    ``new_head_seed``: a base to fine-tune, whose new two-label head starts from the same weights
    for the same seed; otherwise a trained classifier, which must have two labels, moved to
    ``device`` in eval mode. ``config_only`` checks that the configuration loads and returns it.
    Any failure is an ``InputError`` naming ``name`` (default: ``ref``) and saying ``hint``.
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed

    quiet_transformers()
    name = name or str(ref)
    try:
        if config_only:
            return AutoConfig.from_pretrained(ref)
        if new_head_seed is not None:
            set_seed(new_head_seed)
            tokenizer = AutoTokenizer.from_pretrained(ref)
            model = AutoModelForSequenceClassification.from_pretrained(ref, num_labels=2, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1})
            return model, tokenizer
        tokenizer = AutoTokenizer.from_pretrained(ref)
        model = AutoModelForSequenceClassification.from_pretrained(ref)
    except (OSError, ValueError, EOFError, SafetensorError) as exc:  # a missing, truncated or corrupt file
        raise unloadable(name, exc, hint) from None
    if model.config.num_labels != 2:
        raise InputError(f"{name}: the model has {model.config.num_labels} labels; smm4h classifiers are binary (2).")
    return (model.to(device) if device else model).eval(), tokenizer


# ----------------------------------------------------------------------------- tokenization


def _prefix(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text``, ending at a space where there is one to end at."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
    return cut[:space] if space > 0 else cut


def encode(tokenizer, texts: list[str], max_length: int, padding: bool | str = False):
    """The tokens of each text, cut to ``max_length``: the one place posts are tokenized.

    A post is first cut to its first ``max_length * CHARS_PER_TOKEN`` characters (at a space), so
    that a 50 MB post costs what a short one does; where that prefix gives fewer than
    ``max_length`` tokens (very long words), a longer one is taken, so the tokens are those of the
    whole post.
    """
    limit = max_length * CHARS_PER_TOKEN
    cut = [_prefix(t, limit) for t in texts]
    encoded = tokenizer(cut, truncation=True, max_length=max_length, padding=padding)

    def n_tokens(i: int) -> int:
        mask = encoded.get("attention_mask")
        return int(sum(mask[i])) if mask is not None else len(encoded["input_ids"][i])

    for i, text in enumerate(texts):
        size = limit
        while len(cut[i]) < len(text) and n_tokens(i) < max_length and size < max_length * _MAX_CHARS_PER_TOKEN:
            size *= 4
            cut[i] = _prefix(text, size)
            again = tokenizer(cut[i], truncation=True, max_length=max_length, padding=padding)
            for key in encoded.keys():
                encoded[key][i] = again[key]
    return encoded


class Posts:
    """A list of tokenized posts, the shape the ``Trainer`` and its length grouping accept."""

    def __init__(self, features: list[dict[str, Any]]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def labelled_posts(tokenizer, texts: list[str], labels: list[int], max_length: int, pad_to_max: bool) -> Posts:
    enc = encode(tokenizer, texts, max_length, "max_length" if pad_to_max else False)
    keys = list(enc.keys())
    return Posts([{**{k: enc[k][i] for k in keys}, "labels": labels[i]} for i in range(len(labels))])


# ----------------------------------------------------------------------------- precision


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


def precision_args(precision: str) -> dict[str, bool]:
    """The ``TrainingArguments`` of a resolved precision."""
    return {"bf16": True} if precision == "bf16" else {"fp16": True} if precision == "fp16" else {}


# ----------------------------------------------------------------------------- Trainer adapters


def trainer_class(class_weights: list[float] | None):
    """The ``Trainer`` with training batches from ``LengthBuckets`` (with ``group_by_length``, on
    one process; data-parallel runs keep the ``Trainer``'s own grouping), evaluation in order of
    length, and its cross-entropy weighted by ``class_weights`` where given.

    Evaluation in order of length: an evaluation batch holds posts of similar length, so it is
    padded little (the ``Trainer``'s own length grouping of evaluation shuffles the posts in
    groups of two batches: on PsyTAR's dev split 2.5x the real tokens are computed, 1.3x in
    order). Scores of a whole set do not depend on the order of its posts; its ``predict`` would
    return predictions in length order too, so posts are predicted by ``training.predict``.
    """
    import torch
    from transformers import Trainer

    class LengthOrderedTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            grouped = self.args.train_sampling_strategy == "group_by_length"
            if not grouped or dataset is None or self.args.world_size > 1 or not hasattr(dataset, "__len__"):
                return super()._get_train_sampler(train_dataset)
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
            return LengthBuckets(post_lengths(dataset), batch, seed)

        def _get_eval_sampler(self, eval_dataset):
            if eval_dataset is None or self.args.world_size > 1 or not hasattr(eval_dataset, "__len__"):
                return super()._get_eval_sampler(eval_dataset)
            return length_order(eval_dataset)

        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is not None:
                from smm4h_cli.training import embedding_rows

                # a checkpoint of the other embedding layout (dense / rows) resumes the same; the
                # training set's rows are gathered only where a dense model fits rows-layout moments
                rows = functools.partial(embedding_rows.dataset_rows, self.train_dataset, self.processing_class)
                embedding_rows.fit_optimizer_state(self.optimizer, self.model, rows)
                check_optimizer_state(self.optimizer, checkpoint)

    if class_weights is None:
        return LengthOrderedTrainer

    class WeightedTrainer(LengthOrderedTrainer):
        """Cross-entropy weighted by inverse class frequency (``--balance class-weight``)."""

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            weight = torch.tensor(class_weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


def check_optimizer_state(optimizer, checkpoint: str) -> None:
    """A ``RunError`` where the optimizer state a checkpoint gave back does not fit the parameters
    (a checkpoint of another model or layout): AdamW would fail in its first step with a bare
    size mismatch."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            moment = optimizer.state.get(param, {}).get("exp_avg")
            if moment is not None and moment.shape != param.shape:
                raise RunError(
                    f"the checkpoint {checkpoint} cannot be resumed: its optimizer state has shape "
                    f"{tuple(moment.shape)} for a parameter of shape {tuple(param.shape)} (written for another "
                    "model or by another version of smm4h). Train again: --force replaces the run."
                )


def progress_callback(progress: ProgressFn | None, seed: int, epochs: int):
    """A ``TrainerCallback`` reporting the seed's optimizer steps (stage ``seed N``); each
    evaluation is a milestone, so a log gets an epoch line with its validation F1."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            self.loss = None
            self.f1 = None

        def _emit(self, state, evaluated: bool = False):
            epoch = round(state.epoch or 0.0) if evaluated else min(epochs, int(state.epoch or 0.0) + 1)
            loss = "–" if self.loss is None else f"{self.loss:.3f}"
            f1 = "–" if self.f1 is None else f"{self.f1:.3f}"
            report(progress, f"seed {seed}", state.global_step, state.max_steps or None, f"epoch {epoch}/{epochs} · loss {loss} · val F1 {f1}", milestone=evaluated)

        def on_train_begin(self, args, state, control, **kwargs):
            self._emit(state)

        def on_step_end(self, args, state, control, **kwargs):
            self._emit(state)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_f1" in metrics:
                self.f1 = float(metrics["eval_f1"])
            self._emit(state, evaluated=True)

    return ProgressCallback()


def compute_metrics(eval_pred) -> dict[str, float]:
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    scores = binary_scores(eval_pred.label_ids, np.asarray(logits).argmax(axis=-1))
    return {"f1": scores.f1, "precision": scores.precision, "recall": scores.recall}


def epoch_table(log_history: list[dict]) -> list[dict[str, Any]]:
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
