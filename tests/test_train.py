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

from smm4h_cli.errors import InputError
from smm4h_cli.training.metrics import binary_scores
from smm4h_cli.training.train import TrainOptions, train_seeds, training_set

from conftest import ROOT, SAMPLE, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.slow

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


def test_run_folder_is_loadable_and_complete(run):
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


def test_compare_two_run_folders(run, cli):
    out, _ = run
    result = cli("compare", out, out, "--names", "a,b", "--bootstrap", "200", "-f", "json")
    assert result.exit_code == 0, result.stderr
    pair = json.loads(result.stdout)["pairs"][0]
    assert pair["f1_diff"] == 0 and pair["mcnemar_p"] == 1.0


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


def test_existing_run_needs_resume_or_force(run, data, cli, tmp_path):
    out, _ = run
    result = cli(*_train_args(data, out, "--epochs", "2"))
    assert result.exit_code == 2 and "already holds a run" in result.stderr and "--resume" in result.stderr
    # --resume on a finished run keeps it and trains nothing
    before = (out / "seed-0" / "model.safetensors").stat().st_mtime_ns
    result = cli(*_train_args(data, out, "--epochs", "2", "--resume", "--test", data["test"]))
    assert result.exit_code == 0, result.stderr
    assert (out / "seed-0" / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--balance", "smote"], "--balance must be one of none, class-weight, oversample"),
        (["--resume", "--force"], "--resume and --force contradict"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda"),
        (["--seeds", "1,1"], "--seeds takes distinct"),
        (["--model", "/nonexistent/model"], "could not load it"),
        (["--precision", "fp8"], "--precision must be one of auto, fp32, bf16, fp16"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
    ],
)
def test_bad_options_exit_2(data, tmp_path, cli, extra, message):
    args = [a for a in _train_args(data, tmp_path / "r", *extra) if a != "--quiet"]
    result = cli(*args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "Training " not in result.stderr  # the error comes before the start line, alone
    assert not (tmp_path / "r").exists()  # nothing written


def test_bad_data_exit_2(data, tmp_path, cli):
    no_pos = write_jsonl(tmp_path / "v.jsonl", [r for r in _subset("validation", 0, 5)])
    result = cli("train", "--train", data["train"], "--validation", no_pos, "--out", tmp_path / "r", *FAST)
    assert result.exit_code == 2 and "validation posts have no positive" in result.stderr
    assert not (tmp_path / "r").exists()
    unlabelled = write_jsonl(tmp_path / "u.jsonl", [{"text": r["text"]} for r in _subset("train", 3, 3)])
    result = cli("train", "--train", unlabelled, "--validation", data["validation"], "--out", tmp_path / "r2", *FAST)
    assert result.exit_code == 2 and "has no label column" in result.stderr
    assert not (tmp_path / "r2").exists()


def test_options_validate_without_out():
    TrainOptions(model=None, epochs=10, lr=5e-5, batch_size=32, max_length=128, device="auto")
    with pytest.raises(InputError, match="--lr must be a positive number"):
        TrainOptions(lr=0)


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
    assert result.exit_code == 2 and "was started with batch_size = 8, not 4" in result.stderr


def test_train_seeds_library_api(data, tmp_path):
    """The call study.py makes: TrainOptions + train_seeds with a test frame."""
    from smm4h_cli.io import read_records

    frames = {k: read_records(data[k]) for k in ("train", "validation", "test")}
    options = TrainOptions(out=tmp_path / "lib", epochs=1, lr=3e-4, batch_size=8, max_length=32, device="cpu", threads=1, balance="class-weight", force=True)
    events = []
    summary = train_seeds(options, (0,), frames["train"], frames["validation"], None, progress=events.append, test_frame=frames["test"])
    assert summary["balance"] == "class-weight" and summary["model"] == "embedded:all-MiniLM-L6-v2"
    assert (tmp_path / "lib" / "seed-0" / "test_predictions.jsonl").exists()
    assert {"begin", "step", "evaluate", "seed_done"} <= {e["event"] for e in events}
    assert "test_f1_mean" in summary
