"""The whole generation run: plan the calls, answer them from the cache or the server, parse,
flag duplicates, and return the posts with their provenance and a summary.

The plan depends only on the options, the training data and the seed: call ``i`` shows the
few-shot examples drawn by ``Random((seed, i))`` and (for ``attributes``) the attribute values
drawn for ``i``, and its request carries a per-call seed. So a resumed run asks exactly what the
first run asked, the cache answers the calls that finished, and the output (ordered by call
index) equals that of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.generation import attributes as attrs
from smm4h_cli.generation.batch import BATCH_PRICE_FACTOR, check_batch_backend, run_batch
from smm4h_cli.generation.backends import PRICES, Backend, embedded_server, resolve_backend
from smm4h_cli.generation.dedup import KINDS as DUPLICATE_KINDS
from smm4h_cli.generation.dedup import find_duplicates
from smm4h_cli.generation.engine import CallCache, CallResult, CallSpec, RetryPolicy, cached_result, run_calls
from smm4h_cli.generation.parsing import parse_numbered_list
from smm4h_cli.generation.prompts import REQUEST_STYLES, TaskDefinition, few_shot_prompt, prompt_hash, request_hash
from smm4h_cli.progress import ProgressFn, report

#: ``paper``: the paper's few-shot prompt. ``attributes``: the same, with one combination of
#: attribute values fixed per call (AttrPrompt), spread evenly over the calls.
STRATEGIES = ("paper", "attributes")
DEDUP_MODES = ("flag", "drop", "off")
#: The embedded SmolLM2 loops without a repeat penalty; 10 short posts fit in this many tokens.
EMBEDDED_REPEAT_PENALTY = 1.2
EMBEDDED_MAX_TOKENS = 512
DEFAULT_TIMEOUT = 120.0
EMBEDDED_TIMEOUT = 600.0


@dataclass
class GenerateOptions:
    """Options of one generation run; the defaults are the paper's (§3.1).

    Attributes:
        task: the task's label definitions (``prompts.builtin_task(5)``, or ``load_definitions``).
        n: posts asked for in all; ``ceil(n / per_call)`` calls (the paper: 1,000 in 100 calls).
        strategy: one of ``STRATEGIES``.
        model, base_url: the backend (see ``backends.resolve_backend``); None: the defaults.
        temperature: sampling temperature (the paper: 0).
        examples: positive and negative few-shot examples per call, each (the paper: 5 + 5).
        seed: seed of the example draws, attribute draws and per-call request seeds.
        concurrency: requests in flight (1 for the embedded server, which answers one at a time anyway).
        cache_path: the JSON-lines call cache; None: no cache (no resume).
        per_call: posts asked for per call (the paper: 10).
        max_tokens: completion limit per call; None: the server's default (512 for SmolLM2, see ``small_model``).
        request_style: ``paper`` (Appendix A.1 verbatim), ``list`` (for small models) or ``auto``
            (``list`` for SmolLM2, embedded or served, ``paper`` otherwise).
        attributes: attribute set for the ``attributes`` strategy; None: the task's built-in set.
        dedup: ``flag`` (mark duplicates and leaks), ``drop`` (remove them) or ``off``.
        similarity: cosine threshold of near duplicates (character 4-gram TF-IDF).
        tries: attempts per call before it is recorded as failed.
        timeout: seconds per attempt; None: 120, or 600 for the embedded model (a CPU is slow).
        backoff: seconds before the first retry (doubling each retry, half of it jittered, at most 60 s)
            when the server sends no Retry-After.
        repeat_penalty: sent as ``extra_body``; None: 1.2 for the embedded model, nothing otherwise.
        price_in, price_out: US$ per million prompt / completion tokens, for models without a known price.
        batch: make the calls through the OpenAI Batch API (``batch.py``): half the price, answers within
            24 h; needs ``cache_path`` (it keeps the batch in flight, so that a killed run resumes it).
        poll_interval: seconds between the first polls of a batch (backing off to 30 times as long).
    """

    task: TaskDefinition
    n: int = 1000
    strategy: str = "paper"
    model: str | None = None
    base_url: str | None = None
    temperature: float = 0.0
    examples: int = 5
    seed: int = 0
    concurrency: int = 4
    cache_path: Path | None = None
    per_call: int = 10
    max_tokens: int | None = None
    request_style: str = "auto"
    attributes: dict[str, list[str]] | None = None
    dedup: str = "flag"
    similarity: float = 0.9
    tries: int = 6
    timeout: float | None = None
    backoff: float = 1.0
    repeat_penalty: float | None = None
    price_in: float | None = None
    price_out: float | None = None
    batch: bool = False
    poll_interval: float = 15.0

    def __post_init__(self) -> None:
        if not isinstance(self.task, TaskDefinition):
            raise InputError("the task must be a TaskDefinition (prompts.builtin_task(5) or prompts.load_definitions(FILE)).")
        if self.strategy not in STRATEGIES:
            raise InputError(f"--strategy must be one of {', '.join(STRATEGIES)}; got '{self.strategy}'.")
        if self.n < 1:
            raise InputError(f"--n must be at least 1; got {self.n}.")
        if not 1 <= self.per_call <= 100:
            raise InputError(f"--per-call must be between 1 and 100; got {self.per_call}.")
        if self.examples < 1:
            raise InputError(f"--examples must be at least 1 (positive and negative examples per call); got {self.examples}.")
        if not 0 <= self.temperature <= 2:
            raise InputError(f"--temperature must be between 0 and 2; got {self.temperature}.")
        if not 1 <= self.concurrency <= 512:
            raise InputError(f"--concurrency must be between 1 and 512; got {self.concurrency}.")
        if self.max_tokens is not None and self.max_tokens < 16:
            raise InputError(f"--max-tokens must be at least 16; got {self.max_tokens}.")
        if self.request_style not in ("auto", *REQUEST_STYLES):
            raise InputError(f"--request-style must be auto, {', '.join(REQUEST_STYLES)}; got '{self.request_style}'.")
        if self.dedup not in DEDUP_MODES:
            raise InputError(f"--dedup must be one of {', '.join(DEDUP_MODES)}; got '{self.dedup}'.")
        if not 0 < self.similarity <= 1:
            raise InputError(f"--similarity must be in (0, 1]; got {self.similarity}.")
        if self.tries < 1:
            raise InputError(f"--tries must be at least 1; got {self.tries}.")
        if self.backoff < 0:
            raise InputError(f"--backoff must not be negative; got {self.backoff}.")
        if self.timeout is not None and self.timeout <= 0:
            raise InputError(f"--timeout must be positive; got {self.timeout}.")
        for name in ("price_in", "price_out"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative; got {value}.")
        if self.cache_path is not None:
            self.cache_path = Path(self.cache_path)
        if self.poll_interval <= 0:
            raise InputError(f"--poll-interval must be positive; got {self.poll_interval}.")
        if self.batch and self.cache_path is None:
            raise InputError("--batch needs a call cache, which keeps the batch in flight so that a killed run resumes it "
                             "instead of paying twice: give --out FILE or --cache FILE, and leave out --no-cache.")
        if self.attributes is not None:
            self.attributes = attrs.validate_attributes(self.attributes, "--attributes")
        elif self.strategy == "attributes":
            number = {"task5": 5, "task6": 6}.get(self.task.name)
            if number is None:
                raise InputError(f"--strategy attributes needs --attributes FILE for the task '{self.task.name}' (built-in sets exist for tasks 5 and 6).")
            self.attributes = attrs.builtin_attributes(number)

    @property
    def calls(self) -> int:
        return math.ceil(self.n / self.per_call)


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
    calls: int = 0
    calls_cached: int = 0
    calls_retried: int = 0
    calls_failed: int = 0
    retries: int = 0
    posts_parsed: int = 0
    posts_kept: int = 0
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


@dataclass(frozen=True)
class PlannedCall:
    index: int
    count: int
    positive_ids: tuple[str, ...]
    negative_ids: tuple[str, ...]
    attributes: dict[str, str] | None
    prompt_hash: str
    spec: CallSpec


def small_model(backend: Backend) -> bool:
    """SmolLM2, embedded or served by any compatible server (llama.cpp, Ollama, vLLM): a model too
    small to follow the paper's prompt, which gets the plain list request and a completion limit."""
    return backend.kind == "embedded" or "smollm" in backend.model.lower()


def request_style_for(options: GenerateOptions, backend: Backend) -> str:
    if options.request_style != "auto":
        return options.request_style
    return "list" if small_model(backend) else "paper"


def plan_calls(options: GenerateOptions, backend: Backend, train: pl.DataFrame) -> list[PlannedCall]:
    """Every call of the run, drawn from the seed and the call index only."""
    if "label" not in train.columns:
        raise InputError("the training data has no label column: the few-shot examples need labels 0 and 1 (see --label-col).")
    pos = train.filter(pl.col("label") == 1).select("id", "text").rows()
    neg = train.filter(pl.col("label") == 0).select("id", "text").rows()
    k = options.examples
    if len(pos) < k or len(neg) < k:
        raise InputError(
            f"the training data has {len(pos)} positive and {len(neg)} negative posts; {k} of each are shown "
            f"per call. Lower --examples or give a larger --train file."
        )
    style = request_style_for(options, backend)
    max_tokens = options.max_tokens or (EMBEDDED_MAX_TOKENS if small_model(backend) else None)
    penalty = options.repeat_penalty if options.repeat_penalty is not None else (
        EMBEDDED_REPEAT_PENALTY if backend.kind == "embedded" else None
    )
    plan = []
    for i in range(options.calls):
        count = min(options.per_call, options.n - i * options.per_call)
        rng = random.Random(f"examples:{options.seed}:{i}")
        shown_pos = [pos[j] for j in rng.sample(range(len(pos)), k)]
        shown_neg = [neg[j] for j in rng.sample(range(len(neg)), k)]
        chosen = attrs.draw(options.attributes, options.seed, i) if options.strategy == "attributes" else None
        prompt = few_shot_prompt(options.task, [t for _, t in shown_pos], [t for _, t in shown_neg], count, chosen, style)
        request: dict[str, Any] = {
            "model": backend.request_model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": options.temperature,
            "seed": (options.seed * 1_000_003 + i) % 2**31,
        }
        if max_tokens:
            request["max_tokens"] = max_tokens
        if penalty is not None:
            request["extra_body"] = {"repeat_penalty": penalty}
        spec = CallSpec(i, request_hash(request), request)
        plan.append(PlannedCall(
            i, count, tuple(p for p, _ in shown_pos), tuple(n for n, _ in shown_neg), chosen, prompt_hash(prompt), spec,
        ))
    return plan


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


def generate(
    options: GenerateOptions,
    train: pl.DataFrame,
    progress: ProgressFn | None = None,
    backend: Backend | None = None,
) -> tuple[pl.DataFrame, Summary]:
    """Generate ``options.n`` synthetic positive posts (as far as the model delivers them).

    ``progress`` hears stage ``"generate"`` after the cache is read and after each call: calls
    done of the calls planned, with "N posts · T tokens · F failed" as the detail.

    ``backend``: a resolved backend; None resolves ``options.model``/``options.base_url``. An
    embedded backend without a ``base_url`` starts (and stops) its own server, and only when
    some call is not in the cache.
    """
    started = time.monotonic()
    backend = backend or resolve_backend(options.model, options.base_url)
    plan = plan_calls(options, backend, train)
    if options.batch:
        check_batch_backend(backend)  # the embedded model, or a server without /v1/batches: refused before any call
    cache = CallCache(options.cache_path)
    cached = cache.load()
    results: dict[int, CallResult] = {}
    for call in plan:
        if call.spec.key in cached:
            results[call.index] = cached_result(call.spec, cached[call.spec.key])
    counts = {call.index: call.count for call in plan}
    tally = {"posts": 0, "prompt": 0, "completion": 0, "failed": 0}

    def note(result: CallResult) -> None:
        results[result.index] = result
        if result.failed:
            tally["failed"] += 1
        else:
            tally["posts"] += len(parse_numbered_list(result.content, counts[result.index], result.finish_reason).posts)
        tally["prompt"] += result.prompt_tokens
        tally["completion"] += result.completion_tokens
        tell()

    def tell() -> None:
        tokens = tally["prompt"] + tally["completion"]
        report(progress, "generate", len(results), len(plan), f"{tally['posts']:,} posts · {tokens:,} tokens · {tally['failed']:,} failed")

    for result in list(results.values()):
        note(result)
    if not results:
        tell()
    todo = [call.spec for call in plan if call.index not in results]
    embedded = backend.kind == "embedded"
    timeout = options.timeout or (EMBEDDED_TIMEOUT if embedded else DEFAULT_TIMEOUT)
    policy = RetryPolicy(tries=options.tries, base=options.backoff, timeout=timeout)
    # llama-cpp-python's server answers one request at a time: queued requests would only run
    # down their timeouts.
    concurrency = 1 if embedded else options.concurrency
    batches: list[str] = []
    if todo and options.batch:
        batches = run_batch(todo, backend, cache, note, poll_interval=options.poll_interval, timeout=timeout, progress=progress)
    elif todo:
        if embedded and backend.base_url is None:
            with embedded_server() as url:
                run_calls(todo, replace(backend, base_url=url), cache, concurrency, policy, note)
        else:
            run_calls(todo, backend, cache, concurrency, policy, note)

    frame, summary = _assemble(options, backend, train, plan, results)
    summary.cache = str(options.cache_path) if options.cache_path is not None else None
    summary.cache_lines_ignored = cache.ignored
    summary.seconds = round(time.monotonic() - started, 2)
    summary.batches = batches
    return frame, summary


def nothing_to_write(summary: Summary) -> str | None:
    """Why a run has no post to write (every call failed, no answer parsed, every post dropped), or None.

    The one rule for an empty generation, for every caller of ``generate`` (the command, the
    study): an empty file would only be refused by every reader, so such a run writes none and
    stops with this message, which says how to go on; the answers that came stay in the cache.
    """
    if summary.posts_kept:
        return None
    kept = f" The answers that came are kept in the cache {summary.cache}." if summary.cache else ""
    if summary.calls_failed == summary.calls:
        kinds = ", ".join(f"{k} ({v})" for k, v in summary.errors.items())
        return f"every call failed ({kinds}); nothing written. Check the server, then run the same command again."
    if not summary.posts_parsed:
        issues = ", ".join(f"{k} {v}" for k, v in summary.parse_issues.items()) or "none"
        return (
            f"no post could be parsed from the {summary.calls - summary.calls_failed:,} answers (parse issues: {issues}); "
            f"nothing written.{kept} The model did not answer with the numbered list asked for: try --request-style list "
            "(a plain request that small models follow), a larger --max-tokens if answers were truncated, or a larger model (--model)."
        )
    return (
        f"all {summary.posts_parsed:,} posts parsed were dropped as duplicates or copies of --train posts (--dedup drop); "
        f"nothing written.{kept} Use --dedup flag to keep them marked, or raise --temperature for more varied posts."
    )


_SCHEMA = {
    "id": pl.String, "text": pl.String, "label": pl.Int64, "source": pl.String, "model": pl.String,
    "strategy": pl.String, "call": pl.Int64, "item": pl.Int64, "seed": pl.Int64, "temperature": pl.Float64,
    "request_style": pl.String, "examples_positive": pl.String, "examples_negative": pl.String,
    "prompt_hash": pl.String, "attributes": pl.String, "finish_reason": pl.String,
    "duplicate": pl.String, "duplicate_of": pl.String,
}


def _assemble(options: GenerateOptions, backend: Backend, train: pl.DataFrame,
              plan: list[PlannedCall], results: dict[int, CallResult]) -> tuple[pl.DataFrame, Summary]:
    style = request_style_for(options, backend)
    summary = Summary(
        strategy=options.strategy, model=backend.model, backend=backend.kind, task=options.task.name, n=options.n,
        seed=options.seed, temperature=options.temperature, examples=options.examples, request_style=style,
        calls=len(plan), dedup=options.dedup, price_factor=BATCH_PRICE_FACTOR if options.batch else 1.0,
    )
    issues: Counter = Counter()
    errors: Counter = Counter()
    rows = []
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
        parsed = parse_numbered_list(result.content, call.count, result.finish_reason)
        issues.update(parsed.issues)
        for item, text in enumerate(parsed.posts, start=1):
            rows.append({
                "id": f"syn-{options.strategy}-{call.index:04d}-{item:02d}", "text": text, "label": 1,
                "source": "synthetic", "model": backend.model, "strategy": options.strategy, "call": call.index,
                "item": item, "seed": options.seed, "temperature": options.temperature, "request_style": style,
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
        )
        frame = frame.with_columns(pl.Series("duplicate", kinds, dtype=pl.String), pl.Series("duplicate_of", of, dtype=pl.String))
        summary.duplicates = {k: found.get(k, 0) for k in DUPLICATE_KINDS}
        if options.dedup == "drop":
            frame = frame.filter(pl.col("duplicate").is_null())
    elif options.dedup != "off":
        summary.duplicates = {k: 0 for k in DUPLICATE_KINDS}
    summary.posts_kept = frame.height
    summary.cost_usd = estimate_cost(backend, summary.prompt_tokens, summary.completion_tokens, options.price_in, options.price_out,
                                     summary.price_factor)
    return frame, summary
