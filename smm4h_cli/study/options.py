"""The study's options: what to generate, analyse and train, with the paper's defaults.

:meth:`StudyOptions.train_options` is the one mapping from the study's options to training's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smm4h_cli.errors import InputError
from smm4h_cli.io import Columns
from smm4h_cli.sample import sample_path

if TYPE_CHECKING:
    from smm4h_cli.training.train import TrainOptions

ARM_BASELINE = "baseline"
IMBALANCE_BASELINES = ("class-weight", "oversample")
#: The dose study's selection rules (see :mod:`smm4h_cli.study.dose`), in the order the grid shows them.
SELECTIONS = ("none", "dedup", "confidence", "diverse")
DOSE_UNITS = ("multiple", "posts")
EXECUTORS = ("sequential", "ray")


@dataclass
class StudyOptions:
    """Options of the study; the defaults are the paper's except the embedded models.

    Attributes:
        out: the study folder.
        task: 5 or 6, the built-in label definitions and default data.
        train, validation, test: data files; None takes the task's sample data.
        columns: column mapping of the data files.
        n: synthetic posts per strategy (the paper: 1,000).
        strategies: generation strategies, ``paper`` and/or ``attributes``.
        generator: model name for generation; None: the backend's default (the embedded SmolLM2
            unless ``base_url``/``OPENAI_BASE_URL``/``OPENAI_API_KEY`` say otherwise).
        base_url: an OpenAI-compatible server for generation.
        temperature: generation temperature; None: the paper's 0, or the embedded SmolLM2's tuned value.
        examples, concurrency: generation settings (the paper: 5+5).
        output_format, fill: as ``generate --output-format`` and ``--fill`` (``n`` then counts posts kept).
        max_tokens: completion tokens per generation call; None: the server's default (512 for
            SmolLM2).
        classifier: classifier base; None: the embedded all-MiniLM-L6-v2.
        epochs, lr, batch_size, max_length: training settings (the paper: 10 epochs, 5e-5).
        seeds: training seeds per arm.
        baselines: also train with class weighting and with oversampling.
        sample: posts per group in the n-gram and embedding analyses (the paper: 1,000).
        k: k-means clusters (or "auto").
        seed: seed of generation, sampling, clustering and the bootstrap.
        bootstrap: paired bootstrap resamples.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: torch CPU threads of training, prediction and embedding; None keeps torch's
            default. Not part of any step's fingerprint: changing it redoes nothing.
        force: redo every step.
        definitions: a YAML/JSON file of the user's own binary task (label definitions and kind of
            post, as ``generate --definitions``); None: the SMM4H task's built-in definitions.
        doses: the dose-response grid (``--doses``); empty: the paper's two-arm study. Each dose is
            a multiple of the real positives in the training set (``dose_unit`` ``multiple``) or a
            number of synthetic posts (``posts``); 0 is the baseline.
        dose_unit: ``multiple`` or ``posts``.
        selections: the selection rules of the grid (``none``, ``dedup``, ``confidence``, ``diverse``).
        overgenerate: the pool generated once for the grid holds the largest dose times this
            factor (room for what ``dedup`` and ``confidence`` drop).
        executor: how the training runs (arm × seed) are run: ``sequential`` (one after another
            in this process) or ``ray`` (as Ray tasks; see ``study.executors``).
        address: with ``ray``, the cluster: None starts a local one for the run, ``auto`` joins
            the one running on this machine, ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT``
            a remote one.
        gpus_per_run, cpus_per_run: with ``ray``, what each training run asks of the cluster
            (fractions of a GPU share one).
        The last four are not part of any step's fingerprint: changing them redoes nothing.
    """

    out: Path = Path("study")
    task: int = 5
    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    columns: Columns = Columns()
    n: int = 1000
    strategies: tuple[str, ...] = ("paper",)
    generator: str | None = None
    base_url: str | None = None
    temperature: float | None = None
    output_format: str = "auto"
    fill: bool = False
    examples: int = 5
    concurrency: int = 4
    max_tokens: int | None = None
    classifier: str | None = None
    epochs: int = 10
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    seeds: tuple[int, ...] = (0,)
    baselines: bool = False
    sample: int = 1000
    k: int | str = 10
    seed: int = 0
    bootstrap: int = 10_000
    device: str = "auto"
    threads: int | None = None
    force: bool = False
    definitions: Path | None = None
    doses: tuple[float, ...] = ()
    dose_unit: str = "multiple"
    selections: tuple[str, ...] = ("none",)
    overgenerate: float = 1.5
    executor: str = "sequential"
    address: str | None = None
    gpus_per_run: float | None = None
    cpus_per_run: float | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self._check_doses()
        if self.task not in (5, 6):
            raise InputError(f"--task must be 5 or 6; got {self.task}.")
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise InputError(f"--strategies takes distinct strategies such as paper,attributes; got {list(self.strategies)}.")
        from smm4h_cli.generation.generate import STRATEGIES

        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise InputError(f"unknown strategy '{unknown[0]}' in --strategies; choose from {', '.join(STRATEGIES)}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"--seeds takes distinct seeds such as 1,2,3; got {list(self.seeds)}.")
        if self.n < 1:
            raise InputError(f"--n must be at least 1; got {self.n}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1; got {self.threads}.")
        if self.executor not in EXECUTORS:
            raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}; got '{self.executor}'.")
        ray_only = [flag for flag, value in (("--address", self.address), ("--gpus-per-run", self.gpus_per_run), ("--cpus-per-run", self.cpus_per_run)) if value is not None]
        if ray_only and self.executor != "ray":
            raise InputError(f"{ray_only[0]} is an option of the Ray executor; add --executor ray, or leave it out.")
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise InputError(f"--gpus-per-run must be 0 or more; got {self.gpus_per_run}.")
        if self.cpus_per_run is not None and self.cpus_per_run <= 0:
            raise InputError(f"--cpus-per-run must be more than 0; got {self.cpus_per_run}.")

    def _check_doses(self) -> None:
        if self.definitions is not None:
            self.definitions = Path(self.definitions)
            if self.train is None or self.validation is None or self.test is None:
                raise InputError("--definitions gives your own task, so give its labelled posts with --train, --validation and --test too.")
        if self.dose_unit not in DOSE_UNITS:
            raise InputError(f"--dose-unit must be one of {', '.join(DOSE_UNITS)}; got '{self.dose_unit}'.")
        bad = [d for d in self.doses if not (d >= 0 and d != float("inf"))]  # NaN fails d >= 0
        if bad:
            raise InputError(f"--doses must be numbers of at least 0 (0 is the baseline); got {bad[0]}. Example: --doses 0,0.5,1,2.")
        if len(set(self.doses)) != len(self.doses):
            raise InputError(f"--doses takes distinct doses such as 0,0.5,1; got {list(self.doses)}.")
        if self.dose_unit == "posts" and any(d != int(d) for d in self.doses):
            raise InputError(f"with --dose-unit posts, --doses are whole numbers of synthetic posts; got {list(self.doses)}.")
        unknown = [s for s in self.selections if s not in SELECTIONS]
        if unknown:
            raise InputError(f"unknown selection '{unknown[0]}' in --selections; choose from {', '.join(SELECTIONS)}.")
        if not self.selections or len(set(self.selections)) != len(self.selections):
            raise InputError(f"--selections takes distinct rules such as none,dedup; got {list(self.selections)}.")
        if self.overgenerate < 1:
            raise InputError(f"--overgenerate must be at least 1 (the pool holds the largest dose times it); got {self.overgenerate}.")
        if self.doses:
            if not any(d > 0 for d in self.doses):
                raise InputError(f"--doses needs at least one dose above 0 (0 is the baseline); got {list(self.doses)}.")
            if len(self.strategies) != 1:
                raise InputError(f"the dose study generates one pool with one strategy; give one in --strategies, got {list(self.strategies)}.")
            if self.baselines:
                raise InputError("--baselines belongs to the two-arm study; run it without --doses.")

    def task_definition(self):
        """The label definitions the generator is given: the user's file, or the SMM4H task's."""
        from smm4h_cli.generation.prompts import builtin_task, load_definitions

        return load_definitions(self.definitions) if self.definitions is not None else builtin_task(self.task)

    @classmethod
    def quick(cls, **overrides: Any) -> "StudyOptions":
        """A small run for a first look: 50 synthetic posts, 5 epochs in batches of 16, 300-post samples.

        Batches of 16 give the short training as many updates as the paper's 10 epochs of 32.
        """
        return cls(**{"n": 50, "epochs": 5, "batch_size": 16, "sample": 300, "bootstrap": 2000, **overrides})

    def data_path(self, split: str) -> Path:
        given = {"train": self.train, "validation": self.validation, "test": self.test}[split]
        return Path(given) if given is not None else sample_path(self.task, split)

    def train_options(self, arm: str, out: Path, resume: bool = False) -> "TrainOptions":
        """The training options of one arm: the one mapping from the study's options to training's.

        The imbalance baselines train with their ``balance``; ``resume`` goes on with the seeds
        in ``out`` (else an existing run there is replaced).
        """
        from smm4h_cli.training.train import TrainOptions

        return TrainOptions(
            out=out, model=self.classifier, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            max_length=self.max_length, device=self.device, threads=self.threads,
            balance=arm if arm in IMBALANCE_BASELINES else "none", resume=resume, force=not resume,
        )


def arms_of(options: StudyOptions) -> list[str]:
    arms = [ARM_BASELINE] + [f"synthetic-{s}" for s in options.strategies]
    if options.baselines:
        arms += list(IMBALANCE_BASELINES)
    return arms
