"""smm4h train and predict with the real embedded MiniLM on a few dozen posts (1-2 epochs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smm4h_cli.errors import InputError
from smm4h_cli.training.metrics import binary_scores
from smm4h_cli.training.train import TrainOptions, train_seeds, training_set

from conftest import ROOT, SAMPLE, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests that train or load a model carry the slow mark one by one; the checks of options, data
# and run folders that refuse before any model is loaded run in the fast lane.
slow = pytest.mark.slow

# Small and fast: 32-token posts, batches of 8, one thread, a learning rate high enough that a
# couple of epochs on 32 posts move the validation F1.
FAST = ["--max-length", "32", "--batch-size", "8", "--threads", "1", "--lr", "3e-4", "--device", "cpu", "--quiet"]


def _subset(split: str, positives: int, negatives: int) -> list[dict]:
    rows = [json.loads(line) for line in (SAMPLE / "task5" / f"{split}.jsonl").read_text().splitlines()]
    return [r for r in rows if r["label"] == 1][:positives] + [r for r in rows if r["label"] == 0][:negatives]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    synthetic = [{"id": f"s{i}", "text": f"my little one was diagnosed with asthma {i} weeks ago", "source": "synthetic"} for i in range(6)]
    return {
        "train": write_jsonl(d / "train.jsonl", _subset("train", 12, 20)),
        "validation": write_jsonl(d / "validation.jsonl", _subset("validation", 6, 10)),
        "test": write_jsonl(d / "test.jsonl", _subset("test", 6, 10)),
        "synthetic": write_jsonl(d / "synthetic.jsonl", synthetic),
    }


def _train_args(data, out, *extra):
    return ["train", "--train", data["train"], "--validation", data["validation"], "--out", out, *FAST, *extra]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One finished two-epoch run with test predictions, shared by the read-only tests."""
    from typer.testing import CliRunner

    from smm4h_cli.cli import app

    out = tmp_path_factory.mktemp("runs") / "base"
    result = CliRunner().invoke(app, [str(a) for a in _train_args(data, out, "--epochs", "2", "--test", data["test"], "--format", "json")], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout)


@slow
def test_run_folder_is_loadable_and_complete(run, data):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, rows = run
    seed_dir = out / "seed-0"
    model = AutoModelForSequenceClassification.from_pretrained(seed_dir)
    tokenizer = AutoTokenizer.from_pretrained(seed_dir)
    assert model.config.num_labels == 2 and tokenizer("a post")["input_ids"]
    assert not (seed_dir / "checkpoints").exists()  # removed once the seed is finished
    metrics = json.loads((seed_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert {"f1", "precision", "recall", "loss", "train_loss"} <= set(metrics["epochs"][0])
    import torch

    # auto precision: bf16 mixed precision where this CPU computes bf16 natively, else fp32
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert json.loads((seed_dir / "train_config.json").read_text())["precision"] == ("bf16" if native_bf16 else "fp32")
    assert metrics["counts"]["raw_train"] == 32 and metrics["counts"]["synthetic"] == 0
    assert metrics["counts"]["validation"] == 16 and metrics["train_seconds"] > 0
    config = json.loads((seed_dir / "train_config.json").read_text())
    assert config["epochs"] == 2 and config["lr"] == 3e-4 and config["max_length"] == 32 and config["model"] == "embedded:all-MiniLM-L6-v2"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "embedded:all-MiniLM-L6-v2" and summary["seeds"] == [0]
    assert summary["best_f1_mean"] == metrics["best"]["f1"] and summary["best_f1_std"] is None
    assert rows[0]["val F1"] == metrics["best"]["f1"]

    # the word embedding was trained in the rows of the training set's tokens only (no weight
    # decay: the others never change; the padding row neither) and saved whole, as a plain model
    from smm4h_cli.models import minilm_path

    base = AutoModelForSequenceClassification.from_pretrained(minilm_path()).get_input_embeddings().weight
    trained = model.get_input_embeddings().weight
    assert type(model.get_input_embeddings()) is torch.nn.Embedding and trained.shape == base.shape
    posts = [json.loads(line)["text"] for line in Path(data["train"]).read_text().splitlines()]
    tokens = {i for ids in tokenizer(posts, truncation=True, max_length=32)["input_ids"] for i in ids} - {tokenizer.pad_token_id}
    changed = set(torch.nonzero((trained != base).any(dim=1)).flatten().tolist())
    assert changed == tokens
    assert metrics["embedding_rows_trained"] == len(tokens) + 1  # the optimizer held these and the padding row

@slow
def test_best_epoch_follows_validation_f1(run, data, cli, tmp_path):
    out, _ = run
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    f1s = [e["f1"] for e in metrics["epochs"]]
    assert metrics["best_epoch"] == f1s.index(max(f1s)) + 1
    # the saved model is the best epoch's: predicting validation gives its F1 again
    result = cli("predict", out, data["validation"], "--out", tmp_path / "val.jsonl", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    pred = pl.read_ndjson(tmp_path / "val.jsonl")
    assert binary_scores(pred["label"], pred["pred"]).f1 == pytest.approx(metrics["best"]["f1"])
    assert f"F1 {metrics['best']['f1']:.3f}" in result.stderr and "confusion matrix" in result.stderr


@slow
def test_test_predictions_and_predict_schema(run, data, cli, tmp_path):
    out, _ = run
    written = pl.read_ndjson(out / "seed-0" / "test_predictions.jsonl")
    source = pl.read_ndjson(data["test"])
    assert written.columns == source.columns + ["pred", "prob"]
    assert written["id"].to_list() == source["id"].to_list()
    assert written["pred"].is_in([0, 1]).all() and written["prob"].is_between(0, 1).all()
    assert ((written["prob"] >= 0.5).cast(pl.Int64) == written["pred"]).all()
    # predict from stdin to stdout gives the same predictions; --threshold 0 labels every post 1
    text = "".join(json.dumps(r) + "\n" for r in source.drop("label").to_dicts())
    result = cli("predict", out / "seed-0", "-", "--threshold", "0", "--quiet", input=text)
    assert result.exit_code == 0, result.stderr
    piped = pl.read_ndjson(result.stdout.encode())
    assert piped.columns == ["id", "text", "pred", "prob"] and piped["pred"].to_list() == [1] * 16
    assert piped["prob"].to_list() == pytest.approx(written["prob"].to_list(), abs=1e-5)


@slow
def test_same_seed_same_model(run, data, tmp_path, cli):
    out, _ = run
    again = tmp_path / "again"
    result = cli(*_train_args(data, again, "--epochs", "2", "--test", data["test"]))
    assert result.exit_code == 0, result.stderr
    first = json.loads((out / "seed-0" / "metrics.json").read_text())["epochs"]
    second = json.loads((again / "seed-0" / "metrics.json").read_text())["epochs"]
    assert [e["f1"] for e in first] == [e["f1"] for e in second]
    assert [e["loss"] for e in first] == pytest.approx([e["loss"] for e in second], abs=1e-6)
    a = pl.read_ndjson(out / "seed-0" / "test_predictions.jsonl")["prob"]
    b = pl.read_ndjson(again / "seed-0" / "test_predictions.jsonl")["prob"]
    assert a.to_list() == pytest.approx(b.to_list(), abs=1e-5)


@slow
def test_compare_two_run_folders(run, cli):
    out, _ = run
    result = cli("compare", out, out, "--names", "a,b", "--bootstrap", "200", "-f", "json")
    assert result.exit_code == 0, result.stderr
    pair = json.loads(result.stdout)["pairs"][0]
    assert pair["f1_diff"] == 0 and pair["mcnemar_p"] == 1.0


@slow
def test_with_synthetic_adds_to_training_only(data, tmp_path, cli, monkeypatch):
    out = tmp_path / "syn"
    result = cli(*_train_args(data, out, "--epochs", "1", "--synthetic", data["synthetic"], "--seeds", "1,2"))
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["synthetic"] == 6 and counts["raw_train"] == 32 and counts["train_total"] == 38
    assert counts["train_positives"] == 12 + 6 and counts["validation"] == 16 and counts["validation_positives"] == 6
    assert summary["seeds"] == [1, 2] and summary["best_f1_std"] is not None
    assert (out / "seed-1" / "model.safetensors").exists() and (out / "seed-2" / "model.safetensors").exists()
    # a run of several seeds: predict asks which one
    bad = cli("predict", out, data["test"])
    assert bad.exit_code == 2 and "holds 2 trained seeds" in bad.stderr
    # --with-synthetic without a file where smm4h generate writes is a clear error
    monkeypatch.chdir(tmp_path)
    missing = cli(*_train_args(data, tmp_path / "x", "--with-synthetic"))
    assert missing.exit_code == 2 and "synthetic.jsonl: no such file" in missing.stderr


def test_training_set_balances():
    train = pl.DataFrame({"id": [str(i) for i in range(10)], "text": [f"t{i}" for i in range(10)], "label": [1, 1] + [0] * 8})
    data, counts = training_set(train, None, "oversample", seed=0)
    assert counts["train_total"] == 16 and counts["train_positives"] == 8 and counts["oversampled"] == 6
    again, _ = training_set(train, None, "oversample", seed=0)
    assert data.equals(again)
    syn = pl.DataFrame({"id": ["s"], "text": ["synthetic post"]})
    data, counts = training_set(train, syn, "none", seed=0)
    assert counts["synthetic"] == 1 and data.filter(pl.col("source") == "synthetic")["label"].to_list() == [1]


@slow
def test_existing_run_needs_resume_or_force(run, data, cli, tmp_path):
    out, _ = run
    result = cli(*_train_args(data, out, "--epochs", "2"))
    assert result.exit_code == 2 and "already holds a run" in result.stderr and "--resume" in result.stderr
    # --resume on a finished run keeps it and trains nothing
    before = (out / "seed-0" / "model.safetensors").stat().st_mtime_ns
    result = cli(*_train_args(data, out, "--epochs", "2", "--resume", "--test", data["test"]))
    assert result.exit_code == 0, result.stderr
    assert (out / "seed-0" / "model.safetensors").stat().st_mtime_ns == before


@slow
def test_weight_decay_trains_the_whole_embedding_table(data, cli, tmp_path):
    """--weight-decay above 0: every word-embedding row decays, so the dense embedding is kept
    (none of the training set's rows alone) and the run records the setting."""
    out = tmp_path / "wd"
    result = cli(*_train_args(data, out, "--epochs", "1", "--weight-decay", "0.01"))
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert metrics["embedding_rows_trained"] is None
    assert json.loads((out / "seed-0" / "train_config.json").read_text())["weight_decay"] == 0.01


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--balance", "smote"], "'smote' is not one of 'none', 'class-weight', 'oversample'"),
        (["--resume", "--force"], "--resume and --force contradict"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda"),
        (["--seeds", "1,1"], "--seeds gives 1 more than once"),
        (["--model", "/nonexistent/model"], "no such folder, and not a Hugging Face id"),
        pytest.param(["--model", str(ROOT / "docs")], "could not load the model", marks=slow),  # transformers tries to load it
        (["--precision", "fp8"], "--precision must be one of auto, fp32, bf16, fp16"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
        (["--weight-decay", "-0.1"], "--weight-decay must be 0 or more"),
    ],
)
def test_bad_options_exit_2(data, tmp_path, cli, extra, message):
    args = [a for a in _train_args(data, tmp_path / "r", *extra) if a != "--quiet"]
    result = cli(*args)
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.replace("│", " ").split())  # Click's usage errors come boxed and wrapped
    assert message in said and "Traceback" not in result.stderr
    assert "Training " not in result.stderr  # the error comes before the start line, alone
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize(
    "split, rows, message",
    [
        ("validation", _subset("validation", 0, 5), "validation posts have no positive"),
        ("train", [{"text": r["text"]} for r in _subset("train", 3, 3)], "has no label column"),
    ],
)
def test_bad_data_exit_2(data, tmp_path, cli, split, rows, message):
    paths = {**data, split: write_jsonl(tmp_path / f"{split}.jsonl", rows)}
    result = cli("train", "--train", paths["train"], "--validation", paths["validation"], "--out", tmp_path / "r", *FAST)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "r").exists()


def test_options_validate_without_out():
    TrainOptions(model=None, epochs=10, lr=5e-5, batch_size=32, max_length=128, device="auto")
    with pytest.raises(InputError, match="--lr must be a positive number"):
        TrainOptions(lr=0)


@slow
def test_resume_after_interruption(data, tmp_path):
    """Kill a three-epoch run after its first checkpoint; --resume finishes it from there."""
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "smm4h_cli", *map(str, _train_args(data, out, "--epochs", "3"))]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = out / "seed-0" / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = [c for c in checkpoints.glob("checkpoint-*") if (c / "trainer_state.json").exists()] if checkpoints.exists() else []
        if done:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.1)
    else:
        pytest.fail("no checkpoint was written")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "seed-0" / "metrics.json").exists()

    from typer.testing import CliRunner

    from smm4h_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in _train_args(data, out, "--epochs", "3", "--resume")], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert metrics["resumed_from"] is not None and metrics["resumed_from"].startswith("checkpoint-")
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    # and it is the run an uninterrupted training gives (the Trainer restores data order and RNG)
    whole = tmp_path / "whole"
    result = CliRunner().invoke(app, [str(a) for a in _train_args(data, whole, "--epochs", "3")], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    uninterrupted = json.loads((whole / "seed-0" / "metrics.json").read_text())
    assert [e["f1"] for e in metrics["epochs"]] == [e["f1"] for e in uninterrupted["epochs"]]
    assert [e["loss"] for e in metrics["epochs"]] == pytest.approx([e["loss"] for e in uninterrupted["epochs"]], abs=1e-6)
    # changing a setting is refused rather than silently mixed into the resumed run
    (out / "seed-0" / "metrics.json").unlink()
    (out / "seed-0" / "checkpoints").mkdir()
    result = CliRunner().invoke(app, [str(a) for a in _train_args(data, out, "--epochs", "3", "--resume", "--batch-size", "4")], catch_exceptions=False)
    assert result.exit_code == 2 and "--batch-size 8 (now 4)" in result.stderr


@slow
def test_train_seeds_library_api(data, tmp_path):
    """The call study.py makes: TrainOptions + train_seeds with a test frame."""
    from smm4h_cli.io import read_records

    frames = {k: read_records(data[k]) for k in ("train", "validation", "test")}
    options = TrainOptions(out=tmp_path / "lib", epochs=1, lr=3e-4, batch_size=8, max_length=32, device="cpu", threads=1, balance="class-weight", force=True)
    events = []
    result = train_seeds(options, (0,), frames["train"], frames["validation"], None, progress=events.append, test_frame=frames["test"])
    assert result.balance == "class-weight" and result.model == "embedded:all-MiniLM-L6-v2"
    assert (tmp_path / "lib" / "seed-0" / "test_predictions.jsonl").exists()
    # one protocol: stage "seed 0", optimizer steps, a milestone per evaluation and one at the end
    assert {e.stage for e in events} == {"seed 0"} and events[0].done == 0 and events[0].total == events[-1].total > 0
    assert [e.done for e in events] == sorted(e.done for e in events)  # begin, then steps in order
    evaluations = [e for e in events[:-1] if e.milestone]
    assert len(evaluations) == 1 and evaluations[0].detail.startswith("epoch 1/1 · loss ") and "val F1 0." in evaluations[0].detail
    assert events[-1].milestone and events[-1].detail == f"best epoch {result.runs[0].best_epoch}, validation F1 {result.runs[0].best['f1']:.3f}"
    assert "test_f1_mean" in result.to_dict() and result.test_means["f1"][0] == result.runs[0].test["f1"]
    assert json.loads((tmp_path / "lib" / "summary.json").read_text()) == json.loads(json.dumps(result.to_dict()))


def _copy_run(run, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run[0], copy)
    return copy


@slow
def test_force_replaces_the_whole_run_and_readers_take_the_summarys_seeds(run, data, cli, tmp_path):
    """Fault: --seeds 0,1 then --seeds 1 --force left seed-0, and compare averaged it in."""
    import shutil

    out = _copy_run(run, tmp_path)  # seed 0, with test predictions
    result = cli(*_train_args(data, out, "--epochs", "1", "--seeds", "1", "--test", data["test"], "--force"))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["seed-1", "summary.json"]  # seed-0 went with the old run
    # a seed folder the summary does not list (copied in, left by hand) is never read
    shutil.copytree(out / "seed-1", out / "seed-0")
    compared = cli("compare", out, out, "--names", "a,b", "--bootstrap", "200", "-f", "json")
    assert compared.exit_code == 0, compared.stderr
    assert [a["seeds"] for a in json.loads(compared.stdout)["arms"]] == [1, 1]
    predicted = cli("predict", out, data["test"], "--threads", "1", "--quiet")
    assert predicted.exit_code == 0, predicted.stderr  # one seed in the summary: no "holds 2 trained seeds"


def test_unwritable_run_folder_is_refused_before_training(data, cli, tmp_path):
    """Fault: a run folder that cannot be written gave a traceback (exit 1), after loading the model."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli(*[a for a in _train_args(data, blocker / "run", "--epochs", "1") if a != "--quiet"])
    assert result.exit_code == 2 and "cannot be written" in result.stderr and "Traceback" not in result.stderr
    assert "Training " not in result.stderr  # refused before the start line: nothing loaded, nothing trained


def test_force_refuses_to_delete_a_folder_that_is_not_a_run(data, cli, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = cli(*_train_args(data, folder, "--epochs", "1", "--force"))
    assert result.exit_code == 2 and "holds files that are not part of a smm4h run (notes.txt)" in result.stderr
    assert (folder / "notes.txt").read_text() == "keep me" and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


@slow
def test_resume_refuses_changed_settings_of_a_finished_run(run, data, cli, tmp_path):
    """Fault: with every seed finished, --resume took new settings and wrote them into summary.json."""
    out = _copy_run(run, tmp_path)
    before = (out / "summary.json").read_text()
    result = cli(*_train_args(data, out, "--epochs", "3", "--resume", "--lr", "1e-3", "--weight-decay", "0.01"))
    assert result.exit_code == 2, result.stderr
    said = " ".join(result.stderr.split())
    assert "--epochs 2 (now 3), --lr 0.0003 (now 0.001)" in said and "--weight-decay 0.0 (now 0.01)" in said and "--force to start over" in said
    assert (out / "summary.json").read_text() == before


@slow
def test_incomplete_or_damaged_seed_is_refused(run, data, cli, tmp_path):
    out = _copy_run(run, tmp_path)
    seed = out / "seed-0"
    model = seed / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    for target in (out, seed):
        result = cli("predict", target, data["test"], "--quiet")
        assert result.exit_code == 2 and "truncated or changed after training" in result.stderr, result.stderr
    compared = cli("compare", out, out, "--bootstrap", "200")
    assert compared.exit_code == 2 and "truncated" in compared.stderr
    # any other classifier folder: a damaged weights file is a message, not a SafetensorError
    (seed / "train_config.json").unlink()
    result = cli("predict", seed, data["test"], "--quiet")
    assert result.exit_code == 2 and "could not load the model" in result.stderr and "Traceback" not in result.stderr
    # an interrupted seed (no metrics.json, written last) is not taken for a model
    out = _copy_run(run, tmp_path / "b")
    (out / "seed-0" / "metrics.json").unlink()
    result = cli("predict", out / "seed-0", data["test"], "--quiet")
    assert result.exit_code == 2 and "is not a finished seed" in result.stderr and "--resume" in result.stderr


@slow
def test_a_huge_post_is_cut_before_tokenizing(run, cli, tmp_path):
    """A 5 MB post costs what a short one does, and gets the prediction of its beginning."""
    from transformers import AutoTokenizer

    from smm4h_cli.training.hf import CHARS_PER_TOKEN, encode

    sentence = "my son was diagnosed with asthma and coughs all night long. "
    huge = sentence * (5_000_000 // len(sentence))
    tokenizer = AutoTokenizer.from_pretrained(run[0] / "seed-0")
    seen: list[int] = []

    def spy(texts, **kwargs):  # the real tokenizer, recording how much text it is given
        seen.append(max(len(t) for t in ([texts] if isinstance(texts, str) else texts)))
        return tokenizer(texts, **kwargs)

    spy.pad = tokenizer.pad
    encoded = encode(spy, [huge, "short post"], 32)
    assert max(seen) <= 32 * CHARS_PER_TOKEN
    assert encoded["input_ids"][0] == tokenizer(huge[:5000], truncation=True, max_length=32)["input_ids"]
    # a post of words longer than the cut: more of it is read, and its tokens are the whole post's
    long_words = " ".join(["x" * 700] * 20)
    assert encode(tokenizer, [long_words], 8)["input_ids"] == tokenizer([long_words], truncation=True, max_length=8)["input_ids"]

    posts = write_jsonl(tmp_path / "huge.jsonl", [{"id": "huge", "text": huge}, {"id": "start", "text": huge[:2000]}])
    result = cli("predict", run[0], posts, "--threads", "1", "--quiet")
    assert result.exit_code == 0, result.stderr
    probs = pl.read_ndjson(result.stdout.encode())["prob"].to_list()
    assert probs[0] == pytest.approx(probs[1], abs=1e-6)


def _without_offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@slow
def test_model_not_in_the_cache_fails_at_once_when_the_hub_is_unreachable(data, tmp_path):
    """Fault: an unknown --model org/name spent 25 s retrying the Hub before failing."""
    env = _without_offline_env(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on port 9
    args = [sys.executable, "-m", "smm4h_cli", *map(str, _train_args(data, tmp_path / "r", "--model", "no-such-org/no-such-model"))]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "no-such-org/no-such-model is not in the local Hugging Face cache, and the Hub (http://127.0.0.1:9) cannot be reached" in done.stderr
    assert "HF_HOME" in done.stderr and "local folder" in done.stderr
    assert "Retrying" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()
    offline = subprocess.run(args, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert offline.returncode == 2 and "HF_HUB_OFFLINE is set" in offline.stderr


@slow
def test_model_in_the_local_cache_is_used_without_the_hub(tmp_path):
    import shutil

    from smm4h_cli.models import minilm_path

    hub = tmp_path / "hf" / "hub" / "models--some-org--minilm"
    shutil.copytree(minilm_path(), hub / "snapshots" / "abc123")
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("abc123")
    code = "from smm4h_cli.training.hf import locate_model; s = locate_model('some-org/minilm'); print(s.download, s.ref)"
    env = _without_offline_env(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", str(hub / "snapshots" / "abc123")]


@slow
def test_interrupted_train_names_the_command_that_goes_on(data, tmp_path):
    """Fault: after Ctrl-C the message said to run the same command again, which is refused without --resume."""
    import shlex

    out = tmp_path / "interrupted"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [a for a in map(str, _train_args(data, out, "--epochs", "1", "--force")) if a != "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "smm4h_cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (line := proc.stderr.readline()).startswith("Training "):  # past every check: the run has started
        assert line, "train ended before its start line"
    proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    assert proc.wait() == 130, stderr
    assert "Interrupted." in stderr and "go on with:" in stderr
    command = shlex.split(stderr.split("go on with:")[1].strip().splitlines()[0])
    assert command[:2] == ["smm4h", "train"] and command[-1] == "--resume" and "--force" not in command
    assert ["--epochs", "1"] == command[command.index("--epochs"): command.index("--epochs") + 2]
    from typer.testing import CliRunner

    from smm4h_cli.cli import app

    result = CliRunner().invoke(app, command[1:], catch_exceptions=False)  # the named command works
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0]


@slow
def test_progress_in_a_log_file_is_plain_lines(data, cli, tmp_path):
    """Fault: with stderr not a terminal (nohup, a cluster job's log) train showed no progress at all."""
    out = tmp_path / "logged"
    args = [a for a in _train_args(data, out, "--epochs", "2") if a != "--quiet"]
    result = cli(*args)  # CliRunner's stderr is not a terminal: the log-file mode
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    lines = [line for line in result.stderr.splitlines() if line.startswith("seed 0: ")]
    for epoch in metrics["epochs"]:  # an epoch line with its validation F1 and the time elapsed
        assert any(f"· epoch {epoch['epoch']}/2 · loss " in line and f"· val F1 {epoch['f1']:.3f} (" in line and line.endswith(" s)") for line in lines), lines
    assert lines[-1].split(" · ")[-1].startswith(f"best epoch {metrics['best_epoch']}, validation F1 {metrics['best']['f1']:.3f} (")
    kept = cli(*args, "--resume")
    assert kept.exit_code == 0 and "seed 0: " in kept.stderr and "already finished, kept" in kept.stderr


@slow
@pytest.mark.parametrize("class_weights", [None, [0.5, 2.0]])
def test_evaluation_batches_are_in_length_order(tmp_path, class_weights):
    """Validation posts are evaluated shortest first, so an evaluation batch is padded little
    (the Trainer's own grouping shuffles them in groups of two batches); every post is evaluated once."""
    from transformers import DataCollatorWithPadding, TrainingArguments

    from smm4h_cli.models import minilm_path
    from smm4h_cli.training import hf

    model, tokenizer = hf.load_classifier(minilm_path(), new_head_seed=0)
    lengths = [30, 2, 17, 5, 9, 1, 25, 12, 3, 21, 7, 14]
    posts = hf.labelled_posts(tokenizer, ["word " * n for n in lengths], [i % 2 for i in range(len(lengths))], 128, False)
    args = TrainingArguments(
        output_dir=str(tmp_path), train_sampling_strategy="group_by_length", per_device_eval_batch_size=2,
        use_cpu=True, report_to="none", disable_tqdm=True,
    )
    trainer = hf.trainer_class(class_weights)(model=model, args=args, eval_dataset=posts, data_collator=DataCollatorWithPadding(tokenizer))
    batches = list(trainer.get_eval_dataloader())
    widths = [b["input_ids"].shape[1] for b in batches]
    assert widths == sorted(widths)
    assert sorted(int(n) for b in batches for n in b["attention_mask"].sum(dim=1)) == sorted(n + 2 for n in lengths)


def _similar_lengths(batches: list[list[int]]) -> bool:
    """Posts sorted by length within the noise: of any two batches, one ends (less the noise)
    where the other starts (plus the noise)."""
    from smm4h_cli.training.batches import LENGTH_NOISE

    spans = [(min(b), max(b)) for b in batches]
    return all(
        a_hi * (1 - LENGTH_NOISE) <= b_lo * (1 + LENGTH_NOISE) or b_hi * (1 - LENGTH_NOISE) <= a_lo * (1 + LENGTH_NOISE)
        for i, (a_lo, a_hi) in enumerate(spans) for (b_lo, b_hi) in spans[i + 1:]
    )


@given(st.lists(st.integers(min_value=1, max_value=128), min_size=0, max_size=300), st.integers(min_value=1, max_value=40), st.integers(0, 2**31))
def test_length_buckets_are_batches_of_similar_length_in_random_order(lengths, batch_size, seed):
    import torch

    from smm4h_cli.training.batches import LENGTH_NOISE, length_buckets

    order = length_buckets(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    assert sorted(order) == list(range(len(lengths)))  # every post once
    assert order == length_buckets(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    full = len(lengths) // batch_size
    batches = [[lengths[i] for i in order[k * batch_size:(k + 1) * batch_size]] for k in range(full)]
    rest = [lengths[i] for i in order[full * batch_size:]]
    assert _similar_lengths(batches + ([rest] if rest else []))
    noise = LENGTH_NOISE
    if batches:  # the longest posts first, the short batch (the shortest posts) last, within the noise
        assert max(batches[0]) * (1 + noise) >= max(lengths) * (1 - noise)
        if rest:
            assert min(rest) * (1 - noise) <= min(lengths) * (1 + noise)


def test_length_buckets_pad_little_and_differ_by_epoch():
    import random

    import torch

    from smm4h_cli.training.batches import length_buckets

    rng = random.Random(0)
    lengths = [max(3, int(rng.gammavariate(4.0, 54 / 4))) for _ in range(2000)]
    generator = torch.Generator().manual_seed(0)
    first, second = (length_buckets(lengths, 32, generator=generator) for _ in range(2))

    def padding(order):
        batches = [order[i:i + 32] for i in range(0, len(order), 32)]
        return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths) - 1

    assert padding(first) < 0.06 and padding(second) < 0.06
    assert padding(rng.sample(range(2000), 2000)) > 0.5  # against random batches
    assert [sorted(first[i:i + 32]) for i in range(0, 2000, 32)] != [sorted(second[i:i + 32]) for i in range(0, 2000, 32)]
    assert first[:32] != second[:32]


@slow
def test_training_batches_come_from_length_buckets(tmp_path):
    """The Trainer's training data loader cuts the buckets: every post once an epoch, in batches
    of similar length; the order changes with the epoch (the Trainer's set_epoch) and the seed,
    and not with the random numbers drawn meanwhile."""
    import torch
    from transformers import DataCollatorWithPadding, TrainingArguments

    from smm4h_cli.models import minilm_path
    from smm4h_cli.training import hf

    model, tokenizer = hf.load_classifier(minilm_path(), new_head_seed=0)
    lengths = [(7 * i) % 61 + 1 for i in range(100)]
    posts = hf.labelled_posts(tokenizer, ["word " * n for n in lengths], [i % 2 for i in range(len(lengths))], 128, False)

    def epoch(e: int, seed: int = 0) -> list[list[int]]:
        args = TrainingArguments(
            output_dir=str(tmp_path), train_sampling_strategy="group_by_length", per_device_train_batch_size=8,
            use_cpu=True, report_to="none", disable_tqdm=True, seed=seed, data_seed=seed,
        )
        trainer = hf.trainer_class(None)(model=model, args=args, train_dataset=posts, data_collator=DataCollatorWithPadding(tokenizer))
        loader = trainer.get_train_dataloader()
        loader.set_epoch(e)
        torch.rand(1000)  # draws elsewhere do not move the order
        return [[int(n) for n in b["attention_mask"].sum(dim=1)] for b in loader]

    first = epoch(0)
    assert sorted(n for b in first for n in b) == sorted(n + 2 for n in lengths)
    assert _similar_lengths(first)
    assert epoch(0) == first
    assert epoch(1) != first
    assert epoch(0, seed=1) != first
