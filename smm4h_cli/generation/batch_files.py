"""The Batch API's files and errors: the request file's lines, in parts within the API's limits,
the record of a round (the sidecar's content), the outcome of each line of a batch's output and
error files, and a batch refused for the account's queue."""

from __future__ import annotations

import json
from typing import Any

from smm4h_cli.generation.backends import redact
from smm4h_cli.generation.engine import CallSpec, MalformedAnswer, answer_of_completion

ENDPOINT = "/v1/chat/completions"
#: The Batch API's limits on one batch: requests, and bytes of its request file (OpenAI's Batch
#: API reference: 50,000 requests, 200 MB); a round of more is sent in parts.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 10**6


def request_line(spec: CallSpec) -> dict[str, Any]:
    """One line of the request file: the synchronous request, with ``extra_body`` merged into the body."""
    body = {k: v for k, v in spec.request.items() if k != "extra_body"}
    body.update(spec.request.get("extra_body") or {})
    return {"custom_id": spec.key, "method": "POST", "url": ENDPOINT, "body": body}


def ordered(specs: dict[str, CallSpec]) -> list[CallSpec]:
    """The specs in the order of their calls."""
    return sorted(specs.values(), key=lambda spec: spec.index)


def split_parts(specs: list[CallSpec]) -> list[list[str]]:
    """The keys of ``specs``, in order, in parts of at most ``MAX_REQUESTS`` requests and
    ``MAX_BYTES`` bytes of request file each (one batch each)."""
    parts: list[list[str]] = []
    size = 0
    for spec in specs:
        line = len(json.dumps(request_line(spec), ensure_ascii=False).encode("utf-8")) + 1
        if not parts or len(parts[-1]) >= MAX_REQUESTS or size + line > MAX_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(spec.key)
        size += line
    return parts


def round_record(round_: int, pending: dict[str, CallSpec]) -> dict:
    """The record of a round about to be sent: the pending calls in parts, nothing uploaded yet."""
    return {"round": round_, "parts": split_parts(ordered(pending)), "part": 0, "input_file_id": None, "batch_id": None}


def is_count(value: Any, below: int | None = None) -> bool:
    """Whether ``value`` is a whole number (not a bool) from 0, below ``below`` if given."""
    return type(value) is int and value >= 0 and (below is None or value < below)


def outcome(record: dict) -> dict | tuple[str, bool]:
    """A checked answer, or ``(error, final)``: a request refused for itself (4xx but 408, 409,
    429) is final; a server error, a rate limit, an expiry or a malformed answer is sent again."""
    response = record.get("response") if isinstance(record.get("response"), dict) else {}
    status = response.get("status_code")
    if status == 200:
        try:
            return answer_of_completion(response.get("body"))
        except MalformedAnswer as exc:
            return f"malformed response ({exc})", False
    error = record.get("error") if isinstance(record.get("error"), dict) else None
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    detail = error or (body.get("error") if isinstance(body.get("error"), dict) else {}) or {}
    message = redact(str(detail.get("message") or detail.get("code") or ""))[:300]
    if isinstance(status, int):
        final = 400 <= status < 500 and status not in (408, 409, 429)
        return (f"HTTP {status}: {message}" if final else f"HTTP {status}"), final
    return f"batch request {detail.get('code') or 'error'}", False


def queue_full(batch) -> bool:
    """Whether a ``failed`` batch was refused for the account's queue of enqueued tokens (which
    frees as other batches finish), not for its requests."""
    return any(e.code == "token_limit_exceeded" for e in (batch.errors.data or [])) if batch.errors else False
