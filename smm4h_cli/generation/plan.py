"""The plan of a run's calls: call ``i``'s request depends only on the options, the training data, the seed and ``i``.

Call ``i`` shows the few-shot examples drawn by ``Random((seed, i))`` and (for ``attributes``)
the attribute values drawn for ``i``, and its request carries a per-call seed. So a resumed run
asks exactly what the first run asked and the cache answers the calls that finished; a
``--fill`` run, whose number of calls depends on how many posts were kept, extends the same
sequence, so a resumed one replays its cached calls first and never over-generates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.generation import attributes as attrs
from smm4h_cli.generation.backends import Backend, cache_identity
from smm4h_cli.generation.engine import CallSpec
from smm4h_cli.generation.prompts import few_shot_prompt, prompt_hash, request_hash
from smm4h_cli.generation.structured import OutputFormat, known_format

#: The embedded SmolLM2 loops without a repeat penalty; 10 short posts fit in this many tokens.
EMBEDDED_REPEAT_PENALTY = 1.2
EMBEDDED_MAX_TOKENS = 512
#: JSON output adds quotes and commas, and its grammar allows posts up to 280 characters.
EMBEDDED_JSON_MAX_TOKENS = 768
#: The embedded model's sampling temperature, chosen from bench/generate_tuning.py's grid (bench/RESULTS.md):
#: with JSON output, 0.7 kept the most posts that are neither repeats nor copies in the first grid (90% of
#: those asked; 0 gave 41% exact repeats, 1.0 more near repeats and copies). With the 512-token penalty
#: window, the three-word grammar and grammar-last sampling, every JSON setting kept 93-99% clean posts
#: (0.7: 96%), within what 200 posts tell apart. The paper's 0 stays the default of every other backend.
EMBEDDED_TEMPERATURE = 0.7


@dataclass(frozen=True)
class PlannedCall:
    index: int
    count: int
    positive_ids: tuple[str, ...]
    negative_ids: tuple[str, ...]
    attributes: dict[str, str] | None
    prompt_hash: str
    spec: CallSpec
    prompt: str = ""
    #: the examples shown, (id, text), positives then negatives: what an ``example_copy`` copies
    shown: tuple[tuple[str, str], ...] = ()


def small_model(backend: Backend) -> bool:
    """SmolLM2, embedded or served by any compatible server (llama.cpp, Ollama, vLLM): a model too
    small to follow the paper's prompt, which gets the plain list request and a completion limit."""
    return backend.kind == "embedded" or "smollm" in backend.model.lower()


def request_style_for(options, backend: Backend) -> str:
    if options.request_style != "auto":
        return options.request_style
    return "list" if small_model(backend) else "paper"


def temperature_for(options, backend: Backend) -> float:
    """``--temperature``, else the paper's 0, or the tuned ``EMBEDDED_TEMPERATURE`` for the embedded model."""
    if options.temperature is not None:
        return options.temperature
    return EMBEDDED_TEMPERATURE if backend.kind == "embedded" else 0.0


def repeat_penalty_for(options, backend: Backend) -> float | None:
    if options.repeat_penalty is not None:
        return options.repeat_penalty
    return EMBEDDED_REPEAT_PENALTY if backend.kind == "embedded" else None


def static_format(options, backend: Backend) -> OutputFormat:
    """The output format known without asking the server (what ``plan_calls`` uses when given none):
    a compatible server's ``auto`` is taken as the list, its ``json`` as the ``json_schema`` form."""
    known = known_format(options.output_format, backend.kind, backend.model)
    if known is not None:
        return known
    return OutputFormat("json", "json_schema") if options.output_format == "json" else OutputFormat("list")


class Planner:
    """Builds call ``i`` of a run on demand (a ``--fill`` run does not know its number of calls ahead)."""

    def __init__(self, options, backend: Backend, train: pl.DataFrame, fmt: OutputFormat | None = None):
        if "label" not in train.columns:
            raise InputError("the training data has no label column: the few-shot examples need labels 0 and 1 (see --label-col).")
        self.pos = train.filter(pl.col("label") == 1).select("id", "text").rows()
        self.neg = train.filter(pl.col("label") == 0).select("id", "text").rows()
        k = options.examples
        if len(self.pos) < k or len(self.neg) < k:
            raise InputError(
                f"the training data has {len(self.pos)} positive and {len(self.neg)} negative posts; {k} of each are shown "
                f"per call. Lower --examples or give a larger --train file."
            )
        self.options, self.backend = options, backend
        self.format = fmt or static_format(options, backend)
        self.style = request_style_for(options, backend)
        json_output = self.format.name == "json"
        self.max_tokens = options.max_tokens or (
            (EMBEDDED_JSON_MAX_TOKENS if json_output else EMBEDDED_MAX_TOKENS) if small_model(backend) else None
        )
        self.penalty = repeat_penalty_for(options, backend)
        self.temperature = temperature_for(options, backend)
        self.server = cache_identity(backend)  # in the cache key, not in the request

    def call(self, i: int, count: int) -> PlannedCall:
        options, k = self.options, self.options.examples
        rng = random.Random(f"examples:{options.seed}:{i}")
        shown_pos = [self.pos[j] for j in rng.sample(range(len(self.pos)), k)]
        shown_neg = [self.neg[j] for j in rng.sample(range(len(self.neg)), k)]
        chosen = attrs.draw(options.attributes, options.seed, i) if options.strategy == "attributes" else None
        prompt = few_shot_prompt(options.task, [t for _, t in shown_pos], [t for _, t in shown_neg], count, chosen,
                                 self.style, self.format.name)
        request: dict[str, Any] = {
            "model": self.backend.request_model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "seed": (options.seed * 1_000_003 + i) % 2**31,
        }
        if self.max_tokens:
            request["max_tokens"] = self.max_tokens
        if self.penalty is not None:
            request["extra_body"] = {"repeat_penalty": self.penalty}
        response_format = self.format.response_format(count)
        if response_format is not None:
            request["response_format"] = response_format
        spec = CallSpec(i, request_hash(request, self.server), request)
        return PlannedCall(
            i, count, tuple(p for p, _ in shown_pos), tuple(n for n, _ in shown_neg), chosen, prompt_hash(prompt), spec,
            prompt, tuple(shown_pos + shown_neg),
        )


def plan_calls(options, backend: Backend, train: pl.DataFrame, fmt: OutputFormat | None = None) -> list[PlannedCall]:
    """The ``ceil(n / per_call)`` calls of a run that asks for ``n`` posts (without ``--fill``)."""
    planner = Planner(options, backend, train, fmt)
    return [planner.call(i, min(options.per_call, options.n - i * options.per_call)) for i in range(options.calls)]
