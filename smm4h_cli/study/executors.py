"""How the study's training runs (arm × seed) are run: one after another in this process, or as
Ray tasks on a local or an existing Ray cluster (``smm4h study --executor ray``).

Both executors write the same files: each seed folder is written by the seed's own run
(``training.train.train_seed``), and each arm's ``summary.json`` once, by the driver, after
every seed of the arm is finished (``training.train.write_summary``, as ``train_seeds`` does).
The fingerprints and the resume rules are the study's (``Steps``); the executor changes neither.

Where the files are written: on a cluster every task writes its seed folder itself, so the
study folder must be on storage that every node mounts at the same path (NFS, a parallel file
system, a cloud file store). The other way, tasks sending their files back to the driver, was
not taken: a model is 90 MB (all-MiniLM-L6-v2) to 1.7 GB (deberta-v3-large) per seed, too much
for Ray's object store to carry back for a grid of runs; and a task killed mid-run is retried
from its seed's last checkpoint only where the retry, on whichever node, sees that checkpoint.
On a cluster of more than one node the executor checks, before training, that every node sees
the study folder.

Ray is imported only by :class:`RayExecutor`: the default study never imports it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import polars as pl

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.progress import ProgressFn, report

if TYPE_CHECKING:
    from smm4h_cli.study.options import StudyOptions
    from smm4h_cli.study.steps import Steps
    from smm4h_cli.training.results import SeedResult
    from smm4h_cli.training.train import TrainOptions

RAY_EXTRA = "pip install 'smm4h[ray]'"
#: seconds to wait for a TCP answer from a Ray address before saying it does not answer
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True)
class ArmJob:
    """One arm's training step: its name, fingerprint key and outputs for ``Steps``, the arm,
    its run folder, its synthetic posts, whether its finished seeds' models are still valid
    (``keep``) and whether they must predict a changed test file again (``repredict``)."""

    name: str
    key: dict[str, Any]
    outputs: list[Path]
    parts: dict[str, str]
    arm: str
    run_dir: Path
    synthetic: pl.DataFrame | None
    keep: bool
    repredict: bool


Tell = Callable[[str], ProgressFn | None]


def open_executor(options: "StudyOptions") -> "SequentialExecutor | RayExecutor":
    """The study's executor, ready to train (Ray: connected and checked, else an ``InputError``)."""
    if options.executor == "ray":
        return RayExecutor(options)
    return SequentialExecutor()


def _arm_options(options: "StudyOptions", job: ArmJob, resume: bool) -> "TrainOptions":
    """Make the arm's run folder ready for this run; returns the arm's training options.

    Not resumed: the arm's models are out of date and its folder goes. Resumed: the folder keeps
    the study's seeds only (``smm4h compare runs/<arm>`` reads every seed-N in it, and a seed put
    back later must not find predictions of an older test file)."""
    from smm4h_cli.training.run_dir import keep_seeds

    resume = resume or job.keep
    if not resume:
        shutil.rmtree(job.run_dir, ignore_errors=True)
    else:
        keep_seeds(job.run_dir, list(options.seeds), forget_test=job.repredict)
    return options.train_options(job.arm, job.run_dir, resume=resume)


def _preparer(options: "StudyOptions", job: ArmJob, into: dict[str, "TrainOptions"]) -> Callable[[bool], None]:
    """``Steps.start``'s ``prepare`` for an arm: its run folder made ready (``_arm_options``)
    before the step records the new models' fingerprint, so that a run stopped at any point never
    leaves that fingerprint beside models trained on other inputs; the arm's options land in ``into``."""

    def prepare(resume: bool) -> None:
        into["options"] = _arm_options(options, job, resume)

    return prepare


class SequentialExecutor:
    """Every arm's seeds one after another, in this process (the default)."""

    def __enter__(self) -> "SequentialExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def train_arms(self, options: "StudyOptions", steps: "Steps", jobs: list[ArmJob], frames: dict[str, pl.DataFrame], tell: Tell) -> None:
        from smm4h_cli.training.train import train_seeds

        for job in jobs:
            prepared: dict[str, TrainOptions] = {}
            step = steps.start(job.name, job.key, job.outputs, job.parts, prepare=_preparer(options, job, prepared))
            if step is not None:
                train_seeds(
                    prepared["options"], options.seeds, frames["train"], frames["validation"], job.synthetic,
                    progress=tell(job.name), test_frame=frames["test"],
                )
                steps.finish(step)


def _train_seed_task(
    folder: str, options: "TrainOptions", seed: int, train: pl.DataFrame, validation: pl.DataFrame, synthetic: pl.DataFrame | None, test: pl.DataFrame,
) -> "SeedResult":
    """One seed, as a Ray task. It works in the driver's folder (``folder``), so that a relative
    --out means the same on every node and the files record the paths the sequential run
    records; the model is located on the node. Torch uses the task's CPUs (Ray sets
    OMP_NUM_THREADS to them) and its GPUs (CUDA_VISIBLE_DEVICES)."""
    from smm4h_cli.training.train import train_seed

    os.chdir(folder)
    return train_seed(options, seed, train, validation, synthetic, None, test)


def _sees_file(path: str, token: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False


class RayExecutor:
    """Every arm × seed as a Ray task asking ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs,
    retried once if it fails or its worker dies (``max_retries=1``, ``retry_exceptions``).

    Without ``address`` a local Ray cluster is started for the run with this machine's CPUs and
    shut down after it; ``auto`` joins the cluster running on this machine (``ray start --head``);
    ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT`` a remote one. Bad input (Ray not installed,
    an address that does not answer, a request no node can meet) is an ``InputError`` raised
    here, before any work. A process that has called ``ray.init`` itself (a library caller, the
    tests) is run on that cluster, which is left running."""

    def __init__(self, options: "StudyOptions"):
        try:
            import ray
        except ImportError:
            raise InputError(f"--executor ray needs Ray, an optional extra of smm4h: {RAY_EXTRA}. Or leave --executor out to train in this process.") from None
        self.ray = ray
        self.cpus = options.cpus_per_run if options.cpus_per_run is not None else 1.0
        self.gpus = options.gpus_per_run if options.gpus_per_run is not None else 0.0
        self.started = False
        if not ray.is_initialized():
            self._connect(options.address)
            self.started = True
        try:
            self._check_resources()
        except InputError:
            self.close()
            raise

    def _connect(self, address: str | None) -> None:
        import logging

        ray = self.ray
        quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
        if address is None:
            ray.init(num_cpus=_machine_cpus(), include_dashboard=False, **quiet)
            return
        if address != "auto":
            host, port = _host_port(address)
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
            except OSError as exc:
                raise InputError(
                    f"--address {address}: nothing answers at {host}:{port} ({exc.strerror or exc}). Start the cluster "
                    f"(ray start --head on {host}) or give its address, or leave --address out to start a local one."
                ) from None
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as exc:  # no cluster; a cluster of another Ray or Python version
            hint = "no Ray cluster runs on this machine: start one with ray start --head, or leave --address out to start one for the run." if address == "auto" else str(exc)
            raise InputError(f"--address {address}: {hint}") from None

    def _check_resources(self) -> None:
        """Some node can run a training run with the resources it asks (else it would wait forever)."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= self.cpus and r.get("GPU", 0) >= self.gpus for r in nodes):
            return
        total = self.ray.cluster_resources()
        asked = f"{self.cpus:g} CPU" + (f" and {self.gpus:g} GPU" if self.gpus else "")
        has = f"{total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU in all, the largest node " + (
            f"{max(r.get('CPU', 0) for r in nodes):g} CPU, {max(r.get('GPU', 0) for r in nodes):g} GPU" if nodes else "absent"
        )
        fix = "lower --gpus-per-run (0 trains on CPU)" if self.gpus and not any(r.get("GPU", 0) >= self.gpus for r in nodes) else "lower --cpus-per-run"
        raise InputError(f"no node of the Ray cluster can run a training run asking {asked} (the cluster has {has}): {fix}, or add such a node.")

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False

    def _check_shared(self, folder: Path) -> None:
        """Every node of a cluster sees the study folder, where the tasks write."""
        ray = self.ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) < 2:
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = folder / f".ray-probe-{secrets.token_hex(4)}"
        token = secrets.token_hex(8)
        probe.write_text(token, encoding="utf-8")
        try:
            task = ray.remote(_sees_file)
            seen = ray.get([
                task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe), token)
                for n in nodes
            ])
        finally:
            probe.unlink(missing_ok=True)
        blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, seen) if not ok]
        if blind:
            raise InputError(
                f"the study folder {folder} is not visible on the Ray node(s) {', '.join(blind)}: the training runs write "
                "into it on every node. Put it on storage every node mounts at the same path (NFS, a shared file system) "
                "and give that path as --out."
            )

    def train_arms(self, options: "StudyOptions", steps: "Steps", jobs: list[ArmJob], frames: dict[str, pl.DataFrame], tell: Tell) -> None:
        from smm4h_cli.training.run_dir import prepare_out
        from smm4h_cli.training.train import preflight, write_summary

        ray = self.ray
        if all(steps.is_done(job.name, job.key, job.outputs) for job in jobs):
            for job in jobs:
                steps.start(job.name, job.key, job.outputs, job.parts)  # each reported as up to date
            return
        self._check_shared(options.out.resolve())  # before any step is recorded as running
        started: list[tuple[ArmJob, Any, TrainOptions]] = []
        for job in jobs:
            prepared: dict[str, TrainOptions] = {}
            step = steps.start(job.name, job.key, job.outputs, job.parts, prepare=_preparer(options, job, prepared))
            if step is not None:
                started.append((job, step, prepared["options"]))
        for job, _, train_options in started:  # every arm's checks before any task
            preflight(train_options, frames["train"], frames["validation"], job.synthetic)
        task = ray.remote(_train_seed_task)
        asks = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=1, retry_exceptions=True)
        shared = {split: ray.put(frames[split]) for split in ("train", "validation", "test")}
        pending: dict[Any, tuple[int, int]] = {}  # task -> (arm's place in `started`, seed)
        arms: list[dict[str, Any]] = []
        for i, (job, step, train_options) in enumerate(started):
            prepare_out(train_options.out, list(options.seeds), resume=train_options.resume, force=train_options.force, config=train_options.config())
            # the driver has made the folder ready; each task keeps a finished seed or goes on from its checkpoint
            in_task = replace(train_options, resume=True, force=False)
            synthetic = ray.put(job.synthetic) if job.synthetic is not None else None
            arms.append({"options": train_options, "runs": {}, "progress": tell(job.name)})
            for seed in options.seeds:
                # named as the study names the run: the Ray dashboard and the worker's process title show it
                ref = task.options(**asks, name=f"train {job.arm} seed {seed}").remote(os.getcwd(), in_task, seed, shared["train"], shared["validation"], synthetic, shared["test"])
                pending[ref] = (i, seed)
        failures: list[str] = []
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i, seed = pending.pop(done[0])
                arm = arms[i]
                try:
                    run = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    failures.append(f"{started[i][0].arm} seed {seed}: {_cause(exc)}")
                    continue
                arm["runs"][seed] = run
                detail = "already finished, kept" if run.kept else f"best epoch {run.best_epoch}, validation F1 {run.best['f1']:.3f}"
                report(arm["progress"], f"seed {seed}", len(arm["runs"]), len(options.seeds), detail, milestone=True)
                if len(arm["runs"]) == len(options.seeds):
                    write_summary(arm["options"], [arm["runs"][s] for s in options.seeds])
                    steps.finish(started[i][1])
        finally:
            for ref in pending:  # interrupted: the runs still queued or running on a cluster stop too
                ray.cancel(ref, force=True)
        if failures:
            raise RunError(
                f"{len(failures)} training run(s) failed on Ray, each after one retry: {'; '.join(failures)}. "
                "The other arms are finished; run the study again to retry the failed ones."
            )


def _cause(exc: Exception) -> str:
    """The task's own error where it raised one (its last line), else Ray's (a worker died)."""
    cause = getattr(exc, "cause", None)
    text = str(cause) if cause is not None else str(exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _host_port(address: str) -> tuple[str, int]:
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address takes auto, ray://HOST:PORT (Ray Client, port 10001) or HOST:PORT (the head's GCS, port 6379); got '{address}'.")
    return host.strip("[]"), int(port)
