"""Structured outputs: the answer constrained to a JSON object holding exactly ``per_call`` posts.

``--output-format json`` sends a JSON schema with every request, ``{"posts": [str, ...]}`` with
``minItems = maxItems = count``, in the form the backend takes:

``json_schema``  OpenAI's strict structured outputs (``{"type": "json_schema", "json_schema": {...,
                 "strict": true}}``), which vLLM (guided decoding), Ollama and llama.cpp's own
                 ``llama-server`` accept too;
``json_object``  llama-cpp-python's server (the embedded model): ``{"type": "json_object", "schema":
                 ...}``, which it turns into a grammar (its request type knows only ``text`` and
                 ``json_object``). This form also shapes each post (``POST_PATTERN``: at most 279
                 characters, starting with a letter, @ or #, at least two single spaces each
                 followed by a word, without JSON or markup characters), which the grammar enforces.

``auto`` resolves once per run (:func:`resolve_output_format`): the embedded server takes
``json_object`` (with ``POST_PATTERN``, SmolLM2 keeps 3.1 times the clean posts of its
numbered list, bench/RESULTS.md); an OpenAI model known to have structured outputs takes ``json_schema``; the
paper's ``gpt-4-0125-preview`` does not, so the paper's setting stays the paper's numbered list;
any other server is asked once, with a one-post probe, which form it takes (``list`` when neither).
How the format was found is recorded in the summary (``output_format_how``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.generation.backends import Backend
from smm4h_cli.generation.engine import CallCache, CallSpec, FormatRefused, RetryPolicy, run_calls

OUTPUT_FORMATS = ("auto", "json", "list")
#: OpenAI models with strict structured outputs (json_schema); others (the paper's gpt-4-0125-preview) have none.
OPENAI_JSON_MODELS = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")
#: Snapshots of those families that came before structured outputs (OpenAI's structured-outputs guide):
#: the first gpt-4o, and o1's previews.
OPENAI_NO_JSON_MODELS = ("gpt-4o-2024-05-13", "o1-mini", "o1-preview")
#: A tweet is at most 280 characters; the grammar form keeps each post within it (``POST_PATTERN``: 279).
MAX_POST_CHARS = 280
_CHAR, _WORD_CHAR = r'[^{}\[\]<>"\\]', r'[^{}\[\]<>"\\ ]'
#: The grammar form's post: at most 279 characters, none of ``{}[]<>"\\``, starting with a
#: letter, @ or #, and at least three words: two words of at most 40 characters, each followed
#: by one space, then a third word. A "word" here is any run of characters but the space (a tab
#: or a line break counts as part of one); the ``fragment_items`` rule, which counts words with
#: letters, still judges each post after parsing. Inside a bare string, SmolLM2 wrote pieces of JSON in about 40% of its items
#: (``"},\n body:"``, ``"[4]"``); the characters and the first one left 5 of 80 such fragments,
#: and single words (``"adults/kids"``, ``"#speechdelay"``) were most of the 6% the demo still
#: lost; with three words, 2 of 200 items were not kept (bench/RESULTS.md).
POST_PATTERN = r"^[A-Za-z@#]%s{0,39} %s{1,40} %s%s{0,%d}$" % (
    _WORD_CHAR, _WORD_CHAR, _WORD_CHAR, _CHAR, MAX_POST_CHARS - 84  # 1 + 39 + 1 + 40 + 1 + 1 + 196 = 279
)  # (279, one short of a tweet: the bound is a guard against run-on strings, not a tweet's limit)


@dataclass(frozen=True)
class OutputFormat:
    """What a run asks for: ``list`` or ``json``; for json, the ``form`` of ``response_format``; and how it was chosen."""

    name: str
    form: str | None = None
    how: str = "asked"

    def response_format(self, count: int) -> dict[str, Any] | None:
        """The request's ``response_format`` for ``count`` posts; None for the numbered list."""
        if self.name != "json":
            return None
        return response_format(self.form, count)


def posts_schema(count: int, *, bounded: bool = False) -> dict[str, Any]:
    """``{"posts": [exactly count strings]}``; ``bounded``: each post matching ``POST_PATTERN``."""
    item: dict[str, Any] = {"type": "string"}
    if bounded:
        item["pattern"] = POST_PATTERN
    return {
        "type": "object",
        "properties": {"posts": {"type": "array", "items": item, "minItems": count, "maxItems": count}},
        "required": ["posts"],
        "additionalProperties": False,
    }


def response_format(form: str, count: int) -> dict[str, Any]:
    if form == "json_object":
        return {"type": "json_object", "schema": posts_schema(count, bounded=True)}
    return {"type": "json_schema", "json_schema": {"name": "posts", "strict": True, "schema": posts_schema(count)}}


def _family(model: str, names: tuple[str, ...]) -> bool:
    return any(model == m or model.startswith(m + "-") for m in names)


def _openai_has_json(model: str) -> bool:
    return _family(model, OPENAI_JSON_MODELS) and not _family(model, OPENAI_NO_JSON_MODELS)


def known_format(asked: str, kind: str, model: str | None) -> OutputFormat | None:
    """The output format of ``--output-format asked`` when it is known without asking the server;
    None when only a probe can tell (a compatible server under ``auto`` or ``json``)."""
    if asked == "list":
        return OutputFormat("list")
    if kind == "embedded":
        # measured (bench/generate_tuning.py, bench/RESULTS.md): with POST_PATTERN's grammar the embedded
        # SmolLM2 keeps 3.1x the clean posts of its numbered list, in 1.8x the time per call
        return OutputFormat("json", "json_object", "asked" if asked == "json" else "known: the embedded server takes a JSON schema (grammar)")
    if kind == "openai" and _openai_has_json(model or ""):
        return OutputFormat("json", "json_schema", "asked" if asked == "json" else f"known: {model} has structured outputs")
    if asked == "auto" and kind == "openai":  # the paper's model among them: no probe paid for
        return OutputFormat("list", None, f"known: {model} has no structured outputs")
    return None


def resolve_output_format(asked: str, backend: Backend, probe_url: str | None = None, policy: RetryPolicy | None = None,
                          probing: bool = True) -> OutputFormat:
    """The run's output format for ``--output-format asked`` on ``backend``, found once per run.

    ``probe_url``: the base URL to probe (a compatible server, or OpenAI under an explicit
    ``json``); None skips probing. ``policy``: the probe's tries, backoff and timeout, those of
    the run's calls. Raises ``InputError`` when ``json`` was asked for and the backend refuses
    ``response_format``, and ``RunError`` when the server stays busy (429, 5xx, timeouts) through
    every try: nothing has been generated or written then.
    """
    if asked not in OUTPUT_FORMATS:
        raise InputError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}; got '{asked}'.")
    known = known_format(asked, backend.kind, backend.model)
    if known is not None:
        return known
    if not probing:
        return OutputFormat("json", "json_schema", "asked") if asked == "json" else OutputFormat("list", None, "not probed (--batch)")
    url = probe_url or backend.base_url
    refusals = []
    for form in ("json_schema", "json_object"):
        refused = probe(backend, url, form, policy or RetryPolicy())
        if refused is None:
            return OutputFormat("json", form, "asked" if asked == "json" else f"probed: the server took {form}")
        refusals.append(refused)
    if asked == "json":
        raise InputError(
            f"the server at {url} rejects response_format with a JSON schema ({refusals[0]}), so it cannot give "
            f"--output-format json. Use --output-format list (the numbered list) or auto."
        )
    return OutputFormat("list", None, f"probed: the server refused response_format ({refusals[0]})")


def probe(backend: Backend, url: str | None, form: str, policy: RetryPolicy) -> str | None:
    """Ask the server for one post in ``form``: None when it answers, else why it refused.

    The probe is a call like the run's (``engine.run_calls``, not cached): a busy server (429,
    408/409, 5xx, timeouts, dropped connections) is retried with the run's backoff and tries,
    and if it stays busy the run stops (``RunError``) rather than take it for a refusal. A refusal
    is a 4xx answer to the request (400/422 and the like), or a 5xx that names ``response_format``
    or ``json_schema`` (llama-cpp-python's server answers ``json_schema`` so).
    """
    request = {
        "model": backend.request_model,
        "messages": [{"role": "user", "content": 'Write 1 short fictional tweet. Answer with JSON: {"posts": ["..."]}'}],
        "max_tokens": 48, "temperature": 0, "response_format": response_format(form, 1),
    }
    try:
        [result] = run_calls([CallSpec(0, "probe", request)], replace(backend, base_url=url), CallCache(None), 1, policy)
    except FormatRefused as exc:
        return f"HTTP {exc.status}: {exc.detail[:200]}"
    if not result.failed:
        return None
    if result.transient:
        raise RunError(
            f"the server at {url} is busy: asked whether it takes --output-format json, it answered {result.error}; "
            "nothing was generated. Run the same command again later (or give --output-format list, which needs no probe)."
        )
    return result.error[:200]
