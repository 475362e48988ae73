"""The whole generation run: plan the calls (``plan.py``), answer them from the cache or the
server, parse, flag duplicates, and return the posts with their provenance and a summary.

A resumed run asks exactly what the first run asked (the plan is deterministic), the cache
answers the calls that finished, and the output (ordered by call index) equals that of an
uninterrupted run. ``--fill`` makes calls in rounds until ``n`` posts are kept (``fill.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.generation import attributes as attrs
from smm4h_cli.generation.assemble import Summary, assemble, estimate_cost  # noqa: F401 (re-exported)
from smm4h_cli.generation.batch import check_batch_backend, run_batch
from smm4h_cli.generation.backends import Backend, embedded_server, resolve_backend
from smm4h_cli.generation.engine import CallCache, CallResult, RetryPolicy, cached_result, run_calls
from smm4h_cli.generation.fill import next_round
from smm4h_cli.generation.parsing import parse_answer
from smm4h_cli.generation.plan import (  # noqa: F401 (re-exported: the plan's names, as before the split)
    EMBEDDED_MAX_TOKENS, EMBEDDED_REPEAT_PENALTY, EMBEDDED_TEMPERATURE, PlannedCall, Planner, plan_calls,
    repeat_penalty_for, request_style_for, small_model, temperature_for,
)
from smm4h_cli.generation.prompts import REQUEST_STYLES, TaskDefinition
from smm4h_cli.generation.structured import OUTPUT_FORMATS, resolve_output_format
from smm4h_cli.progress import ProgressFn, report

#: ``paper``: the paper's few-shot prompt. ``attributes``: the same, with one combination of
#: attribute values fixed per call (AttrPrompt), spread evenly over the calls.
STRATEGIES = ("paper", "attributes")
DEDUP_MODES = ("flag", "drop", "off")
DEFAULT_TIMEOUT = 120.0
EMBEDDED_TIMEOUT = 600.0


@dataclass
class GenerateOptions:
    """Options of one generation run; the defaults are the paper's (§3.1).

    Attributes:
        task: the task's label definitions (``prompts.builtin_task(5)``, or ``load_definitions``).
        n: posts asked for in all; ``ceil(n / per_call)`` calls (the paper: 1,000 in 100 calls); with
            ``fill``, posts kept.
        strategy: one of ``STRATEGIES``.
        model, base_url: the backend (see ``backends.resolve_backend``); None: the defaults.
        temperature: sampling temperature; None: the paper's 0, or ``plan.EMBEDDED_TEMPERATURE`` for the
            embedded model (tuned, bench/generate_tuning.py).
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
        output_format: ``list`` (the numbered list), ``json`` (a JSON schema of exactly ``per_call``
            posts, ``structured.py``) or ``auto`` (json where the backend supports it).
        fill: ``n`` counts posts kept (parsed, not dropped by ``dedup``): calls go on in rounds until
            ``n`` are kept or ``max_calls`` were made.
        max_calls: the most calls of a ``fill`` run; None: ``3 * ceil(n / per_call)``.
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
    temperature: float | None = None
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
    output_format: str = "auto"
    fill: bool = False
    max_calls: int | None = None

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
        if self.temperature is not None and not 0 <= self.temperature <= 2:
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
        if self.output_format not in OUTPUT_FORMATS:
            raise InputError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}; got '{self.output_format}'.")
        if self.max_calls is not None and not self.fill:
            raise InputError("--max-calls bounds a --fill run; add --fill, or leave --max-calls out.")
        if self.fill and self.max_calls is not None and self.max_calls < 1:
            raise InputError(f"--max-calls must be at least 1 (the most calls --fill may make); got {self.max_calls}.")
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
        """Calls of the first round: all of them without ``fill``."""
        return math.ceil(self.n / self.per_call)

    @property
    def call_limit(self) -> int:
        if not self.fill:
            return self.calls
        return self.max_calls if self.max_calls is not None else 3 * self.calls


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
    Planner(options, backend, train)  # the training data is checked before any server is asked
    timeout = options.timeout or (EMBEDDED_TIMEOUT if backend.kind == "embedded" else DEFAULT_TIMEOUT)
    if options.batch:
        check_batch_backend(backend)  # the embedded model, or a server without /v1/batches: refused before any call
    fmt = resolve_output_format(options.output_format, backend, timeout=min(timeout, DEFAULT_TIMEOUT), probing=not options.batch)
    planner = Planner(options, backend, train, fmt)
    cache = CallCache(options.cache_path)
    cached = cache.load()
    plan: list[PlannedCall] = []
    results: dict[int, CallResult] = {}
    tally = {"posts": 0, "prompt": 0, "completion": 0, "failed": 0}

    def note(result: CallResult) -> None:
        results[result.index] = result
        call = plan[result.index]
        if result.failed:
            tally["failed"] += 1
        else:
            tally["posts"] += len(parse_answer(result.content, call.count, result.finish_reason, fmt.name, call.prompt).posts)
        tally["prompt"] += result.prompt_tokens
        tally["completion"] += result.completion_tokens
        report(progress, "generate", len(results), max(len(plan), options.calls),
               f"{tally['posts']:,} posts · {tally['prompt'] + tally['completion']:,} tokens · {tally['failed']:,} failed")

    policy = RetryPolicy(tries=options.tries, base=options.backoff, timeout=timeout)
    # llama-cpp-python's server answers one request at a time: queued requests would only run
    # down their timeouts.
    concurrency = 1 if backend.kind == "embedded" else options.concurrency
    batches: list[str] = []
    live = {"backend": backend}
    with contextlib.ExitStack() as stack:

        def make(todo) -> None:
            if options.batch:
                batches.extend(run_batch(todo, backend, cache, note, poll_interval=options.poll_interval, timeout=timeout, progress=progress))
                return
            if live["backend"].kind == "embedded" and live["backend"].base_url is None:  # started only if some call is not cached
                live["backend"] = replace(backend, base_url=stack.enter_context(embedded_server()))
            run_calls(todo, live["backend"], cache, concurrency, policy, note)

        report(progress, "generate", 0, options.calls, "0 posts · 0 tokens · 0 failed")
        size = options.calls
        while size > 0:
            first = len(plan)
            plan.extend(planner.call(i, options.per_call if options.fill else min(options.per_call, options.n - i * options.per_call))
                        for i in range(first, first + size))
            for call in plan[first:]:
                if call.spec.key in cached:
                    note(cached_result(call.spec, cached[call.spec.key]))
            todo = [call.spec for call in plan[first:] if call.index not in results]
            if todo:
                make(todo)
            if not options.fill:
                break
            kept = assemble(options, backend, train, plan, results, fmt)[1].posts_kept
            size = next_round(options.n, kept, len(plan), options.per_call, options.call_limit)

    frame, summary = assemble(options, backend, train, plan, results, fmt, planner)
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
