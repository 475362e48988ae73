"""``smm4h study``: the whole paper in one command, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from smm4h_cli.cli._common import ClassifierModel, choices, Device, IdCol, LabelCol, Quiet, Seed, TextCol, Threads, columns, err, flag, parse_list, SEED_MAX, seed_value
from smm4h_cli.cli._progress import ProgressDisplay
from smm4h_cli.errors import InputError
from smm4h_cli.generation.structured import OUTPUT_FORMATS
from smm4h_cli.study import StepEvent, StudyOptions, run_study
from smm4h_cli.study.options import EXECUTORS

Executor = choices("Executor", EXECUTORS)
OutputFormatChoice = choices("OutputFormat", OUTPUT_FORMATS)


def study_cli(
    task: Annotated[int, typer.Option("--task", help="SMM4H task: 5 (child's disorder) or 6 (exact age).")] = 5,
    out: Annotated[Path, typer.Option("--out", "-o", help="Study folder: every step's files and the report.")] = Path("study"),
    train: Annotated[Path | None, typer.Option("--train", help="Training posts \\[default: the task's sample data].", show_default=False)] = None,
    validation: Annotated[Path | None, typer.Option("--validation", help="Validation posts \\[default: the task's sample data].", show_default=False)] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Test posts \\[default: the task's sample data].", show_default=False)] = None,
    n: Annotated[int | None, typer.Option("--n", help="Synthetic posts per strategy \\[default: 1000 as the paper; 50 with --quick].", show_default=False)] = None,
    strategies: Annotated[str, typer.Option("--strategies", help="Generation strategies, comma-separated: paper, attributes.")] = "paper",
    generator: Annotated[str | None, typer.Option("--generator", help="Generation model \\[default: the embedded SmolLM2, or gpt-4-0125-preview with OPENAI_API_KEY].", show_default=False)] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible server for generation (vLLM, Ollama, llama.cpp).", show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Generation temperature \\[default: the paper's 0; the embedded SmolLM2's tuned value, see docs/generate.md].", show_default=False)] = None,
    output_format: Annotated[OutputFormatChoice, typer.Option("--output-format", help="Generation answers: json (a JSON schema of exactly 10 posts), list (the paper's numbered list) or auto (json where the backend supports it); as generate.")] = OutputFormatChoice.auto,
    fill: Annotated[bool, flag("--fill", help="--n counts synthetic posts kept: generation calls go on until n are kept (at most 3 x n / 10 calls); as generate --fill.")] = False,
    examples: Annotated[int, typer.Option("--examples", help="Few-shot examples of each label per call (the paper: 5).")] = 5,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Generation requests in flight.")] = 4,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Completion tokens per generation call \\[default: the server's; 512 for SmolLM2, 768 with JSON output].", show_default=False)] = None,
    model: ClassifierModel = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs \\[default: 10 as the paper; 5 with --quick].", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Training batch size \\[default: 32; 16 with --quick].", show_default=False)] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens kept per post.")] = 128,
    seeds: Annotated[str, typer.Option("--seeds", help="Training seeds per arm, comma-separated (mean ± std across them).")] = "0",
    baselines: Annotated[bool, flag("--baselines", help="Also train with class weighting and with oversampling, the classic answers to imbalance.")] = False,
    sample: Annotated[int | None, typer.Option("--sample", help="Posts per group in the n-gram and embedding analyses \\[default: 1000; 300 with --quick].", show_default=False)] = None,
    k: Annotated[str, typer.Option("--k", help="k-means clusters, or 'auto'.")] = "10",
    device: Device = "auto",
    threads: Threads = None,
    quick: Annotated[bool, flag("--quick", help="A small run for a first look, minutes on a laptop CPU (50 synthetic posts, 5 epochs in batches of 16, 300-post samples).")] = False,
    executor: Annotated[Executor, typer.Option("--executor", help="How the training runs (arm × seed) run: one after another in this process, or as Ray tasks (pip install 'smm4h\\[ray]'); see docs/scale.md.")] = Executor.sequential,
    address: Annotated[str | None, typer.Option("--address", help="With --executor ray: the cluster, auto (the one started on this machine with ray start --head), ray://HOST:PORT or HOST:PORT \\[default: a local cluster started for the run].", show_default=False)] = None,
    gpus_per_run: Annotated[float | None, typer.Option("--gpus-per-run", help="With --executor ray: GPUs each training run asks for (0.5 puts two on a GPU) \\[default: 0].", show_default=False)] = None,
    cpus_per_run: Annotated[float | None, typer.Option("--cpus-per-run", help="With --executor ray: CPUs each training run asks for (its torch threads) \\[default: 1].", show_default=False)] = None,
    seed: Seed = 0,
    force: Annotated[bool, flag("--force", help="Redo every step, even those that are up to date.")] = False,
    definitions: Annotated[Path | None, typer.Option("--definitions", help="Your own binary task: a YAML/JSON file with 'definition' (the label definitions), 'post_kind' (e.g. tweets), 'example_order', as generate takes. Needs --train, --validation and --test.", show_default=False)] = None,
    doses: Annotated[str | None, typer.Option("--doses", help="The dose-response study: doses of synthetic positives, comma-separated, as multiples of the real positives in --train (0 is the baseline), e.g. 0,0.5,1,2; with --dose-unit posts, numbers of posts.", show_default=False)] = None,
    dose_unit: Annotated[str, typer.Option("--dose-unit", help="What --doses count: multiple (of the real positives) or posts.")] = "multiple",
    selections: Annotated[str, typer.Option("--selections", help="With --doses: selection rules, comma-separated: none, dedup, confidence, diverse.")] = "none",
    overgenerate: Annotated[float, typer.Option("--overgenerate", help="With --doses: the pool generated once holds the largest dose times this (room for what selection drops).")] = 1.5,
    quiet: Quiet = False,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Run the whole study: generate, analyse, train with and without synthetic data, compare, report.

    Every step writes its files into the study folder as the standalone command would; a re-run redoes only what is missing or what a changed option or file reaches, and an interrupted step resumes. The report is OUT/report.md and OUT/report.html (self-contained, opens offline). Example:

        smm4h study --task 5 --quick

    The dose-response study (--doses) generates one pool, selects from it by each rule and trains every (dose, selection) arm against the baseline; its report shows F1 against dose, a table with Holm-adjusted tests and each set's diversity and realism:

        smm4h study --quick --doses 0,0.5,1 --selections none,dedup
    """
    try:
        k_value: int | str = k if k == "auto" else int(k)
    except ValueError:
        raise InputError(f"--k takes a number of clusters or 'auto'; got '{k}'.") from None
    dose_list = tuple(parse_list(doses, "--doses", float, "numbers", example="0,0.5,1")) if doses is not None else ()
    given = dict(
        out=out, task=task, train=train, validation=validation, test=test,
        columns=columns(text_col, label_col, id_col),
        strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()),
        generator=generator, base_url=base_url, temperature=temperature, examples=examples,
        output_format=output_format.value, fill=fill,
        concurrency=concurrency, max_tokens=max_tokens, classifier=model, max_length=max_length,
        seeds=tuple(parse_list(seeds, "--seeds", seed_value, f"integers from 0 to {SEED_MAX}")), baselines=baselines, k=k_value, seed=seed, device=device, threads=threads, force=force,
        definitions=definitions, doses=dose_list, dose_unit=dose_unit, overgenerate=overgenerate,
        selections=tuple(parse_list(selections, "--selections", str, "selection rules", example="none,dedup")),
        executor=executor.value, address=address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
    )
    given.update({name: value for name, value in (("n", n), ("epochs", epochs), ("batch_size", batch_size), ("sample", sample)) if value is not None})
    options = StudyOptions.quick(**given) if quick else StudyOptions(**given)
    talk = not quiet
    with ProgressDisplay(quiet) as show:

        def on_event(event: StepEvent) -> None:
            show.clear()  # a step starts, is skipped or ends: the last step's bars go
            if not talk:
                return
            head = f"[{event.index}/{event.total}] {escape(event.name)}"  # [1/9] is no Rich tag: it shows as written
            if event.state == "running":
                err.print(f"{head} …" + (f" ({escape(event.detail)})" if event.detail else ""))
            elif event.state == "skipped":
                err.print(f"{head}: [dim]{escape(event.detail)}[/]")
            else:
                err.print(f"{head}: [green]done[/] in {event.seconds:,.0f} s" + (f" [yellow]({escape(event.detail)})[/]" if event.detail else ""))

        result = run_study(options, on_event, show)
    if talk:
        # the conclusion names models and groups, and the paths are the user's: text, not Rich markup
        err.print(f"\n{escape(result.numbers['conclusion'])}\n", soft_wrap=True)
        err.print(f"Report: [bold]{escape(str(result.report_html))}[/] (and {escape(str(result.report_md))})")
    typer.echo(str(result.report_html))


def register(app: typer.Typer) -> None:
    app.command(
        "study", help=study_cli.__doc__, short_help="The whole study in one command: generate, analyse, train, compare, report."
    )(study_cli)
