"""The calls: concurrent, retried, and cached so that a killed run resumes where it stopped.

* Concurrency: ``asyncio`` with the SDK's ``AsyncOpenAI`` client, at most ``concurrency`` requests in flight.
* Retries: on 429, 408/409, 5xx, timeouts and dropped connections, with exponential backoff and
  jitter, waiting what a ``Retry-After`` (or ``retry-after-ms``) header asks. The SDK's own retries
  are off (``max_retries=0``) so that the tries are counted here. After ``tries`` attempts the call
  is recorded as failed and the run goes on; a refused key (401/403) or an unknown model (404)
  stops the run, since no later call can succeed.
* Cache: each finished call is appended to a JSON-lines file as one line, flushed and synced,
  keyed by the hash of its request. A run killed at any moment (``kill -9``) loses at most the
  calls in flight; a torn last line is cut off when the cache is opened again. Failed calls are
  not cached, so running again retries them.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from smm4h_cli.errors import RunError
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


class CallCache:
    """Finished calls, one JSON line each, appended as they finish."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.ignored = 0

    def load(self) -> dict[str, dict]:
        """The cached calls by key. A torn last line (the process was killed mid-write) is cut off."""
        if self.path is None or not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
            raw = raw[:keep]
            self.ignored += 1
        records = {}
        for line in jsonl_lines(raw.decode("utf-8", errors="replace")):
            try:
                record = json.loads(line)
                records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                self.ignored += 1
        return records

    def append(self, record: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def retry_after(headers: Any) -> float | None:
    """Seconds a response asks us to wait: ``retry-after-ms``, or ``Retry-After`` in seconds or as a date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


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
            response = await client.chat.completions.create(**spec.request)
            if not getattr(response, "choices", None):
                raise _Malformed()
            choice = response.choices[0]
            usage = response.usage
            return CallResult(
                spec.index, spec.key, choice.message.content, choice.finish_reason,
                getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0, retries,
            )
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in (401, 403):
                raise RunError(f"the server refused the API key ({status}); check OPENAI_API_KEY. Finished calls are cached.") from None
            if status == 404:
                raise RunError(f"the server answered 404 for model '{model}': {redact(_message(exc))}. Check --model and --base-url.") from None
            if status not in (408, 409, 429) and status < 500:
                return CallResult(spec.index, spec.key, retries=retries, error=f"HTTP {status}: {redact(_message(exc))}")
            wait = retry_after(exc.response.headers)
            error = f"HTTP {status}"
        except openai.APITimeoutError:
            error = "timeout"
        except openai.APIConnectionError:
            error = "connection error"
        except (_Malformed, openai.APIResponseValidationError, json.JSONDecodeError, AttributeError, IndexError, TypeError):
            error = "malformed response"
        retries += 1
        if retries >= policy.tries:
            return CallResult(spec.index, spec.key, retries=retries - 1, error=f"{error} after {policy.tries} tries")
        if wait is None:
            step = min(policy.cap, policy.base * 2 ** (retries - 1))
            wait = step / 2 + random.uniform(0, step / 2)
        await asyncio.sleep(min(wait, policy.max_retry_after))


class _Malformed(Exception):
    """A 200 answer without the fields of a chat completion."""


def _message(exc: Exception) -> str:
    text = str(getattr(exc, "message", "") or exc)
    return text[:300]


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
    return CallResult(
        spec.index, spec.key, record.get("content"), record.get("finish_reason"),
        int(record.get("prompt_tokens") or 0), int(record.get("completion_tokens") or 0),
        int(record.get("retries") or 0), cached=True,
    )
