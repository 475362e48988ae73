"""What a generation run is asked to do: :class:`GenerateOptions`, checked when made.

Its own module so that the run (``generate.py``) and the assembly of its posts
(``assemble.py``) can both name it without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from smm4h_cli.errors import InputError
from smm4h_cli.generation import attributes as attrs
from smm4h_cli.generation.prompts import REQUEST_STYLES, TaskDefinition
from smm4h_cli.generation.structured import OUTPUT_FORMATS


#: ``paper``: the paper's few-shot prompt. ``attributes``: the same, with one combination of
#: attribute values fixed per call (AttrPrompt), spread evenly over the calls.
STRATEGIES = ("paper", "attributes")
DEDUP_MODES = ("flag", "drop", "off")
DEFAULT_TIMEOUT = 120.0
#: The float options, each refused unless finite (``nan`` would pass every range check).
_FLOAT_OPTIONS = ("temperature", "similarity", "timeout", "backoff", "repeat_penalty", "price_in", "price_out", "poll_interval")
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
        max_tokens: completion limit per call; None: the server's default (for SmolLM2, see ``small_model``: 512, or 768 with JSON output).
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
        max_calls: the most calls of a ``fill`` run, its first round included (a limit below
            ``ceil(n / per_call)`` makes the first round that short); None: ``3 * ceil(n / per_call)``.
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
        for name in _FLOAT_OPTIONS:  # nan passes every comparison below, and inf is no setting either
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                what = "the repeat penalty" if name == "repeat_penalty" else f"--{name.replace('_', '-')}"
                raise InputError(f"{what} must be a finite number; got {value}.")
        if self.repeat_penalty is not None and self.repeat_penalty <= 0:
            raise InputError(f"the repeat penalty must be positive; got {self.repeat_penalty}.")
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
        if self.attributes is not None and self.strategy != "attributes":  # as --max-calls without --fill
            raise InputError("--attributes FILE sets the attributes of --strategy attributes, and --strategy paper uses none: "
                             "add --strategy attributes, or leave --attributes out.")
        if self.attributes is not None:
            self.attributes = attrs.validate_attributes(self.attributes, "--attributes")
        elif self.strategy == "attributes":
            number = {"task5": 5, "task6": 6}.get(self.task.name)
            if number is None:
                raise InputError(f"--strategy attributes needs --attributes FILE for the task '{self.task.name}' (built-in sets exist for tasks 5 and 6).")
            self.attributes = attrs.builtin_attributes(number)

    @property
    def calls(self) -> int:
        """``ceil(n / per_call)``: the calls of a run without ``fill``."""
        return math.ceil(self.n / self.per_call)

    @property
    def first_round(self) -> int:
        """Calls of the first round: ``calls``, and for ``fill`` at most ``max_calls``."""
        return min(self.calls, self.call_limit)

    @property
    def call_limit(self) -> int:
        if not self.fill:
            return self.calls
        return self.max_calls if self.max_calls is not None else 3 * self.calls
