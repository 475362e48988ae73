"""The whole study, end to end (``smm4h study``): the paper's pipeline as library calls.

1. generate synthetic positives with each strategy (``generation``),
2. n-gram analysis, Table 3 (``analysis.ngrams``) and embedding analysis, Figure 2 and the
   diversity numbers (``analysis.clustering``) of label 0, label 1 and each synthetic set,
3. train the classifier without and with each synthetic set (and the classic imbalance
   baselines), over the seeds, predicting the test set with every model (``training``),
4. compare the arms, Table 2 with confidence intervals and significance tests,
5. write ``report.md`` and a self-contained ``report.html``.

Every step writes its files into the study folder as the standalone command would and records
a fingerprint of what it was computed from (options and the content of its input files) in
``steps.json``. A re-run skips the steps whose fingerprint is unchanged, continues an
interrupted one (generation from its call cache, training from its last checkpoint), and redoes
only the steps that a changed option or file reaches.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import polars as pl

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.io import Columns, check_writable, read_records, write_json, write_records
from smm4h_cli.sample import sample_path

STATE_FILE = "steps.json"
ARM_BASELINE = "baseline"
IMBALANCE_BASELINES = ("class-weight", "oversample")


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
        temperature, examples, concurrency: generation settings (the paper: 0 and 5+5).
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
    temperature: float = 0.0
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

    def __post_init__(self) -> None:
        self.out = Path(self.out)
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

    @classmethod
    def quick(cls, **overrides: Any) -> "StudyOptions":
        """A small run for a first look: 50 synthetic posts, 5 epochs in batches of 16, 300-post samples.

        Batches of 16 give the short training as many updates as the paper's 10 epochs of 32.
        """
        return cls(**{"n": 50, "epochs": 5, "batch_size": 16, "sample": 300, "bootstrap": 2000, **overrides})

    def data_path(self, split: str) -> Path:
        given = {"train": self.train, "validation": self.validation, "test": self.test}[split]
        return Path(given) if given is not None else sample_path(self.task, split)


@dataclass(frozen=True)
class StepEvent:
    """A step starting (``state`` = running), skipped (up to date) or finished (done)."""

    index: int
    total: int
    name: str
    state: str
    seconds: float = 0.0
    detail: str = ""


EventFn = Callable[[StepEvent], None]
#: ``progress(done, total, detail)`` within the running step: generation calls, training steps
#: (per seed) or embedded posts.
ProgressFn = Callable[[int, int, str], None]


@dataclass
class StudyResult:
    out: Path
    report_md: Path
    report_html: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Steps:
    """Runs steps in order and skips those whose fingerprint is recorded as done."""

    def __init__(self, out: Path, total: int, force: bool, on_event: EventFn | None):
        self.path = out / STATE_FILE
        self.state: dict[str, dict] = {}
        if self.path.exists() and not force:
            try:
                self.state = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.state = {}
        self.total, self.index = total, 0
        self.tell = on_event or (lambda event: None)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def is_done(self, name: str, key: Any, outputs: list[Path]) -> bool:
        """Whether ``name`` is recorded as done with the same ``key`` and its outputs exist."""
        old = self.state.get(name, {})
        return old.get("fingerprint") == fingerprint(key) and bool(old.get("done")) and all(p.exists() for p in outputs)

    def run(self, name: str, key: Any, outputs: list[Path], fn: Callable[[bool], Any], parts: dict[str, str] | None = None) -> None:
        """Run ``fn(resume)`` unless ``name`` is done with the same ``key`` and its outputs exist.

        ``resume`` is true when an earlier run of the same step with the same key was
        interrupted: the step may then continue from what that run left. ``parts`` (fingerprints
        of parts of the key) are recorded with the step, so that the next run can tell which part
        changed (``self.state[name]["parts"]``).
        """
        self.index += 1
        fp = fingerprint(key)
        old = self.state.get(name, {})
        if self.is_done(name, key, outputs):
            self.skipped.append(name)
            self.tell(StepEvent(self.index, self.total, name, "skipped", detail="up to date"))
            return
        resume = old.get("fingerprint") == fp and not old.get("done")
        extra = {"parts": parts} if parts else {}
        self.state[name] = {"fingerprint": fp, "done": False, **extra}
        self._save()
        self.tell(StepEvent(self.index, self.total, name, "running", detail="resuming" if resume else ""))
        started = time.monotonic()
        complete = fn(resume) is not False
        seconds = round(time.monotonic() - started, 1)
        # A step that returns False (generation with failed calls) stays not done: the next run
        # goes on with it, from its cache.
        self.state[name] = {"fingerprint": fp, "done": complete, "seconds": seconds, **extra}
        self._save()
        self.ran.append(name)
        self.tell(StepEvent(self.index, self.total, name, "done", seconds=seconds, detail="" if complete else "incomplete: run again to retry"))

    def _save(self) -> None:
        write_json(self.path, self.state)


def arms_of(options: StudyOptions) -> list[str]:
    arms = [ARM_BASELINE] + [f"synthetic-{s}" for s in options.strategies]
    if options.baselines:
        arms += list(IMBALANCE_BASELINES)
    return arms


def run_study(options: StudyOptions, on_event: EventFn | None = None, on_progress: ProgressFn | None = None) -> StudyResult:
    """Run (or resume) the study in ``options.out``; returns where the report is and its numbers.

    ``on_event`` hears each step start, finish or be skipped; ``on_progress`` how far the running
    step has got.
    """
    tell = on_progress or (lambda done, total, detail: None)
    from smm4h_cli.analysis.clustering import EmbedClusterOptions
    from smm4h_cli.generation.backends import backend_identity, resolve_backend
    from smm4h_cli.training.predict import set_threads
    from smm4h_cli.training.run_dir import test_prediction_files
    from smm4h_cli.training.train import TEST_PREDICTIONS, TrainOptions, preflight

    out = options.out
    # before any work: a file where the folder (or a parent) should be, a read-only location
    check_writable(out, folder=True)
    paths = {split: options.data_path(split) for split in ("train", "validation", "test")}
    frames = {split: read_records(p, options.columns, require_label=True) for split, p in paths.items()}
    # What a step was computed from: the content of its files and how their columns are read.
    digests = {split: file_digest(p) for split, p in paths.items()} | {"columns": asdict(options.columns)}
    # Fail on bad options before any work, as the standalone commands do: the generator, the
    # analysis settings, the device and the classifier base. The generator is only contacted
    # (key, server, model) when a generation has to run: a finished study re-runs offline.
    kind, model, _ = backend_identity(options.generator, options.base_url)
    for strategy in options.strategies:
        _generate_options(options, strategy, out / "synthetic" / f"{strategy}.jsonl")
    EmbedClusterOptions(k=options.k, sample=options.sample, seed=options.seed)
    preflight(
        TrainOptions(model=options.classifier, epochs=options.epochs, lr=options.lr, batch_size=options.batch_size, max_length=options.max_length, device=options.device, threads=options.threads),
        frames["train"], frames["validation"], None,
    )
    # for every step that runs torch (embedding, training, prediction), as train does for its own
    set_threads(options.threads)

    arms = arms_of(options)
    steps = _Steps(out, len(options.strategies) + 3 + len(arms), options.force, on_event)

    def generation_key(strategy: str, model_name: str | None) -> dict[str, Any]:
        return {
            "train": digests["train"], "columns": digests["columns"], "task": options.task, "n": options.n, "strategy": strategy,
            "model": model_name, "backend": kind, "base_url": options.base_url,
            "temperature": options.temperature, "examples": options.examples, "seed": options.seed,
            # only when set, so that studies made before the option keep their fingerprints
            **({"max_tokens": options.max_tokens} if options.max_tokens is not None else {}),
        }

    generations: dict[str, tuple[Path, dict[str, Any]]] = {}
    made_by: dict[str, dict[str, Any]] = {}
    for strategy in options.strategies:
        target = out / "synthetic" / f"{strategy}.jsonl"
        made_by[strategy] = _generated_by(target) or {}
        known = model
        if known is None and made_by[strategy].get("backend") == kind:
            known = made_by[strategy].get("model")  # a compatible server's default model: the one it served, as recorded
        generations[strategy] = (target, generation_key(strategy, known))
    pending = [s for s, (target, key) in generations.items() if not steps.is_done(f"generate {s}", key, _generation_outputs(target))]
    for strategy in pending:
        _refuse_silent_switch(options, generations[strategy][0], made_by[strategy], kind, model)
    backend = resolve_backend(options.generator, options.base_url) if pending else None
    for strategy in pending:
        generations[strategy] = (generations[strategy][0], generation_key(strategy, backend.model))
    out.mkdir(parents=True, exist_ok=True)
    synthetic: dict[str, Path] = {}
    with ExitStack() as stack:
        server_url: list[str] = []

        def generator_url() -> str | None:
            """One embedded server for every strategy, started only if a generation must run."""
            if backend.kind != "embedded" or backend.base_url is not None:
                return backend.base_url
            if not server_url:
                from smm4h_cli.generation.backends import embedded_server

                server_url.append(stack.enter_context(embedded_server()))
            return server_url[0]

        for strategy, (target, key) in generations.items():
            steps.run(
                f"generate {strategy}", key, _generation_outputs(target),
                lambda resume, s=strategy, t=target: _generate(options, s, t, frames["train"], backend, generator_url, tell),
            )
            synthetic[strategy] = target

    syn_frames = {s: read_records(p) for s, p in synthetic.items()}
    syn_digests = {s: file_digest(p) for s, p in synthetic.items()}
    analysis_key = {"train": digests["train"], "columns": digests["columns"], "synthetic": syn_digests, "sample": options.sample, "seed": options.seed}
    named = [("train", frames["train"])] + [(f"synthetic {s}", f) for s, f in syn_frames.items()]

    tables = out / "tables"
    steps.run("ngrams (Table 3)", analysis_key, [tables / "table3.json"], lambda resume: _ngrams(options, named, tables))
    figure = out / "figure2"
    steps.run(
        "embed-cluster (Figure 2)", {**analysis_key, "k": options.k, "device": "any"},
        [figure / "metrics.json", figure / "tsne.png"], lambda resume: _embed(options, named, figure, tell),
    )

    # A model depends on everything below but the test file and the other seeds: adding a seed
    # trains that seed alone, and a new test file has the saved models predict it again.
    model_key = {
        "train": digests["train"], "validation": digests["validation"], "columns": digests["columns"],
        "model": options.classifier, "epochs": options.epochs, "lr": options.lr, "batch_size": options.batch_size,
        "max_length": options.max_length,
    }
    for arm in arms:
        strategy = arm.removeprefix("synthetic-") if arm.startswith("synthetic-") else None
        models = fingerprint({**model_key, "arm": arm, "synthetic": syn_digests.get(strategy) if strategy else None})
        key = {"models": models, "test": digests["test"], "seeds": list(options.seeds)}
        name, run_dir = f"train {arm}", out / "runs" / arm
        before = steps.state.get(name, {}).get("parts", {})
        keep = before.get("models") == models  # the finished seeds' models are still valid
        repredict = keep and before.get("test") != digests["test"]
        steps.run(
            name, key, [run_dir / "summary.json"] + [run_dir / f"seed-{s}" / TEST_PREDICTIONS for s in options.seeds],
            lambda resume, a=arm, s=strategy, d=run_dir, k=keep, r=repredict: _train(
                options, a, d, frames, syn_frames.get(s) if s else None, resume or k, r, tell,
            ),
            parts={"models": models, "test": digests["test"]},
        )

    prediction_files = {arm: test_prediction_files(out / "runs" / arm) for arm in arms}  # the seeds each run's summary lists
    compare_key = {arm: [file_digest(p) for p in files] for arm, files in prediction_files.items()}
    steps.run(
        "compare (Table 2)", {**compare_key, "bootstrap": options.bootstrap, "seed": options.seed},
        [tables / "table2.json"], lambda resume: _compare(options, prediction_files, tables),
    )

    from smm4h_cli.study.report import write_report

    report_md, report_html, numbers = write_report(out, options, paths, frames, synthetic, arms)
    return StudyResult(out, report_md, report_html, steps.ran, steps.skipped, numbers)


# ------------------------------------------------------------------------------ the steps


def _generation_outputs(target: Path) -> list[Path]:
    return [target, target.with_suffix(".meta.json")]


def _generated_by(target: Path) -> dict[str, Any] | None:
    """The generation summary beside ``target`` (model, backend, ...), if a generation finished there."""
    try:
        return json.loads(target.with_suffix(".meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _refuse_silent_switch(options: StudyOptions, target: Path, made_by: dict[str, Any], kind: str, model: str | None) -> None:
    """Do not replace posts made by one generator with another's because the environment changed.

    With neither ``--generator`` nor ``--base-url`` the generator follows ``OPENAI_API_KEY`` and
    ``OPENAI_BASE_URL``: a study of GPT-4 posts re-run without the key would otherwise regenerate
    them with the embedded model, and a study of embedded posts re-run with a key would spend money.
    """
    if not made_by or options.generator is not None or options.base_url is not None:
        return
    if (made_by.get("backend"), made_by.get("model")) == (kind, model) or (kind == "compatible" and model is None and made_by.get("backend") == kind):
        return
    now = "the embedded SmolLM2 (no OPENAI_API_KEY or OPENAI_BASE_URL is set)" if kind == "embedded" else f"{model or 'the default model'} ({kind}, chosen by OPENAI_API_KEY/OPENAI_BASE_URL)"
    raise InputError(
        f"{target} holds posts generated by {made_by.get('model')} ({made_by.get('backend')}), and this run would generate "
        f"them again with {now}. Restore the environment the study was made with, or name the generator "
        f"with --generator (and --base-url) to generate with it on purpose."
    )


def _generate_options(options: StudyOptions, strategy: str, target: Path):
    """The generation step's options (their checks raise InputError for bad settings)."""
    from smm4h_cli.generation.generate import GenerateOptions
    from smm4h_cli.generation.prompts import builtin_task

    return GenerateOptions(
        task=builtin_task(options.task), n=options.n, strategy=strategy, model=options.generator,
        base_url=options.base_url, temperature=options.temperature, examples=options.examples,
        seed=options.seed, concurrency=options.concurrency, max_tokens=options.max_tokens,
        cache_path=target.with_suffix(".cache.jsonl"),
    )


def _generate(options: StudyOptions, strategy: str, target: Path, train: pl.DataFrame, backend, url: Callable[[], str | None], tell: ProgressFn) -> bool:
    from smm4h_cli.generation.generate import generate

    gen = _generate_options(options, strategy, target)
    running = replace(backend, base_url=url()) if backend.kind == "embedded" else backend
    frame, summary = generate(
        gen, train, backend=running,
        progress=lambda e: tell(e.calls_done, e.calls_total, f"calls; {e.posts:,} posts, {e.completion_tokens:,} tokens"),
    )
    if frame.height == 0:
        issues = ", ".join(f"{k} {v}" for k, v in {**summary.errors, **summary.parse_issues}.items() if v)
        raise RunError(
            f"generation with the {strategy} strategy gave no posts ({issues or 'no answer parsed'}); "
            "check the generator (--generator, --base-url), then run the study again."
        )
    write_records(frame, target, force=True)
    write_json(target.with_suffix(".meta.json"), summary.to_dict())
    return summary.calls_failed == 0


def _ngrams(options: StudyOptions, named: list[tuple[str, pl.DataFrame]], tables: Path) -> None:
    from smm4h_cli.analysis.groups import groups_from_frames
    from smm4h_cli.analysis.ngrams import NgramOptions, ngram_table

    rows = ngram_table(groups_from_frames(named, by_label=True), NgramOptions(sample=options.sample, seed=options.seed))
    write_json(tables / "table3.json", rows)
    write_records(pl.DataFrame(rows), tables / "table3.csv", force=True)


def _embed(options: StudyOptions, named: list[tuple[str, pl.DataFrame]], figure: Path, tell: ProgressFn) -> None:
    from smm4h_cli.analysis.clustering import EmbedClusterOptions, embed_cluster, write_outputs
    from smm4h_cli.analysis.groups import groups_from_frames, infer_roles

    synthetic, positives = infer_roles(named, [name for name, _ in named if name.startswith("synthetic ")])
    emb = EmbedClusterOptions(
        k=options.k, sample=options.sample, seed=options.seed, device=options.device,
        cache_dir=options.out / ".cache" / "embeddings", synthetic=synthetic, positives=positives,
    )
    result = embed_cluster(
        groups_from_frames(named, by_label=True), emb, progress=lambda stage, done, total: tell(done, total, "posts embedded" if stage == "embed" else stage)
    )
    write_outputs(result, figure, plot=True, seed=options.seed)


def _train(
    options: StudyOptions, arm: str, run_dir: Path, frames: dict[str, pl.DataFrame], synthetic: pl.DataFrame | None,
    resume: bool, repredict: bool, tell: ProgressFn,
) -> None:
    """Train the arm's seeds. ``resume``: keep finished seeds and go on with interrupted ones;
    ``repredict``: the test file changed, so the kept seeds predict it again."""
    from smm4h_cli.training.train import TEST_PREDICTIONS, TrainOptions, train_seeds

    if not resume:
        # the arm's models are out of date
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        # The folder holds the study's seeds only: `smm4h compare runs/<arm>` reads every seed-N in
        # it, and a seed put back later must not find predictions of an older test file.
        wanted = {f"seed-{seed}" for seed in options.seeds}
        for left_out in [d for d in run_dir.glob("seed-*") if d.name not in wanted]:
            shutil.rmtree(left_out)
        if repredict:
            for seed in options.seeds:
                (run_dir / f"seed-{seed}" / TEST_PREDICTIONS).unlink(missing_ok=True)

    balance = arm if arm in IMBALANCE_BASELINES else "none"
    train_options = TrainOptions(
        out=run_dir, model=options.classifier, epochs=options.epochs, lr=options.lr, batch_size=options.batch_size,
        max_length=options.max_length, device=options.device, threads=options.threads, balance=balance, resume=resume, force=not resume,
    )
    def step(info: dict) -> None:
        if "step" in info:
            loss = "" if info.get("loss") is None else f", loss {info['loss']:.3f}"
            f1 = "" if info.get("val_f1") is None else f", val F1 {info['val_f1']:.3f}"
            tell(info["step"], info["steps"] or 1, f"steps of seed {info['seed']}, epoch {info['epoch']:.1f}/{info['epochs']}{loss}{f1}")

    train_seeds(train_options, options.seeds, frames["train"], frames["validation"], synthetic, progress=step, test_frame=frames["test"])


def _compare(options: StudyOptions, prediction_files: dict[str, list[Path]], tables: Path) -> None:
    from smm4h_cli.training.compare import compare

    arms = list(prediction_files)
    result = compare([[read_records(p) for p in prediction_files[a]] for a in arms], arms, options.bootstrap, options.seed)
    write_json(tables / "table2.json", result.to_dict())
    write_records(pl.DataFrame(result.to_dict()["arms"]), tables / "table2.csv", force=True)
    write_records(pl.DataFrame(result.to_dict()["pairs"]), tables / "table2_pairs.csv", force=True)
