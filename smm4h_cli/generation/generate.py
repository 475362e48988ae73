"""The whole generation run: plan the calls (``plan.py``), answer them from the cache or the
server, parse, flag duplicates, and return the posts with their provenance and a summary.

A resumed run asks exactly what the first run asked (the plan is deterministic), the cache
answers the calls that finished, and the output (ordered by call index) equals that of an
uninterrupted run. ``--fill`` makes calls in rounds until ``n`` posts are kept (``fill.py``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import polars as pl

from smm4h_cli.generation.assemble import Summary, assemble, estimate_cost  # noqa: F401 (re-exported)
from smm4h_cli.errors import InputError
from smm4h_cli.generation.batch import check_batch_backend, run_batch, state_path
from smm4h_cli.generation.backends import Backend, embedded_server, resolve_backend
from smm4h_cli.generation.engine import (
    CallCache, CallResult, FormatRefused, RetryPolicy, cached_result, refused_format_message, run_calls,
)
from smm4h_cli.generation.fill import next_round
from smm4h_cli.generation.parsing import parse_answer
from smm4h_cli.generation.plan import (  # noqa: F401 (re-exported: the plan's names, as before the split)
    EMBEDDED_MAX_TOKENS, EMBEDDED_REPEAT_PENALTY, EMBEDDED_TEMPERATURE, PlannedCall, Planner, plan_calls,
    repeat_penalty_for, request_style_for, small_model, temperature_for,
)
from smm4h_cli.generation.structured import resolve_output_format
from smm4h_cli.progress import ProgressFn, report

from smm4h_cli.generation.options import (  # noqa: F401 (re-exported: where they were defined before)
    DEDUP_MODES, DEFAULT_TIMEOUT, EMBEDDED_TIMEOUT, STRATEGIES, GenerateOptions,
)


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
    check_batch_record(options)
    backend = backend or resolve_backend(options.model, options.base_url)
    Planner(options, backend, train)  # the training data is checked before any server is asked
    timeout = options.timeout or (EMBEDDED_TIMEOUT if backend.kind == "embedded" else DEFAULT_TIMEOUT)
    if options.batch:
        check_batch_backend(backend)  # the embedded model, or a server without /v1/batches: refused before any call
    probe_policy = RetryPolicy(tries=options.tries, base=options.backoff, timeout=min(timeout, DEFAULT_TIMEOUT))
    fmt = resolve_output_format(options.output_format, backend, policy=probe_policy, probing=not options.batch)
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
        report(progress, "generate", len(results), max(len(plan), options.first_round),
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
            try:
                run_calls(todo, live["backend"], cache, concurrency, policy, note)
            except FormatRefused as exc:  # worded for the format chosen: auto would choose JSON again
                raise InputError(refused_format_message(exc.status, exc.detail, auto_chose=fmt.how != "asked")) from None

        report(progress, "generate", 0, options.first_round, "0 posts · 0 tokens · 0 failed")
        size = options.first_round  # --max-calls bounds the first round too
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


def check_batch_record(options: GenerateOptions) -> None:
    """Refuse (InputError) a run without ``--batch`` on a cache whose ``--batch`` run is recorded:
    the calls in flight or planned there could be paid twice."""
    if not options.batch and options.cache_path is not None and state_path(options.cache_path).exists():
        raise InputError(
            f"a --batch run of this cache is recorded, with batches in flight or planned ({state_path(options.cache_path)}): "
            "calls made now could be paid twice. Run the same command with --batch to finish it, or delete that file to abandon it."
        )


def _unparsed_advice(output_format: str) -> str:
    """What to change when no answer in ``output_format`` could be parsed."""
    if output_format == "json":
        return ('The model did not answer with the JSON object {"posts": [...]} asked for (--output-format json): try '
                "--output-format list (the numbered list), a larger --max-tokens if answers were truncated, or a larger model (--model).")
    return ("The model did not answer with the numbered list asked for: try --request-style list "
            "(a plain request that small models follow), a larger --max-tokens if answers were truncated, or a larger model (--model).")


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
            f"nothing written.{kept} {_unparsed_advice(summary.output_format)}"
        )
    return (
        f"all {summary.posts_parsed:,} posts parsed were dropped as duplicates or copies of --train posts (--dedup drop); "
        f"nothing written.{kept} Use --dedup flag to keep them marked, or raise --temperature for more varied posts."
    )
