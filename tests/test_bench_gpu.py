"""bench/gpu.sh's CPU fallback on tiny generated data, so that the GPU check cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_cpu_fallback_runs_its_four_steps(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--cpu", "--tiny", "--posts", "60", "--work", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("gpu check: ")]
    assert [line.split()[2] for line in lines] == ["train", "predict", "embed", "t-SNE"]
    assert all(line.endswith(lines[0].rsplit("; on ", 1)[1]) and "no CUDA" in line for line in lines)
    assert (tmp_path / "run" / "summary.json").exists()
    assert sum(1 for _ in open(tmp_path / "predictions.jsonl")) == 60


def test_gpu_check_rejects_an_unknown_argument():
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown argument '--bogus'" in done.stderr
