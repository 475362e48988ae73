"""`smm4h study --executor ray` against a real local Ray cluster (2 CPUs) on tiny data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smm4h_cli.errors import RunError
from smm4h_cli.study import StudyOptions, run_study

from conftest import ROOT
from test_study import study_files

slow = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'smm4h[ray]')")

ARMS = ("baseline", "synthetic-paper")
SEEDS = (0, 1)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def python_c(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (what it imports is its own), with the repository on its path."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return study_files(tmp_path_factory.mktemp("data"))


def _given(data, out: Path, **changes) -> dict:
    """The tiny study's options; one torch thread everywhere, so that the runs compute alike."""
    base = dict(
        out=str(out), task=5, train=str(data["train"]), validation=str(data["validation"]), test=str(data["test"]),
        n=20, epochs=1, batch_size=8, max_length=48, sample=0, k=2, bootstrap=200, device="cpu", threads=1, seeds=list(SEEDS),
    )
    return {**base, **changes}


def _options(given: dict) -> StudyOptions:
    return StudyOptions(**{**given, "seeds": tuple(given["seeds"])})


RUN_SEQUENTIAL = """
import json, sys
from smm4h_cli.errors import RunError
from smm4h_cli.study import StudyOptions, run_study
given = json.loads(sys.argv[1])
run_study(StudyOptions(**{**given, "seeds": tuple(given["seeds"])}))
print(json.dumps({"ray imported": "ray" in sys.modules}))
"""


@pytest.fixture(scope="module")
def sequential(data, tmp_path_factory) -> Path:
    """The tiny study, run by the default executor in a process of its own."""
    out = tmp_path_factory.mktemp("sequential") / "s"
    done = subprocess.run([sys.executable, "-c", RUN_SEQUENTIAL, json.dumps(_given(data, out))], capture_output=True, text=True, env=ENV, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"ray imported": False}
    return out


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster of 2 CPUs, which the Ray executor joins (it is already running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _without_training(source: Path, target: Path) -> Path:
    """A copy of a finished study whose training (and Table 2) is still to do: generation and
    analysis stay done, so that the copy trains only."""
    shutil.copytree(source, target)
    shutil.rmtree(target / "runs")
    state = json.loads((target / "steps.json").read_text())
    (target / "steps.json").write_text(json.dumps({k: v for k, v in state.items() if not k.startswith(("train ", "compare"))}))
    return target


def _without_where_and_when(path: Path) -> dict:
    """A summary.json or train_config.json without the run folder's path and the seconds (the two
    studies are in two folders and took their own time)."""
    record = json.loads(path.read_text())
    config = record.get("config", record)
    config.pop("out")
    for run in record.get("runs", {}).values():
        run.pop("train_seconds")
    return record


def test_default_study_never_imports_ray():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from smm4h_cli.cli import app\n"
        "from smm4h_cli.study.executors import open_executor\n"
        "from smm4h_cli.study.run import run_study\n"
        "from smm4h_cli.study import StudyOptions\n"
        "with open_executor(StudyOptions()) as executor:\n"
        "    assert type(executor).__name__ == 'SequentialExecutor'\n"
        "assert CliRunner().invoke(app, ['study', '--help']).exit_code == 0\n"
        "print('ray' in sys.modules)\n"
    )
    done = python_c(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_without_the_extra_says_how_to_install_it(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if the extra were not installed: import ray fails\n"
        "from smm4h_cli.cli import main\n"
        f"sys.argv = ['smm4h', 'study', '--executor', 'ray', '--out', {str(tmp_path / 'study')!r}]\n"
        "main()\n"
    )
    done = python_c(code)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install 'smm4h[ray]'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "study").exists()


def test_ray_only_options_need_the_ray_executor(cli, tmp_path):
    result = cli("study", "--cpus-per-run", "2", "--out", tmp_path / "study")
    assert result.exit_code == 2
    assert "--cpus-per-run is an option of the Ray executor; add --executor ray" in result.stderr
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("address", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_address_that_does_not_answer(cli, tmp_path, address):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    given = address.format(port=port)
    result = cli("study", "--executor", "ray", "--address", given, "--out", tmp_path / "study")
    assert result.exit_code == 2
    # our own 3-second TCP check answered, not Ray's minute-long wait (no timing asserted here)
    assert f"--address {given}: nothing answers at 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "study").exists() and not ray.is_initialized()


@slow
def test_a_gpu_the_cluster_lacks_is_refused_before_any_work(cli, tmp_path, cluster):
    result = cli("study", "--executor", "ray", "--gpus-per-run", "1", "--out", tmp_path / "study")
    assert result.exit_code == 2
    assert "no node of the Ray cluster can run a training run asking 1 CPU and 1 GPU" in result.stderr
    assert "lower --gpus-per-run" in result.stderr
    assert not (tmp_path / "study").exists()


@slow
def test_same_seeds_same_predictions_as_sequential(data, sequential, cluster, tmp_path):
    out = _without_training(sequential, tmp_path / "r")
    result = run_study(_options(_given(data, out, executor="ray", cpus_per_run=1)))
    assert sorted(result.ran) == sorted([f"train {arm}" for arm in ARMS] + ["compare (Table 2)"])
    for arm in ARMS:
        for seed in SEEDS:
            rel = f"runs/{arm}/seed-{seed}/test_predictions.jsonl"
            assert (out / rel).read_bytes() == (sequential / rel).read_bytes(), rel
        for rel in [f"runs/{arm}/summary.json", f"runs/{arm}/seed-0/train_config.json"]:
            assert _without_where_and_when(out / rel) == _without_where_and_when(sequential / rel), rel
    # the same fingerprints: the sequential executor finds the Ray executor's study up to date, and back
    seq_state, ray_state = (json.loads((d / "steps.json").read_text()) for d in (sequential, out))
    assert {k: v["fingerprint"] for k, v in ray_state.items()} == {k: v["fingerprint"] for k, v in seq_state.items()}
    again = run_study(_options(_given(data, out)))
    assert again.ran == []
    again = run_study(_options(_given(data, sequential, executor="ray")))
    assert again.ran == []


@slow
def test_a_run_stopped_before_training_leaves_no_stale_models_for_the_next(data, sequential, cluster, tmp_path, monkeypatch):
    """Fault: the Ray executor recorded every arm's new models fingerprint before it cleared any
    arm's folder; a run that stopped in between (here the first arm's checks fail; on a cluster,
    the shared-folder check) left the other arm's old models beside the new fingerprint, and the
    next run kept them as trained on the new inputs."""
    from smm4h_cli.errors import InputError
    from smm4h_cli.training import train as train_module

    out = tmp_path / "v"
    shutil.copytree(sequential, out)
    models = {arm: out / f"runs/{arm}/seed-0/model.safetensors" for arm in ARMS}
    trained_before = {arm: path.stat().st_mtime_ns for arm, path in models.items()}
    validation = tmp_path / "validation.jsonl"  # other validation posts: every arm's models are out of date
    lines = data["validation"].read_text(encoding="utf-8").splitlines(keepends=True)
    validation.write_text("".join(reversed(lines)), encoding="utf-8")
    given = _given(data, out, executor="ray", validation=str(validation), seeds=[0])

    real, calls = train_module.preflight, []

    def checks_fail(*args, **kwargs):  # the study's own checks, before any step, pass; the executor's fail
        calls.append(args[0].out)
        if len(calls) == 1:
            return real(*args, **kwargs)
        raise InputError("the arm's checks fail")

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "preflight", checks_fail)
        with pytest.raises(InputError, match="the arm's checks fail"):
            run_study(_options(given))
    assert len(calls) == 2  # the first arm's checks stopped the run
    result = run_study(_options(given))
    assert {f"train {arm}" for arm in ARMS} <= set(result.ran)
    for arm, path in models.items():
        assert path.stat().st_mtime_ns > trained_before[arm], f"{arm}: the models trained on the old validation posts were kept"


def _descendants_titled(title: str) -> list[int]:
    """Processes of this test's own Ray cluster (descendants of this process) whose title starts with ``title``."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            pid = int(entry.name)
            if not cmdline.startswith(title):
                continue
            parent = pid
            while parent > 1:
                parent = int((Path("/proc") / str(parent) / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == me:
                    found.append(pid)
                    break
        except (OSError, ValueError, IndexError):
            continue
    return found


@slow
def test_a_task_killed_mid_run_is_redone(data, sequential, cluster, tmp_path):
    """The worker training a seed is killed after its first epoch's checkpoint: Ray runs the
    task again, which goes on from that checkpoint, and the study finishes."""
    out = _without_training(sequential, tmp_path / "k")
    killed: list[str] = []
    stop = threading.Event()

    def kill_after_first_checkpoint() -> None:
        while not stop.is_set() and not killed:
            states = list(out.glob("runs/*/seed-0/checkpoints/checkpoint-*/trainer_state.json"))
            arm = states[0].parents[3].name if states else None
            workers = _descendants_titled(f"ray::train {arm} seed 0") if arm else []
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(arm)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    watcher.start()
    try:
        result = run_study(_options(_given(data, out, executor="ray", cpus_per_run=1, epochs=3, seeds=[0])))
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was killed: the training finished before its first checkpoint was seen"
    metrics = json.loads((out / f"runs/{killed[0]}/seed-0/metrics.json").read_text())
    assert metrics["resumed_from"] is not None  # redone from the checkpoint the killed run left
    assert (out / f"runs/{killed[0]}/seed-0/test_predictions.jsonl").exists()
    assert json.loads((out / f"runs/{killed[0]}/summary.json").read_text())["seeds"] == [0]
    assert f"train {killed[0]}" in result.ran
    assert all(v["done"] for v in json.loads((out / "steps.json").read_text()).values())


@slow
def test_a_task_that_fails_twice_is_reported_and_retried_by_the_next_run(data, sequential, cluster, tmp_path):
    """The baseline's worker is killed on the first attempt and on the retry: the study reports
    it (exit code 1 from the CLI) after the other arm has finished; the next run trains it alone."""
    out = _without_training(sequential, tmp_path / "f")
    kills: list[int] = []
    stop = threading.Event()

    def kill_every_attempt() -> None:
        while not stop.is_set() and len(kills) < 2:
            for pid in _descendants_titled("ray::train baseline seed 0"):
                if pid not in kills:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_every_attempt, daemon=True)
    watcher.start()
    given = _given(data, out, executor="ray", seeds=[0])
    try:
        with pytest.raises(RunError, match=r"1 training run\(s\) failed on Ray, each after one retry: baseline seed 0: "):
            run_study(_options(given))
    finally:
        stop.set()
        watcher.join()
    assert len(kills) == 2
    state = json.loads((out / "steps.json").read_text())
    assert state["train synthetic-paper"]["done"] and not state["train baseline"]["done"]
    assert (out / "runs/synthetic-paper/summary.json").exists() and not (out / "runs/baseline/summary.json").exists()
    again = run_study(_options(given))
    assert again.ran == ["train baseline", "compare (Table 2)"]


@slow
def test_a_local_cluster_is_started_for_the_run_and_stopped_after(tmp_path):
    code = (
        "import os, ray\n"
        "from smm4h_cli.study import StudyOptions\n"
        "from smm4h_cli.study.executors import open_executor\n"
        "with open_executor(StudyOptions(executor='ray')) as executor:\n"
        "    cpus = ray.cluster_resources()['CPU']\n"
        "print(cpus == len(os.sched_getaffinity(0)), ray.is_initialized())\n"
    )
    done = python_c(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"]
