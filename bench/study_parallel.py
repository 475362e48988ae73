"""A study's training grid one after another in one process vs as Ray tasks on this machine.

The grid: the arms that need no generation (baseline, class weighting, oversampling) × 2 seeds
on the Task 5 sample data (320 training posts), the embedded MiniLM, --epochs 2. The sequential
executor trains each run with torch's default threads (one per core); the Ray executor starts a
local cluster with this machine's CPUs and runs one training run per --cpus-per-run CPUs (1:
as many runs at once as cores, one torch thread each). Prints the wall time of each, the time
per arm, and the ratio, once with the Ray cluster's start-up counted and once without.

On two cores expect little: two one-thread runs side by side do about the work of one
two-thread run. The gain is on machines with many cores, several GPUs (--gpus-per-run) or
several machines, where the sequential executor leaves them idle.

    python bench/study_parallel.py [--epochs 2] [--seeds 0,1] [--cpus-per-run 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from smm4h_cli.io import read_records  # noqa: E402
from smm4h_cli.study.executors import ArmJob, open_executor  # noqa: E402
from smm4h_cli.study.options import ARM_BASELINE, IMBALANCE_BASELINES, StudyOptions  # noqa: E402
from smm4h_cli.study.steps import Steps  # noqa: E402

ARMS = [ARM_BASELINE, *IMBALANCE_BASELINES]


def train_grid(options: StudyOptions) -> tuple[float, float, dict[str, float]]:
    """Seconds to open the executor, seconds to train the grid, and each arm's step seconds."""
    frames = {split: read_records(options.data_path(split)) for split in ("train", "validation", "test")}
    out = options.out
    started = time.perf_counter()
    with open_executor(options) as executor:
        opened = time.perf_counter() - started
        steps = Steps(out, len(ARMS), force=True, on_event=None)
        jobs = [
            ArmJob(f"train {arm}", {"arm": arm}, [out / "runs" / arm / "summary.json"], {}, arm, out / "runs" / arm, None, keep=False, repredict=False)
            for arm in ARMS
        ]
        started = time.perf_counter()
        executor.train_arms(options, steps, jobs, frames, lambda name: None)
        trained = time.perf_counter() - started
    state = json.loads((out / "steps.json").read_text())
    return opened, trained, {arm: state[f"train {arm}"]["seconds"] for arm in ARMS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--cpus-per-run", type=float, default=1.0)
    parser.add_argument("--threads", type=int, help="torch threads of the sequential runs [default: torch's, one per core]")
    parser.add_argument("--psytar", type=Path, help="not used (make bench passes it to every script)")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    runs = len(ARMS) * len(seeds)
    cpus = len(os.sched_getaffinity(0))
    print(f"grid: {len(ARMS)} arms x {len(seeds)} seeds = {runs} training runs, {args.epochs} epochs, Task 5 sample data; {cpus} CPUs", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(task=5, epochs=args.epochs, seeds=seeds, batch_size=16, device="cpu")
        _, seq, seq_arms = train_grid(StudyOptions(out=Path(tmp) / "sequential", threads=args.threads, **common))
        start, par, par_arms = train_grid(StudyOptions(out=Path(tmp) / "ray", executor="ray", cpus_per_run=args.cpus_per_run, **common))
    print(f"sequential ({args.threads or 'default'} threads): {seq:.1f} s ({seq / len(ARMS):.1f} s per arm: " + ", ".join(f"{a} {s:.1f}" for a, s in seq_arms.items()) + ")")
    print(
        f"ray ({args.cpus_per_run:g} CPU per run): {par:.1f} s training + {start:.1f} s starting the local cluster "
        f"({par / len(ARMS):.1f} s per arm in wall time; each arm's step from start to its last seed: " + ", ".join(f"{a} {s:.1f}" for a, s in par_arms.items()) + ")"
    )
    print(f"study_parallel: sequential/ray = {seq / par:.2f}x (training only), {seq / (par + start):.2f}x (with the cluster's start-up), {cpus} CPUs")


if __name__ == "__main__":
    main()
