"""The calls: concurrent, retried, and cached so that a killed run resumes where it stopped.

* Concurrency: ``asyncio`` with the SDK's ``AsyncOpenAI`` client, at most ``concurrency`` requests in flight.
* Retries: on 429, 408/409, 5xx, timeouts and dropped connections, with exponential backoff and
  jitter, waiting what a ``Retry-After`` (or ``retry-after-ms``) header asks. The SDK's own retries
  are off (``max_retries=0``) so that the tries are counted here. After ``tries`` attempts the call
  is recorded as failed and the run goes on; a refused key (401/403) or an unknown model (404)
  stops the run, since no later call can succeed.
* Answers: every answer, from the server or from a cache line, passes one gate,
  :func:`check_answer`, before it is used or cached: its shape is checked (``content`` text or
  null, ``finish_reason`` text or null, token counts whole numbers >= 0) and the API key is
  redacted from its text. A malformed answer from the server is a failed try (retried, then
  reported as a failed call) and is never cached; a cache line that does not pass is skipped
  and counted, and its call is made again. So no odd answer can crash a run or poison its cache,
  and no echoed key can reach a file.
* Cache: each finished call is appended to a JSON-lines file as one line, flushed and synced,
  keyed by the hash of its request and of the server that answers it (``backends.cache_identity``).
  A run killed at any moment (``kill -9``) loses at most the calls in flight; a torn last line is cut off when the cache is opened again. Failed calls are
  not cached, so running again retries them. Lines are split on ``\n`` only, so text holding
  U+2028, U+2029 or U+0085 reads back as written.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.generation.backends import Backend, redact
from smm4h_cli.io import jsonl_lines


@dataclass(frozen=True)
class CallSpec:
    """One request: its place in the run, its cache key and what is sent."""

    index: int
    key: str
    request: dict[str, Any]


@dataclass
class CallResult:
    index: int
    key: str
    content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    cached: bool = False
    error: str | None = None
    #: the error is the server's being busy (429, 5xx, timeouts, ...) through every try, not a refusal
    transient: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class RetryPolicy:
    """``tries`` attempts per call; backoff ``base * 2**(retry-1)`` seconds (capped), half of it jittered."""

    tries: int = 6
    base: float = 1.0
    cap: float = 60.0
    max_retry_after: float = 600.0
    timeout: float = 120.0


def refused_format_message(status: int, message: str, auto_chose: bool = False) -> str:
    """The message for a call refused because of its ``response_format`` (the run stops, exit 2).

    ``auto_chose``: ``--output-format auto`` chose JSON, and would choose it again, so only
    ``list`` is offered."""
    return (
        f"the server rejected the request's response_format (HTTP {status}: {message}); it cannot give "
        f"--output-format json. Use --output-format list (the numbered list){'' if auto_chose else ' or auto'}."
    )


class FormatRefused(InputError):
    """A call refused for its ``response_format`` (HTTP 400/422 naming it): no later call can succeed.

    Its text is the message for an explicit ``--output-format json``; ``generate`` words it for the
    format the run chose (:func:`structured.refused_format_message`)."""

    def __init__(self, status: int, detail: str):
        super().__init__(refused_format_message(status, detail))
        self.status, self.detail = status, detail


class MalformedAnswer(ValueError):
    """An answer (from a server, or a line of the cache) without the shape of a chat answer."""


#: The fields of an answer, as cached; a cache line also has ``key``, ``call`` and ``retries``.
ANSWER_FIELDS = ("content", "finish_reason", "prompt_tokens", "completion_tokens")
_CACHE_FIELDS = (*ANSWER_FIELDS, "retries")
_TEXT_FIELDS = ("content", "finish_reason")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "a list", str: "text", type(None): "null"}.get(type(value), type(value).__name__)


def check_answer(answer: Any, fields: tuple[str, ...] = ANSWER_FIELDS) -> dict[str, Any]:
    """The one rule for the shape of an answer, and the one place the API key is taken out of it.

    ``answer`` must be a mapping holding every name of ``fields``: ``content`` and
    ``finish_reason`` text or null, every other field a whole number >= 0. Returns those fields,
    with the API key redacted from every text. Raises :class:`MalformedAnswer` saying what is wrong.
    """
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"the answer is {_kind(answer)}, not an object")
    missing = [name for name in fields if name not in answer]
    if missing:
        raise MalformedAnswer(f"no {', '.join(missing)}")
    for name in fields:
        value = answer[name]
        if name in _TEXT_FIELDS:
            if value is not None and not isinstance(value, str):
                raise MalformedAnswer(f"{name} is {_kind(value)}, not text")
        elif type(value) is not int or value < 0:
            raise MalformedAnswer(f"{name} is {_kind(value) if type(value) is not int else value}, not a whole number >= 0")
    return {name: redact(answer[name]) if isinstance(answer[name], str) else answer[name] for name in fields}


def answer_of_completion(body: Any) -> dict[str, Any]:
    """The answer in the JSON body of a chat completion, checked by :func:`check_answer`.

    A server that reports no ``usage`` (or null counts) is taken to have used 0 tokens.
    """
    if not isinstance(body, dict):
        raise MalformedAnswer(f"the answer is {_kind(body)}, not an object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedAnswer("no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise MalformedAnswer("no message")
    usage = body.get("usage")
    usage = {} if usage is None else usage
    if not isinstance(usage, dict):
        raise MalformedAnswer(f"usage is {_kind(usage)}, not an object")
    return check_answer({
        "content": message.get("content"), "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": 0 if usage.get("prompt_tokens") is None else usage["prompt_tokens"],
        "completion_tokens": 0 if usage.get("completion_tokens") is None else usage["completion_tokens"],
    })


class CallCache:
    """Finished calls, one JSON line each, appended as they finish."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.ignored = 0

    def load(self) -> dict[str, dict]:
        """The cached calls by key, each line checked by :func:`check_answer`.

        A torn last line (the process was killed mid-write) is cut off. A line that is not JSON,
        misses a field or does not hold a well-formed answer is skipped and counted in
        ``ignored``: its call is simply made again.
        """
        if self.path is None or not self.path.exists():
            return {}
        try:
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                keep = raw.rfind(b"\n") + 1
                with open(self.path, "r+b") as f:
                    f.truncate(keep)
                raw = raw[:keep]
                self.ignored += 1
        except OSError as exc:
            raise InputError(f"cannot read the call cache {self.path}: {exc.strerror}. Give another --cache, or --no-cache.") from None
        records = {}
        # surrogateescape keeps a line's undecodable bytes, so that line alone is skipped below
        for line in jsonl_lines(raw.decode("utf-8", errors="surrogateescape")):
            if not line.strip():
                continue
            try:
                record = json.loads(line.encode("utf-8", errors="surrogateescape").decode("utf-8"))
                if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                    raise MalformedAnswer("no key")
                records[record["key"]] = {**record, **check_answer(record, _CACHE_FIELDS)}
            except (UnicodeDecodeError, json.JSONDecodeError, MalformedAnswer):
                self.ignored += 1
        return records

    def append(self, record: dict) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise RunError(f"cannot append to the call cache {self.path}: {exc.strerror}. The calls finished before are kept in it.") from None


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after(headers: Any) -> float | None:
    """Seconds a response asks us to wait: ``retry-after-ms``, or ``Retry-After`` in seconds or as
    an HTTP date. None (the default backoff) when there is no such header or its value is neither."""
    if headers is None:
        return None
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if not value or not str(value).strip():
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(str(value))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _client(backend: Backend, policy: RetryPolicy):
    import openai

    # The SDK's default connection pool (1,000 connections) is far above any --concurrency.
    return openai.AsyncOpenAI(base_url=backend.base_url, api_key=backend.api_key(), max_retries=0, timeout=policy.timeout)


async def _call(client, spec: CallSpec, policy: RetryPolicy, model: str) -> CallResult:
    import openai

    retries = 0
    while True:
        wait: float | None = None
        try:
            # the raw body, so that its shape is checked here, by the one rule, not trusted
            raw = await client.chat.completions.with_raw_response.create(**spec.request)
            try:
                body = json.loads(raw.content)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise MalformedAnswer("not JSON") from None
            return CallResult(spec.index, spec.key, **answer_of_completion(body), retries=retries)
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in (401, 403):
                raise RunError(f"the server refused the API key ({status}); check OPENAI_API_KEY. Finished calls are cached.") from None
            if status == 404:
                raise RunError(f"the server answered 404 for model '{model}': {_message(exc)}. Check --model and --base-url.") from None
            if "response_format" in spec.request and (
                (status in (400, 422) and _about_format(_message(exc)))
                # llama-cpp-python's server answers a response_format it does not take (json_schema)
                # with a 500 naming it: a refusal of the request, not a busy server
                or (status >= 500 and _names_response_format(_message(exc)))
            ):
                raise FormatRefused(status, _message(exc)) from None
            if status not in (408, 409, 429) and status < 500:
                return CallResult(spec.index, spec.key, retries=retries, error=f"HTTP {status}: {_message(exc)}")
            wait = retry_after(exc.response.headers)
            error = f"HTTP {status}"
        except openai.APITimeoutError:
            error = "timeout"
        except openai.APIConnectionError:
            error = "connection error"
        except MalformedAnswer as exc:
            error = f"malformed response ({exc})"
        except openai.APIResponseValidationError:
            error = "malformed response"
        retries += 1
        if retries >= policy.tries:
            return CallResult(spec.index, spec.key, retries=retries - 1, error=f"{error} after {policy.tries} tries", transient=True)
        if wait is None:
            step = min(policy.cap, policy.base * 2 ** (retries - 1))
            wait = step / 2 + random.uniform(0, step / 2)
        await asyncio.sleep(min(wait, policy.max_retry_after))


def _about_format(message: str) -> bool:
    """A refusal that names the JSON output (not, say, a prompt too long for the context)."""
    lowered = message.lower()
    return any(word in lowered for word in ("response_format", "json_schema", "schema", "json"))


def _names_response_format(message: str) -> bool:
    """A server error that names the request's ``response_format`` (what a 5xx must name to count as a refusal)."""
    lowered = message.lower()
    return "response_format" in lowered or "json_schema" in lowered


def _message(exc: Exception) -> str:
    """A server's error text, as shown and recorded: the API key redacted, at most 300 characters."""
    text = str(getattr(exc, "message", "") or exc)
    return redact(text)[:300]


async def _run(
    specs: list[CallSpec],
    backend: Backend,
    cache: CallCache,
    concurrency: int,
    policy: RetryPolicy,
    on_result: Callable[[CallResult], None],
) -> list[CallResult]:
    client = _client(backend, policy)
    gate = asyncio.Semaphore(concurrency)
    results: list[CallResult] = []

    async def one(spec: CallSpec) -> None:
        async with gate:
            result = await _call(client, spec, policy, backend.request_model)
        if not result.failed:
            cache.append({
                "key": result.key, "call": result.index, "content": result.content,
                "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens, "retries": result.retries,
            })
        results.append(result)
        on_result(result)

    tasks = [asyncio.ensure_future(one(s)) for s in specs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    return results


def run_calls(
    specs: list[CallSpec],
    backend: Backend,
    cache: CallCache,
    concurrency: int,
    policy: RetryPolicy,
    on_result: Callable[[CallResult], None] = lambda r: None,
) -> list[CallResult]:
    """Make the calls (none cached: the caller has taken those out) and return their results."""
    if not specs:
        return []
    return asyncio.run(_run(specs, backend, cache, concurrency, policy, on_result))


def cached_result(spec: CallSpec, record: dict) -> CallResult:
    """The result of a call from its cache line (checked when the cache was loaded)."""
    return CallResult(
        spec.index, spec.key, record["content"], record["finish_reason"],
        record["prompt_tokens"], record["completion_tokens"], record["retries"], cached=True,
    )
