"""``smm4h generate``: synthetic positive posts from an LLM, the paper's way (§3.1, Appendix A.1) or with attributes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from smm4h_cli.cli._common import DEFAULT_SYNTHETIC, Force, IdCol, LabelCol, Quiet, Seed, TextCol, choices, columns, err, flag
from smm4h_cli.cli._progress import ProgressDisplay
from smm4h_cli.errors import InputError, RunError
from smm4h_cli.generation.files import RunFiles, claim_outputs
from smm4h_cli.generation.generate import DEDUP_MODES, STRATEGIES
from smm4h_cli.generation.prompts import REQUEST_STYLES
from smm4h_cli.generation.structured import OUTPUT_FORMATS
from smm4h_cli.io import STDIO, read_records, write_json, write_records
from smm4h_cli.sample import sample_path

Strategy = choices("Strategy", STRATEGIES)
RequestStyle = choices("RequestStyle", ("auto", *REQUEST_STYLES))
Dedup = choices("Dedup", DEDUP_MODES)
OutputFormatChoice = choices("OutputFormat", OUTPUT_FORMATS)


def cache_path_for(out: str, cache: Path | None, no_cache: bool) -> Path | None:
    """The call cache: ``--cache``, else beside the output file (``OUT.cache.jsonl``); none for stdout."""
    if no_cache:
        return None
    if cache is not None:
        return cache
    if out == STDIO:
        return None
    return Path(out).with_suffix(".cache.jsonl")


def generate_cli(
    task: Annotated[int, typer.Option("--task", "-t", help="SMM4H 2024 task: 5 (child's disorder, tweets) or 6 (self-reported exact age); picks the paper's label definitions and the default --train.")] = 5,
    n: Annotated[int, typer.Option("--n", help="Synthetic posts to ask for, in calls of --per-call (the paper: 1,000 in 100 calls); with --fill, posts to keep.")] = 1000,
    train: Annotated[Path | None, typer.Option("--train", help="Labelled posts the few-shot examples are drawn from \\[default: the task's sample data].", show_default=False)] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output file (.jsonl, .parquet, .csv, .tsv), or '-' for JSON lines on stdout. A file gets OUT.meta.json (the summary) and OUT.cache.jsonl (the call cache) beside it. \\[default: JSON lines on stdout when it is a pipe or a file; else synthetic.jsonl, where smm4h train --with-synthetic looks].", show_default=False)] = None,
    strategy: Annotated[Strategy, typer.Option("--strategy", help="paper: the paper's few-shot prompt. attributes: each call also fixes one value of every attribute (AttrPrompt), spread evenly, for diversity.")] = Strategy.paper,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name: an OpenAI model (the paper's: gpt-4-0125-preview; needs OPENAI_API_KEY), a model of the --base-url server, or 'embedded' \\[default: the embedded SmolLM2-135M-Instruct without a key or base URL; gpt-4-0125-preview with OPENAI_API_KEY; the server's first model with --base-url].", show_default=False)] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="An OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio), e.g. http://localhost:8000/v1 \\[default: $OPENAI_BASE_URL].", show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Sampling temperature \\[default: the paper's 0; the embedded SmolLM2's tuned value, see bench/generate_tuning.py].", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Completion tokens per call \\[default: the server's; 512 for SmolLM2, 768 with JSON output].", show_default=False)] = None,
    examples: Annotated[int, typer.Option("--examples", "-k", help="Positive and negative few-shot examples per call, each (the paper: 5 + 5).")] = 5,
    per_call: Annotated[int, typer.Option("--per-call", help="Posts asked for per call (the paper: 10).")] = 10,
    definitions: Annotated[Path | None, typer.Option("--definitions", help="Your own binary task: a YAML/JSON file with 'definition' (the label definitions), 'post_kind' (e.g. tweets), 'example_order'. Needs --train.", show_default=False)] = None,
    attributes: Annotated[Path | None, typer.Option("--attributes", help="Attributes for --strategy attributes: a YAML/JSON mapping of attribute -> list of values \\[default: the task's built-in set; see --show-attributes].", show_default=False)] = None,
    show_attributes: Annotated[bool, flag("--show-attributes", help="Print the task's built-in attribute set as YAML (a start for --attributes) and exit.")] = False,
    request_style: Annotated[RequestStyle, typer.Option("--request-style", help="paper: Appendix A.1 verbatim. list: a plain request for a numbered list, which small models follow. auto: list for SmolLM2 (embedded or on any server), paper otherwise.")] = RequestStyle.auto,
    output_format: Annotated[OutputFormatChoice, typer.Option("--output-format", help="json: the answer constrained to a JSON schema of exactly --per-call posts (OpenAI structured outputs; llama.cpp, vLLM, Ollama servers). list: the numbered list (--request-style paper --output-format list is the paper's exact setting). auto: json where the backend supports it (the embedded model, OpenAI models with structured outputs, a server that takes it), list otherwise.")] = OutputFormatChoice.auto,
    fill: Annotated[bool, flag("--fill", help="--n counts posts kept (parsed, and not dropped by --dedup drop): calls go on until n are kept or --max-calls were made.")] = False,
    max_calls: Annotated[int | None, typer.Option("--max-calls", help="The most calls a --fill run makes, its first round included (a limit below n / --per-call shortens the first round) \\[default: 3 x n / --per-call].", show_default=False)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Requests in flight at once (the embedded server takes one at a time).")] = 4,
    tries: Annotated[int, typer.Option("--tries", help="Attempts per call (429, 5xx, timeouts, dropped connections are retried with backoff, honouring Retry-After); then the call counts as failed and the run goes on.")] = 6,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for one answer before retrying \\[default: 120; 600 for the embedded model].", show_default=False)] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Call cache (JSON lines) to resume from and append to \\[default: OUT.cache.jsonl beside a file output; none for stdout].", show_default=False)] = None,
    no_cache: Annotated[bool, flag("--no-cache", help="Neither read nor write a call cache.")] = False,
    dedup: Annotated[Dedup, typer.Option("--dedup", help="Exact and near-duplicate posts, within the synthetic set and copies of --train posts: flag them (columns duplicate, duplicate_of), drop them, or off.")] = Dedup.flag,
    similarity: Annotated[float, typer.Option("--similarity", help="Cosine similarity (character 4-gram TF-IDF) at which two posts are near duplicates.")] = 0.9,
    price_in: Annotated[float | None, typer.Option("--price-in", help="US$ per million prompt tokens, for the cost estimate of models without a known price.", show_default=False)] = None,
    price_out: Annotated[float | None, typer.Option("--price-out", help="US$ per million completion tokens, for the cost estimate.", show_default=False)] = None,
    batch: Annotated[bool, flag("--batch", help="Make the calls through the OpenAI Batch API: half the price, answers within 24 h; a killed run resumes the same batch (needs the call cache).")] = False,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between the first polls of a --batch batch (then backing off to 30 times as long).")] = 15.0,
    seed: Seed = 0,
    force: Force = False,
    quiet: Quiet = False,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Generate synthetic positive posts with an LLM: the paper's few-shot prompt (§3.1, Appendix A.1).

    Each call shows the task's label definitions and 5 positive + 5 negative posts drawn from --train, and asks for 10 fictional posts of label 1 as a numbered list (or, with --output-format json, the embedded model's default, a JSON object). Every post keeps its provenance (model, strategy, call, seed, example ids, prompt hash, temperature, attributes). Runs offline on the embedded SmolLM2 by default; --model/--base-url for OpenAI or any OpenAI-compatible server. A killed run resumes from its call cache. Examples:

        smm4h generate --task 5 --n 1000 -o synthetic.jsonl

        smm4h generate --task 6 --n 200 --strategy attributes --model gpt-4o-mini -o t6.jsonl

        smm4h generate --task 5 --n 100 --base-url http://localhost:8000/v1 | smm4h ngrams -
    """
    from smm4h_cli.generation import attributes as attrs
    from smm4h_cli.generation.generate import GenerateOptions
    from smm4h_cli.generation.prompts import builtin_task, load_definitions

    if out is None:  # piped: the posts flow on; at a terminal: the file that train --with-synthetic reads
        out = STDIO if not sys.stdout.isatty() else str(DEFAULT_SYNTHETIC)
    if show_attributes:
        attribute_set = attrs.load_attributes(attributes) if attributes else attrs.builtin_attributes(task)
        sys.stdout.write(attrs.dump_attributes(attribute_set))
        return
    if definitions is not None:
        if train is None:
            raise InputError("--definitions gives your own task, so give its labelled posts with --train too.")
        task_def = load_definitions(definitions)
    else:
        task_def = builtin_task(task)
    options = GenerateOptions(
        task=task_def, n=n, strategy=strategy.value, model=model, base_url=base_url, temperature=temperature,
        examples=examples, seed=seed, concurrency=concurrency, cache_path=cache_path_for(out, cache, no_cache),
        per_call=per_call, max_tokens=max_tokens, request_style=request_style.value,
        attributes=attrs.load_attributes(attributes) if attributes is not None else None,
        dedup=dedup.value, similarity=similarity, tries=tries, timeout=timeout, price_in=price_in, price_out=price_out,
        batch=batch, poll_interval=poll_interval, output_format=output_format.value, fill=fill, max_calls=max_calls,
    )
    train_path = train if train is not None else sample_path(task, "train")
    inputs = [("--train", train_path), ("--definitions", definitions), ("--attributes", attributes)]
    # the files are checked and locked before the backend is resolved or any call is made
    files = RunFiles.of(out, options.cache_path)
    with claim_outputs(files, inputs, force):
        _run(options, out, files, train_path, columns(text_col, label_col, id_col), force, quiet, no_cache)


def _run(options, out: str, files: RunFiles, train_path: Path, cols, force: bool, quiet: bool, no_cache: bool) -> None:
    from smm4h_cli.generation.backends import resolve_backend
    from smm4h_cli.generation.generate import check_batch_record, generate, nothing_to_write

    check_batch_record(options)  # before the start line: the error comes alone
    n = options.n
    train_frame = read_records(train_path, cols, require_label=True)
    backend = resolve_backend(options.model, options.base_url)

    talk = not quiet
    if talk:
        where = "stdout" if out == STDIO else out
        err.print(
            f"Generating {n:,} posts {'kept, in at most ' + format(options.call_limit, ',') if options.fill else 'in ' + format(options.calls, ',')} calls with [bold]{escape(backend.model)}[/] "
            f"({backend.kind}{', ' + escape(backend.base_url) if backend.base_url else ''}) -> {escape(where)}",
            soft_wrap=True,
        )
        if options.cache_path is None and not no_cache:
            err.print("[dim]No call cache for stdout output: give --out FILE or --cache FILE to make the run resumable.[/]", soft_wrap=True)
    with ProgressDisplay(quiet) as show:
        frame, summary = generate(options, train_frame, progress=show, backend=backend)

    reason = nothing_to_write(summary)
    if reason:
        if talk:
            _print_summary(summary)
        raise RunError(reason)
    write_records(frame, out, force=force)
    if files.meta is not None:
        write_json(files.meta, summary.to_dict())
    if talk:
        _print_summary(summary)


def _print_summary(s) -> None:
    issues = ", ".join(f"{k} {v}" for k, v in s.parse_issues.items()) or "none"
    dups = ", ".join(f"{k} {v}" for k, v in s.duplicates.items() if v) or ("none" if s.dedup != "off" else "not checked")
    cost = "unknown (give --price-in/--price-out)" if s.cost_usd is None else ("0 (local)" if s.backend == "embedded" else f"US$ {s.cost_usd:,.4f}")
    lines = [
        f"calls {s.calls:,}: {s.calls - s.calls_cached:,} made, {s.calls_cached:,} cached, {s.calls_retried:,} retried, {s.calls_failed:,} failed",
        f"posts kept {s.posts_kept:,} of {s.n:,} asked (parsed {s.posts_parsed:,}; {s.posts_per_request:g} per request; output {s.output_format}, {s.output_format_how})",
        f"parse issues: {issues}",
        f"duplicates ({s.dedup}): {dups}" + (f" — {s.repeats:,} repeats within the set, {s.copies:,} copies of --train posts" if s.dedup != "off" else ""),
        f"tokens: {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion; cost {cost}",
        f"time {s.seconds:,.1f} s",
    ]
    if s.fill and s.posts_kept < s.n:
        lines.append(f"--fill: kept {s.posts_kept:,} of {s.n:,} after {s.calls:,} calls (--max-calls {s.max_calls:,}); raise --max-calls, or --temperature for fewer repeats")
    elif s.fill:
        lines.append(f"--fill: {s.n:,} posts kept in {s.calls:,} calls ({s.posts_surplus:,} surplus left out)")
    if s.batches:
        lines.append(f"batches: {', '.join(s.batches)} (cost at batch prices, x{s.price_factor:g})")
    if s.cache_lines_ignored:
        lines.append(
            f"cache: {s.cache_lines_ignored:,} line(s) of {s.cache} skipped (torn, not JSON, or not a well-formed answer); "
            "their calls were made again"
        )
    err.print(escape("\n".join(lines)), soft_wrap=True)
    if s.errors:
        failed = ", ".join(f"{k} ({v})" for k, v in s.errors.items())
        again = (
            "Run the same command again with --force to retry them; finished calls come from the cache."
            if s.cache else "Give --cache FILE to keep finished calls, then run again to retry the failed ones."
        )
        err.print(f"[yellow]Failed calls: {escape(failed)}. {again}[/]", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("generate", help=generate_cli.__doc__, short_help="Synthetic positive posts from an LLM (paper §3.1), resumable, with provenance.")(generate_cli)
