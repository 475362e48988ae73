"""The study's steps, shared by the paper's two-arm study and the dose-response grid.

Each step writes its files into the study folder as the standalone command would and records a
fingerprint of what it was computed from (options and the content of its input files) through
:class:`smm4h_cli.study.steps.Steps`: generation per strategy, the n-gram and embedding analyses,
training each arm over the seeds (through the executor: in process, or on Ray), and Table 2.
:mod:`smm4h_cli.study.run` runs them in order; :mod:`smm4h_cli.study.dose` runs them for the grid.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import polars as pl

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.io import read_records, write_json, write_records
from smm4h_cli.progress import ProgressFn
from smm4h_cli.study.executors import ArmJob
from smm4h_cli.study.layout import StudyLayout
from smm4h_cli.study.options import ARM_BASELINE, StudyOptions
from smm4h_cli.study.steps import Steps, file_digest, fingerprint


@dataclass
class StudyResult:
    out: Path
    report_md: Path
    report_html: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)




@dataclass
class _Study:
    """One run of the study: its options, folder, step runner, input data and progress callback."""

    options: StudyOptions
    layout: StudyLayout
    steps: Steps
    paths: dict[str, Path]
    frames: dict[str, pl.DataFrame]
    #: what a step was computed from: the content of the data files and how their columns are read
    digests: dict[str, Any]
    progress: ProgressFn | None
    #: how the training runs are run (``study.executors``)
    executor: Any

    def tell(self, step: str) -> ProgressFn | None:
        """The running step's progress: the library's events, staged by the step's name (the
        library's own stage, such as "seed 0", leads the detail; milestones stay milestones)."""
        if self.progress is None:
            return None
        progress = self.progress
        # the library's stage leads the detail unless the step's name already says it ("generate paper")
        return lambda e: progress(replace(e, stage=step, detail=" · ".join(
            part for part in (None if e.stage in step else e.stage, e.detail) if part
        )))


def _check_options(options: StudyOptions, layout: StudyLayout, frames: dict[str, pl.DataFrame]) -> tuple[str, str | None]:
    """Fail on bad options before any work, as the standalone commands do: the generator, the
    analysis settings, the device and the classifier base. Returns the generator's backend kind
    and model (None: the server's default).

    The generator is only contacted (key, server, model) when a generation has to run: a
    finished study re-runs offline.
    """
    from smm4h_cli.analysis.clustering import EmbedClusterOptions
    from smm4h_cli.generation.backends import backend_identity
    from smm4h_cli.training.train import preflight

    kind, model, _ = backend_identity(options.generator, options.base_url)
    for strategy in options.strategies:
        _generate_options(options, strategy, layout.synthetic(strategy))
    EmbedClusterOptions(k=options.k, sample=options.sample, seed=options.seed)
    preflight(options.train_options(ARM_BASELINE, layout.run(ARM_BASELINE)), frames["train"], frames["validation"], None)
    return kind, model


def _temperature(asked: float | None, kind: str) -> float:
    from smm4h_cli.generation.plan import EMBEDDED_TEMPERATURE

    return asked if asked is not None else EMBEDDED_TEMPERATURE if kind == "embedded" else 0.0


def _format_key(asked: str, kind: str) -> dict[str, str]:
    """The output format's part of the generation fingerprint. Studies made before ``--output-format``
    meant ``auto``, and keep their fingerprints where ``auto`` still means what it did (every backend
    but the embedded one); the embedded model's ``auto`` became JSON, and an explicit format counts.
    The embedded model's JSON is a grammar of the post's shape: when that shape changes, so do its posts."""
    if kind == "embedded":
        from smm4h_cli.generation.structured import POST_PATTERN, known_format

        name = known_format(asked, kind, None).name
        return {"output_format": name, **({"post_pattern": POST_PATTERN} if name == "json" else {})}
    return {} if asked == "auto" else {"output_format": asked}


def _generation_key(study: _Study, strategy: str, kind: str, model_name: str | None) -> dict[str, Any]:
    options = study.options
    return {
        "train": study.digests["train"], "columns": study.digests["columns"], "task": options.task, "n": options.n, "strategy": strategy,
        "model": model_name, "backend": kind, "base_url": options.base_url,
        "temperature": _temperature(options.temperature, kind), "examples": options.examples, "seed": options.seed,
        # only when set, so that studies made before the option keep their fingerprints
        **({"max_tokens": options.max_tokens} if options.max_tokens is not None else {}),
        **_format_key(options.output_format, kind),
        **({"fill": True} if options.fill else {}),
        **({"definitions": file_digest(options.definitions)} if options.definitions is not None else {}),
    }


def _generation_steps(study: _Study, kind: str, model: str | None) -> dict[str, Path]:
    """Generate the synthetic posts of each strategy (one step each); returns their files."""
    from smm4h_cli.generation.backends import resolve_backend

    options, steps = study.options, study.steps
    generations: dict[str, tuple[Path, dict[str, Any]]] = {}
    made_by: dict[str, dict[str, Any]] = {}
    for strategy in options.strategies:
        target = study.layout.synthetic(strategy)
        made_by[strategy] = _generated_by(target) or {}
        known = model
        if known is None and made_by[strategy].get("backend") == kind:
            known = made_by[strategy].get("model")  # a compatible server's default model: the one it served, as recorded
        generations[strategy] = (target, _generation_key(study, strategy, kind, known))
    pending = [s for s, (target, key) in generations.items() if not steps.is_done(f"generate {s}", key, _generation_outputs(target))]
    for strategy in pending:
        _refuse_silent_switch(options, generations[strategy][0], made_by[strategy], kind, model)
    backend = resolve_backend(options.generator, options.base_url) if pending else None
    for strategy in pending:
        generations[strategy] = (generations[strategy][0], _generation_key(study, strategy, kind, backend.model))
    study.layout.out.mkdir(parents=True, exist_ok=True)
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
            name = f"generate {strategy}"
            steps.run(
                name, key, _generation_outputs(target),
                lambda resume, s=strategy, t=target, n=name: _generate(options, s, t, study.frames["train"], backend, generator_url, study.tell(n)),
            )
    return {strategy: target for strategy, (target, _) in generations.items()}


def _analysis_steps(study: _Study, syn_frames: dict[str, pl.DataFrame], syn_digests: dict[str, str]) -> None:
    """Table 3 (n-grams) and Figure 2 with the diversity measures (embeddings) of every group."""
    options, layout = study.options, study.layout
    analysis_key = {
        "train": study.digests["train"], "columns": study.digests["columns"], "synthetic": syn_digests,
        "sample": options.sample, "seed": options.seed,
    }
    named = [("train", study.frames["train"])] + [(f"synthetic {s}", f) for s, f in syn_frames.items()]
    study.steps.run("ngrams (Table 3)", analysis_key, [layout.table("table3")], lambda resume: _ngrams(options, named, layout))
    name = "embed-cluster (Figure 2)"
    study.steps.run(
        name, {**analysis_key, "k": options.k, "device": "any"},
        [layout.figure2_metrics, layout.figure2_plot], lambda resume: _embed(options, named, layout.figure2, study.tell(name)),
    )


def _training_steps(study: _Study, arms: list[str], syn_frames: dict[str, pl.DataFrame], syn_digests: dict[str, str]) -> None:
    """Train each arm over the seeds (one step per arm), predicting the test posts with every model."""
    from smm4h_cli.training.run_dir import TEST_PREDICTIONS, seed_dir

    options, digests, steps = study.options, study.digests, study.steps
    # A model depends on everything below but the test file and the other seeds: adding a seed
    # trains that seed alone, and a new test file has the saved models predict it again.
    model_key = {
        "train": digests["train"], "validation": digests["validation"], "columns": digests["columns"],
        "model": options.classifier, "epochs": options.epochs, "lr": options.lr, "batch_size": options.batch_size,
        "max_length": options.max_length,
    }
    jobs: list[ArmJob] = []
    for arm in arms:
        strategy = arm.removeprefix("synthetic-") if arm.startswith("synthetic-") else None
        models = fingerprint({**model_key, "arm": arm, "synthetic": syn_digests.get(strategy) if strategy else None})
        key = {"models": models, "test": digests["test"], "seeds": list(options.seeds)}
        name, run_dir = f"train {arm}", study.layout.run(arm)
        before = steps.parts(name)
        keep = before.get("models") == models  # the finished seeds' models are still valid
        jobs.append(ArmJob(
            name, key, [study.layout.run_summary(arm)] + [seed_dir(run_dir, s) / TEST_PREDICTIONS for s in options.seeds],
            {"models": models, "test": digests["test"]}, arm, run_dir, syn_frames.get(strategy) if strategy else None,
            keep=keep, repredict=keep and before.get("test") != digests["test"],
        ))
    study.executor.train_arms(options, steps, jobs, study.frames, study.tell)


def _compare_step(study: _Study, arms: list[str]) -> None:
    """Table 2: the arms compared on the test posts, from the seeds each run's summary lists."""
    from smm4h_cli.training.run_dir import test_prediction_files

    prediction_files = {arm: test_prediction_files(study.layout.run(arm)) for arm in arms}
    compare_key = {arm: [file_digest(p) for p in files] for arm, files in prediction_files.items()}
    study.steps.run(
        "compare (Table 2)", {**compare_key, "bootstrap": study.options.bootstrap, "seed": study.options.seed},
        [study.layout.table("table2")], lambda resume: _compare(study.options, prediction_files, study.layout),
    )

# ------------------------------------------------------------------------------ the steps


def _generation_outputs(target: Path) -> list[Path]:
    return [target, StudyLayout.meta(target)]


def _generated_by(target: Path) -> dict[str, Any] | None:
    """The generation summary beside ``target`` (model, backend, ...), if a generation finished there."""
    try:
        return json.loads(StudyLayout.meta(target).read_text(encoding="utf-8"))
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
    return GenerateOptions(
        task=options.task_definition(), n=options.n, strategy=strategy, model=options.generator,
        base_url=options.base_url, temperature=options.temperature, examples=options.examples,
        seed=options.seed, concurrency=options.concurrency, max_tokens=options.max_tokens,
        output_format=options.output_format, fill=options.fill, cache_path=StudyLayout.call_cache(target),
    )


def _generate(options: StudyOptions, strategy: str, target: Path, train: pl.DataFrame, backend, url: Callable[[], str | None], progress: ProgressFn | None) -> bool:
    from smm4h_cli.generation.generate import generate, nothing_to_write

    gen = _generate_options(options, strategy, target)
    running = replace(backend, base_url=url()) if backend.kind == "embedded" else backend
    frame, summary = generate(gen, train, backend=running, progress=progress)
    if nothing_to_write(summary) is not None:  # the one rule of `smm4h generate`: no post kept, nothing written
        issues = ", ".join(f"{k} {v}" for k, v in {**summary.errors, **summary.parse_issues}.items() if v)
        raise RunError(
            f"generation with the {strategy} strategy gave no posts ({issues or 'no answer parsed'}); "
            "check the generator (--generator, --base-url), then run the study again."
        )
    write_records(frame, target, force=True)
    write_json(StudyLayout.meta(target), summary.to_dict())
    return summary.calls_failed == 0


def _ngrams(options: StudyOptions, named: list[tuple[str, pl.DataFrame]], layout: StudyLayout) -> None:
    from smm4h_cli.analysis.groups import groups_from_frames
    from smm4h_cli.analysis.ngrams import NgramOptions, ngram_table

    rows = ngram_table(groups_from_frames(named, by_label=True), NgramOptions(sample=options.sample, seed=options.seed))
    write_json(layout.table("table3"), rows)
    write_records(pl.DataFrame(rows), layout.table("table3", "csv"), force=True)


def _embed(options: StudyOptions, named: list[tuple[str, pl.DataFrame]], figure: Path, progress: ProgressFn | None) -> None:
    from smm4h_cli.analysis.cluster_outputs import write_outputs
    from smm4h_cli.analysis.clustering import EmbedClusterOptions, embed_cluster
    from smm4h_cli.analysis.groups import groups_from_frames, infer_roles

    synthetic, positives = infer_roles(named, [name for name, _ in named if name.startswith("synthetic ")])
    emb = EmbedClusterOptions(
        k=options.k, sample=options.sample, seed=options.seed, device=options.device,
        cache_dir=StudyLayout(options.out).embedding_cache, synthetic=synthetic, positives=positives,
    )
    result = embed_cluster(groups_from_frames(named, by_label=True), emb, progress=progress)
    write_outputs(result, figure, plot=True, seed=options.seed)


def _compare(options: StudyOptions, prediction_files: dict[str, list[Path]], layout: StudyLayout) -> None:
    from smm4h_cli.training.compare import compare

    arms = list(prediction_files)
    result = compare([[read_records(p) for p in prediction_files[a]] for a in arms], arms, options.bootstrap, options.seed)
    write_json(layout.table("table2"), result.to_dict())
    write_records(pl.DataFrame(result.to_dict()["arms"]), layout.table("table2", "csv"), force=True)
    write_records(pl.DataFrame(result.to_dict()["pairs"]), layout.table("table2_pairs", "csv"), force=True)
