"""The calls through the OpenAI Batch API (``generate --batch``): half the price, answers within 24 h.

One round: the calls not in the cache become JSON-lines request files (``batch_files``: one per
part of at most 50,000 requests and 200 MB, the API's limits, in the order of the calls), each
uploaded (``/v1/files``, purpose ``batch``), a batch created on it (``/v1/batches``, window 24 h)
and polled with backoff until it ends, one batch in flight at a time; its output and error files
are downloaded, and every answer passes the one gate of the synchronous path
(``engine.answer_of_completion``) before it is cached and used.

Resume: the round's parts and the batch in flight are kept in a sidecar beside the cache
(``CACHE.batch.json``), written before each step that costs money can be repeated: after the
upload (the input file's id), and after the batch is created (its id). A run killed at any
moment resumes that batch, then the round's next part; one killed between the create and the
save finds it again by its input file (``GET /v1/batches``), so no batch is ever submitted
twice. The next run with calls to send sees a recorded batch to its end even when they are not
its calls (another ``--n``, a ``--fill`` round resumed): the answers it paid for are cached, a
call already in the cache is never sent, no batch is created for calls the run does not make,
and calls the record did not plan get rounds of their own afterwards. The sidecar is removed
when the run has every answer or has reported the calls that failed.

Ends other than ``completed``: the requests of a ``partially failed`` batch (its error file),
an ``expired`` or a ``cancelled`` one (their requests not answered) are submitted again in a
new batch, once (``rounds`` = 2), then reported as failed calls; a request refused for itself
(HTTP 400) and every request of a ``failed`` batch (the file was refused) are reported at once,
except a batch refused for the account's queue of enqueued tokens: the run stops, keeping the
round's plan for a re-run, as when the API refuses to create a batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from smm4h_cli import io
from smm4h_cli.errors import InputError, RunError
from smm4h_cli.generation.backends import Backend, redact
from smm4h_cli.generation.batch_files import ENDPOINT, is_count, ordered, outcome, queue_full, request_line, round_record
from smm4h_cli.generation.engine import CallCache, CallResult, CallSpec, cached_result
from smm4h_cli.progress import ProgressFn, report

#: The Batch API costs half of the synchronous price (OpenAI's price list).
BATCH_PRICE_FACTOR = 0.5
#: A request is sent in at most this many batches (the first, and one resubmission).
BATCH_ROUNDS = 2
WINDOW = "24h"
TERMINAL = ("completed", "failed", "expired", "cancelled")
#: Polls back off from ``poll_interval`` by this factor up to this many times ``poll_interval``.
POLL_GROWTH, POLL_CAP = 1.5, 30
#: Consecutive transient errors (connection, timeout, 429, 5xx) of one step before the run stops.
TRANSIENT_TRIES = 8


def state_path(cache_path: Path) -> Path:
    """The sidecar of the batch in flight, beside the call cache (and under its lock)."""
    return cache_path.with_name(cache_path.name + ".batch.json")


def _client(backend: Backend, timeout: float):
    import openai

    return openai.OpenAI(base_url=backend.base_url, api_key=backend.api_key(), max_retries=0, timeout=timeout)


def _message(exc: Exception) -> str:
    return redact(str(getattr(exc, "message", "") or exc))[:300]


def check_batch_backend(backend: Backend, timeout: float = 10.0) -> None:
    """Refuse ``--batch`` (InputError, before any call) for the embedded model and for a server
    without the Batch API (``GET /batches?limit=1`` answers 404, 405 or 501)."""
    import openai

    if backend.kind == "embedded":
        raise InputError(
            "--batch needs the OpenAI Batch API, and the embedded model has none. Leave out --batch, or give "
            "--model (OpenAI) or --base-url (a server with /v1/batches)."
        )
    client = _client(backend, timeout)
    try:
        client.batches.list(limit=1)
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            raise InputError(f"the server at {backend.base_url} refused the API key ({exc.status_code}); check OPENAI_API_KEY.") from None
        if exc.status_code in (404, 405, 501):
            raise InputError(
                f"the server at {backend.base_url} has no Batch API (GET /batches answered {exc.status_code}). "
                "Leave out --batch to make the calls one by one."
            ) from None
        raise RunError(f"the server at {backend.base_url} answered {exc.status_code} to GET /batches: {_message(exc)}. Try again later.") from None
    except (openai.APIConnectionError, openai.APITimeoutError):
        raise InputError(f"cannot reach the server at {backend.base_url}: start it, or fix --base-url.") from None
    finally:
        client.close()


def _transient(step: str, sleep: Callable[[float], None], base: float, fn: Callable[[], Any], batch_hint: str) -> Any:
    """``fn()``, retried with backoff on connection errors, timeouts, 429 and 5xx."""
    import openai

    for attempt in range(TRANSIENT_TRIES):
        try:
            return fn()
        except openai.APIStatusError as exc:
            if exc.status_code not in (408, 409, 429) and exc.status_code < 500:
                raise
            error = f"HTTP {exc.status_code}"
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            error = type(exc).__name__
        if attempt + 1 < TRANSIENT_TRIES:
            sleep(min(base * POLL_CAP, base * 2**attempt))
    raise RunError(f"{step} failed {TRANSIENT_TRIES} times ({error}). {batch_hint}")


class BatchRunner:
    """The rounds of one ``--batch`` run; see the module docstring."""

    def __init__(self, backend: Backend, cache: CallCache, on_result: Callable[[CallResult], None], *,
                 poll_interval: float = 15.0, timeout: float = 120.0, progress: ProgressFn | None = None,
                 rounds: int = BATCH_ROUNDS, sleep: Callable[[float], None] = time.sleep):
        if cache.path is None:
            raise InputError("--batch needs a call cache (it keeps the batch's id, so that a killed run resumes it): give --cache FILE or --out FILE.")
        self.backend, self.cache, self.on_result = backend, cache, on_result
        self.poll_interval, self.timeout, self.progress, self.rounds, self.sleep = poll_interval, timeout, progress, rounds, sleep
        self.state_file = state_path(cache.path)
        self.batch_ids: list[str] = []

    # ---------------------------------------------------------------- the sidecar

    def _load_state(self) -> dict | None:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"cannot read {self.state_file}, the record of the batch in flight. Delete it to submit a new batch.") from None
        if isinstance(state, dict) and isinstance(state.get("keys"), list) and "parts" not in state:
            state.update(parts=[state.pop("keys")], part=0)  # a record of one batch, written before parts
        if not (isinstance(state, dict) and is_count(state.get("round"), self.rounds) and is_count(state.get("part"))
                and all(k in state and (state[k] is None or isinstance(state[k], str)) for k in ("input_file_id", "batch_id"))
                and isinstance(state.get("parts"), list)
                and all(isinstance(p, list) and all(isinstance(k, str) for k in p) for p in state["parts"])):
            raise InputError(f"{self.state_file} is not a record of a batch. Delete it to submit a new batch.")
        return state

    def _save_state(self, state: dict) -> None:
        try:
            io.write_text(self.state_file, json.dumps(state, separators=(",", ":")) + "\n")  # a key per call: compact
        except OSError as exc:
            raise RunError(f"cannot write {self.state_file}: {exc.strerror}.") from None

    def _hint(self, state: dict | None) -> str:
        if state and state.get("batch_id"):
            return f"Run the same command again to resume batch {state['batch_id']} (its id is kept in {self.state_file})."
        return "Run the same command again; finished calls come from the cache."

    # ---------------------------------------------------------------- the rounds

    def run(self, specs: list[CallSpec]) -> None:
        """Answer every spec: each gets one ``on_result`` call, an answer (also cached) or a failure."""
        import openai

        try:
            self._run(specs)
        except openai.APIStatusError as exc:  # an answer no round can get past: a refused key, a bad request
            what = "refused the API key; check OPENAI_API_KEY" if exc.status_code in (401, 403) else _message(exc)
            raise RunError(f"the Batch API answered {exc.status_code}: {what}. {self._hint(self._load_state())}") from None

    def _run(self, specs: list[CallSpec]) -> None:
        ignored = self.cache.ignored
        held = self.cache.load()  # answers cached since the caller looked (an earlier batch of this run)
        self.cache.ignored = ignored  # the caller counted the cache's bad lines already
        for spec in specs:
            if spec.key in held:
                self.on_result(cached_result(spec, held[spec.key]))
        pending = {spec.key: spec for spec in specs if spec.key not in held}
        client = _client(self.backend, self.timeout)
        try:
            state = self._load_state()
            if state is not None and state["input_file_id"] is None and not any(state["parts"]):
                state.update(round_record(state["round"], pending))  # a record between rounds, written before plans were
            planned = {key for part in state["parts"] for key in part} if state else set()
            # the recorded rounds go on (their batch in flight seen to its end) for the calls they
            # planned; calls they did not plan (another --n, a --fill round) then get rounds of their own
            self._rounds(client, {k: s for k, s in pending.items() if k in planned}, state)
            self.state_file.unlink(missing_ok=True)
            self._rounds(client, {k: s for k, s in pending.items() if k not in planned}, None)
            self.state_file.unlink(missing_ok=True)
        finally:
            client.close()

    def _rounds(self, client, pending: dict[str, CallSpec], state: dict | None) -> None:
        """Every call of ``pending`` answered or failed, in rounds of parts: from ``state`` (a
        recorded round, whose batch in flight is collected even with nothing pending) or from round 0."""
        last_error: dict[str, str] = {}
        if state is None and pending:
            state = round_record(0, pending)
        while state is not None:
            while state["part"] < len(state["parts"]):
                part = state["parts"][state["part"]]
                if state["input_file_id"] is not None or any(key in pending for key in part):
                    self._send(client, state, part, pending, last_error)
                state.update(part=state["part"] + 1, input_file_id=None, batch_id=None)
                if state["part"] < len(state["parts"]):  # a run killed now goes on with the next part
                    self._save_state(state)
            following, state = state["round"] + 1, None
            if pending and following < self.rounds:  # the next round's plan, recorded: a run killed now goes on with it
                state = round_record(following, pending)
                self._save_state(state)
        for spec in ordered(pending):  # none but calls a recorded last round planned in a part already passed
            self._fail(spec, "not answered in the batches of the round the run resumed", True, self.rounds)

    def _send(self, client, state: dict, part: list[str], pending: dict[str, CallSpec], last_error: dict[str, str]) -> None:
        """The batch of the round's current ``part``: its pending calls uploaded unless the record
        holds its file, the batch created or found, polled to its end; its answers and failures
        leave ``pending``, what may be sent again stays there (with its error). Answers to calls
        of the part this run does not make (a batch in flight of another run) are cached."""
        keys = [key for key in part if key in pending]
        if state["input_file_id"] is None:
            self._upload(client, state, [pending[key] for key in keys])
        batch = self._attach(client, state, create=bool(keys))  # never a batch for calls this run does not make
        batch = self._poll(client, batch, state, len(keys) or len(part))
        if batch is not None and batch.status == "failed" and queue_full(batch):
            self._drop_batch(client, state)
            raise RunError(f"batch {batch.id} was refused: the account's queue of enqueued tokens for the model is full "
                           "(token_limit_exceeded). Run the same command again once your other batches have finished; "
                           "the calls answered so far are cached, and this part is sent again.")
        answers, errors = self._collect(client, batch, state, keys)
        self._delete_input(client, state)
        for key in set(part) & answers.keys() - pending.keys():
            self._cache(key, None, answers[key], state["round"])
        rounds_used = state["round"] + 1
        for key in keys:
            spec = pending[key]
            if key in answers:
                self._answer(spec, answers[key], state["round"])
            else:
                error, final = errors.get(key, (f"batch {batch.status if batch else 'lost'}", False))
                if not final and rounds_used < self.rounds:
                    last_error[key] = error
                    continue
                self._fail(spec, error, final, rounds_used)
            del pending[key]

    def _answer(self, spec: CallSpec, answer: dict, round_: int) -> None:
        self._cache(spec.key, spec.index, answer, round_)
        self.on_result(CallResult(spec.index, spec.key, **answer, retries=round_))

    def _cache(self, key: str, call: int | None, answer: dict, round_: int) -> None:
        """The cache line of an answer (``call`` None: a call of another run, answered in a batch of its)."""
        self.cache.append({"key": key, "call": call, **answer, "retries": round_})

    def _fail(self, spec: CallSpec, error: str, final: bool, rounds_used: int) -> None:
        text = error if final else f"{error} after {rounds_used} batch{'es' if rounds_used != 1 else ''}"
        self.on_result(CallResult(spec.index, spec.key, retries=max(0, rounds_used - 1), error=text))

    def _upload(self, client, state: dict, specs: list[CallSpec]) -> None:
        """The request file of ``specs``, uploaded; its id recorded in ``state`` (and the sidecar)."""
        import openai

        data = "".join(json.dumps(request_line(s), ensure_ascii=False) + "\n" for s in specs).encode("utf-8")
        parts = len(state["parts"])
        report(self.progress, "batch", 0, len(specs), f"uploading {len(specs):,} requests"
               + (f" (part {state['part'] + 1} of {parts})" if parts > 1 else ""), milestone=True)
        try:
            uploaded = _transient("uploading the batch requests", self.sleep, self.poll_interval,
                                  lambda: client.files.create(file=("smm4h-batch.jsonl", data, "application/jsonl"), purpose="batch"),
                                  self._hint(None))
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):
                raise InputError(f"the server at {self.backend.base_url} has no file upload for the Batch API ({exc.status_code}). Leave out --batch.") from None
            raise RunError(f"the server refused the batch request file ({exc.status_code}): {_message(exc)}.") from None
        state.update(input_file_id=uploaded.id, batch_id=None)
        self._save_state(state)

    def _attach(self, client, state: dict, create: bool = True):
        """The batch of ``state``: retrieved by its id, found by its input file, or created (once;
        unless ``create`` is false: then None)."""
        import openai

        hint = self._hint(state)
        if state.get("batch_id"):
            try:
                return _transient("asking for the batch", self.sleep, self.poll_interval, lambda: client.batches.retrieve(state["batch_id"]), hint)
            except openai.NotFoundError:
                return None  # gone (deleted on the server): its requests count as not answered
        for _ in range(TRANSIENT_TRIES):
            # a run killed (or a connection dropped) after the create and before the save: find it
            found = _transient("listing the batches", self.sleep, self.poll_interval,
                               lambda: [b for b in client.batches.list(limit=100) if b.input_file_id == state["input_file_id"]], hint)
            if found:
                batch = found[0]
                break
            if not create:
                return None
            try:
                batch = client.batches.create(
                    input_file_id=state["input_file_id"], endpoint=ENDPOINT, completion_window=WINDOW,
                    metadata={"created_by": "smm4h generate"},
                )
                break
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError):
                self.sleep(self.poll_interval)
            except openai.APIStatusError as exc:
                self._drop_batch(client, state)
                raise RunError(f"the server refused to create the batch ({exc.status_code}): {_message(exc)}.") from None
        else:
            raise RunError(f"the batch could not be created after {TRANSIENT_TRIES} tries. {hint}")
        state["batch_id"] = batch.id
        self._save_state(state)
        return batch

    def _poll(self, client, batch, state: dict, requests: int):
        import openai

        if batch is None:
            return None
        if batch.id not in self.batch_ids:
            self.batch_ids.append(batch.id)
        wait = self.poll_interval
        while True:
            counts = batch.request_counts
            done = (counts.completed + counts.failed) if counts else 0
            total = counts.total if counts and counts.total else requests
            report(self.progress, "batch", done, total, f"{batch.id} {batch.status}", milestone=batch.status in TERMINAL)
            if batch.status in TERMINAL:
                return batch
            self.sleep(wait)
            wait = min(wait * POLL_GROWTH, self.poll_interval * POLL_CAP)
            try:
                batch = _transient("asking for the batch", self.sleep, self.poll_interval,
                                   lambda: client.batches.retrieve(batch.id), self._hint(state))
            except openai.NotFoundError:
                return None

    def _drop_batch(self, client, state: dict) -> None:
        """A batch the API would not take: its request file deleted and its ids cleared in the
        record, which keeps the round's plan, so that a re-run sends this part again."""
        self._delete_input(client, state)
        state.update(input_file_id=None, batch_id=None)
        self._save_state(state)

    def _delete_input(self, client, state: dict) -> None:
        """The round's request file, once its batch is over: deleted from the account, best effort
        (a later round uploads its own; the batch's output and error files stay, as the batch
        refers to them)."""
        import openai

        try:
            client.files.delete(state["input_file_id"])
        except openai.OpenAIError:
            pass  # already gone, or the server keeps files: nothing is lost

    def _collect(self, client, batch, state: dict, keys: list[str]) -> tuple[dict[str, dict], dict[str, tuple[str, bool]]]:
        """Answers (checked) and errors ``(text, final)`` by custom id, from the batch's files
        (a ``failed`` batch: a final error for each of its ``keys``)."""
        answers: dict[str, dict] = {}
        errors: dict[str, tuple[str, bool]] = {}
        if batch is None:
            return answers, errors
        if batch.status == "failed":
            found = [e for e in (batch.errors.data or [])] if batch.errors else []
            why = "; ".join(redact(f"{e.code}: {e.message}")[:300] for e in found) or "no reason given"
            return answers, {key: (f"batch failed: {why}", True) for key in keys}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            raw = _transient("downloading the batch results", self.sleep, self.poll_interval,
                             lambda: client.files.content(file_id).content, self._hint(state))
            for line in io.jsonl_lines(raw.decode("utf-8", errors="replace")):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # its request counts as not answered
                if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                    key, result = record["custom_id"], outcome(record)
                    if isinstance(result, dict):
                        answers[key] = result
                        errors.pop(key, None)
                    elif key not in answers:
                        errors[key] = result
        return answers, errors


def run_batch(specs: list[CallSpec], backend: Backend, cache: CallCache, on_result: Callable[[CallResult], None],
              **kwargs: Any) -> list[str]:
    """Make the calls (none cached) through the Batch API; return the ids of the batches used."""
    runner = BatchRunner(backend, cache, on_result, **kwargs)
    if specs:
        runner.run(specs)
    return runner.batch_ids
