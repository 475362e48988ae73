"""A run's answers into its posts and its summary: parse each answer, flag duplicates and copies,
trim a ``--fill`` run's surplus, count everything, and estimate the cost."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from smm4h_cli.generation.backends import PRICES, Backend
from smm4h_cli.generation.batch import BATCH_PRICE_FACTOR
from smm4h_cli.generation.dedup import COPY_KINDS
from smm4h_cli.generation.dedup import KINDS as DUPLICATE_KINDS
from smm4h_cli.generation.dedup import find_duplicates
from smm4h_cli.generation.engine import CallResult
from smm4h_cli.generation.options import GenerateOptions
from smm4h_cli.generation.parsing import parse_answer
from smm4h_cli.generation.plan import PlannedCall, Planner, repeat_penalty_for, request_style_for, temperature_for
from smm4h_cli.generation.structured import OutputFormat


@dataclass
class Summary:
    """What a run did; ``to_dict()`` is the ``*.meta.json`` sidecar."""

    strategy: str
    model: str
    backend: str
    task: str
    n: int
    seed: int
    temperature: float
    examples: int
    request_style: str
    output_format: str = "list"
    output_format_how: str = "asked"
    repeat_penalty: float | None = None
    max_tokens: int | None = None
    fill: bool = False
    max_calls: int | None = None
    calls: int = 0
    calls_cached: int = 0
    calls_retried: int = 0
    calls_failed: int = 0
    retries: int = 0
    posts_parsed: int = 0
    posts_kept: int = 0
    #: a --fill run's posts kept past n (its last round's surplus), left out of the output
    posts_surplus: int = 0
    posts_per_request: float = 0.0
    #: synthetic posts repeating others of the set (exact + near), and copies of training posts
    #: (example_copy + train_exact + train_near), flagged or dropped by --dedup
    repeats: int = 0
    copies: int = 0
    parse_issues: dict[str, int] = field(default_factory=dict)
    dedup: str = "flag"
    duplicates: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    cache: str | None = None
    cache_lines_ignored: int = 0
    price_factor: float = 1.0
    batches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_cost(backend: Backend, prompt_tokens: int, completion_tokens: int,
                  price_in: float | None = None, price_out: float | None = None, factor: float = 1.0) -> float | None:
    """US$ for the tokens: the given prices, OpenAI's list price for a known model, 0 locally, else None;
    times ``factor`` (``batch.BATCH_PRICE_FACTOR`` for the Batch API)."""
    if price_in is not None or price_out is not None:
        return round(factor * ((price_in or 0) * prompt_tokens + (price_out or 0) * completion_tokens) / 1e6, 6)
    if backend.kind == "embedded":
        return 0.0
    if backend.kind == "openai":
        known = [m for m in PRICES if backend.model == m or backend.model.startswith(m + "-")]
        if known:
            p_in, p_out = PRICES[max(known, key=len)]
            return round(factor * (p_in * prompt_tokens + p_out * completion_tokens) / 1e6, 6)
    return None


_SCHEMA = {
    "id": pl.String, "text": pl.String, "label": pl.Int64, "source": pl.String, "model": pl.String,
    "strategy": pl.String, "call": pl.Int64, "item": pl.Int64, "seed": pl.Int64, "temperature": pl.Float64,
    "request_style": pl.String, "examples_positive": pl.String, "examples_negative": pl.String,
    "prompt_hash": pl.String, "attributes": pl.String, "finish_reason": pl.String,
    "duplicate": pl.String, "duplicate_of": pl.String,
}


def assemble(options: GenerateOptions, backend: Backend, train: pl.DataFrame, plan: list[PlannedCall],
              results: dict[int, CallResult], fmt: OutputFormat, planner: Planner | None = None) -> tuple[pl.DataFrame, Summary]:
    style = request_style_for(options, backend)
    temperature = temperature_for(options, backend)
    summary = Summary(
        strategy=options.strategy, model=backend.model, backend=backend.kind, task=options.task.name, n=options.n,
        seed=options.seed, temperature=temperature, examples=options.examples, request_style=style,
        output_format=fmt.name, output_format_how=fmt.how, repeat_penalty=repeat_penalty_for(options, backend),
        max_tokens=planner.max_tokens if planner else None, fill=options.fill,
        max_calls=options.call_limit if options.fill else None,
        calls=len(plan), dedup=options.dedup, price_factor=BATCH_PRICE_FACTOR if options.batch else 1.0,
    )
    issues: Counter = Counter()
    errors: Counter = Counter()
    rows = []
    shown = []
    for call in plan:
        result = results[call.index]
        summary.prompt_tokens += result.prompt_tokens
        summary.completion_tokens += result.completion_tokens
        if result.cached:
            summary.calls_cached += 1
        elif result.retries:
            summary.calls_retried += 1
            summary.retries += result.retries
        if result.failed:
            summary.calls_failed += 1
            errors[result.error.split(" after ")[0]] += 1
            continue
        parsed = parse_answer(result.content, call.count, result.finish_reason, fmt.name, call.prompt)
        issues.update(parsed.issues)
        for item, text in enumerate(parsed.posts, start=1):
            shown.append(call.shown)
            rows.append({
                "id": f"syn-{options.strategy}-{call.index:04d}-{item:02d}", "text": text, "label": 1,
                "source": "synthetic", "model": backend.model, "strategy": options.strategy, "call": call.index,
                "item": item, "seed": options.seed, "temperature": temperature, "request_style": style,
                "examples_positive": ",".join(call.positive_ids), "examples_negative": ",".join(call.negative_ids),
                "prompt_hash": call.prompt_hash,
                "attributes": json.dumps(call.attributes, ensure_ascii=False) if call.attributes else None,
                "finish_reason": result.finish_reason, "duplicate": None, "duplicate_of": None,
            })
    frame = pl.DataFrame(rows, schema=_SCHEMA)
    summary.posts_parsed = frame.height
    summary.parse_issues = dict(sorted(issues.items()))
    summary.errors = dict(sorted(errors.items()))
    if options.dedup != "off" and frame.height:
        kinds, of, found = find_duplicates(
            frame["text"].to_list(), train["text"].to_list(), train["id"].to_list(), frame["id"].to_list(), options.similarity,
            shown,
        )
        frame = frame.with_columns(pl.Series("duplicate", kinds, dtype=pl.String), pl.Series("duplicate_of", of, dtype=pl.String))
        summary.duplicates = {k: found.get(k, 0) for k in DUPLICATE_KINDS}
        if options.dedup == "drop":
            frame = frame.filter(pl.col("duplicate").is_null())
    elif options.dedup != "off":
        summary.duplicates = {k: 0 for k in DUPLICATE_KINDS}
    if options.fill and frame.height > options.n:  # the last round's surplus, in call order
        summary.posts_surplus = frame.height - options.n
        frame = frame.head(options.n)
    summary.posts_kept = frame.height
    summary.posts_per_request = round(frame.height / len(plan), 3) if plan else 0.0
    summary.copies = sum(summary.duplicates.get(k, 0) for k in COPY_KINDS)
    summary.repeats = sum(summary.duplicates.get(k, 0) for k in DUPLICATE_KINDS if k not in COPY_KINDS)
    summary.cost_usd = estimate_cost(backend, summary.prompt_tokens, summary.completion_tokens, options.price_in, options.price_out,
                                     summary.price_factor)
    return frame, summary
