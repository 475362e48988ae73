"""Fingerprinted steps: run each step once for what it is computed from, skip it while that is unchanged.

A step has a name, a key (anything JSON can write: its options and the digests of its input
files), the files it writes and a function. :class:`Steps` records the key's fingerprint in a
state file (``steps.json``) in the folder, before the step (not done) and after it (done). A
later run skips a step whose fingerprint is recorded as done and whose files exist, continues
one that was interrupted (``resume=True``: same key, not done) and redoes one whose key changed.
Nothing here knows what the steps are::

    steps = Steps(Path("work"), total=1, force=False, on_event=print)
    steps.run(
        "count words", {"text": file_digest(Path("a.txt"))}, [Path("work/count.txt")],
        lambda resume: Path("work/count.txt").write_text(str(len(Path("a.txt").read_text().split()))),
    )
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from smm4h_cli.io import write_json

STATE_FILE = "steps.json"


@dataclass(frozen=True)
class StepEvent:
    """A step starting (``state`` = running), skipped (up to date) or finished (done)."""

    index: int
    total: int
    name: str
    state: str
    seconds: float = 0.0
    detail: str = ""


EventFn = Callable[[StepEvent], None]


@dataclass(frozen=True)
class Started:
    """A step that :meth:`Steps.start` recorded as running."""

    name: str
    index: int
    fingerprint: str
    resume: bool
    extra: dict
    since: float


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(value: Any) -> str:
    """A short hash of ``value`` as JSON with sorted keys (what a step was computed from)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Steps:
    """Runs steps in order and skips those whose fingerprint is recorded as done.

    ``folder`` holds the state file; ``total`` is the number of steps announced in the events;
    ``force`` forgets the recorded state (every step runs); ``on_event`` hears each step start,
    finish or be skipped.
    """

    def __init__(self, folder: Path, total: int, force: bool, on_event: EventFn | None):
        self.path = Path(folder) / STATE_FILE
        self.state: dict[str, dict] = {}
        if self.path.exists() and not force:
            try:
                self.state = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.state = {}
        self.total, self.index = total, 0
        self.tell = on_event or (lambda event: None)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def is_done(self, name: str, key: Any, outputs: list[Path]) -> bool:
        """Whether ``name`` is recorded as done with the same ``key`` and its outputs exist."""
        old = self.state.get(name, {})
        return old.get("fingerprint") == fingerprint(key) and bool(old.get("done")) and all(p.exists() for p in outputs)

    def parts(self, name: str) -> dict[str, str]:
        """The fingerprints of the parts of the key ``name`` was last run with (see :meth:`run`)."""
        return self.state.get(name, {}).get("parts", {})

    def run(self, name: str, key: Any, outputs: list[Path], fn: Callable[[bool], Any], parts: dict[str, str] | None = None) -> None:
        """Run ``fn(resume)`` unless ``name`` is done with the same ``key`` and its outputs exist.

        ``resume`` is true when an earlier run of the same step with the same key was
        interrupted: the step may then continue from what that run left. A step whose ``fn``
        returns False stays not done: the next run goes on with it as a resume. ``parts``
        (fingerprints of parts of the key) are recorded with the step, so that the next run can
        tell which part changed (:meth:`parts`).
        """
        step = self.start(name, key, outputs, parts)
        if step is not None:
            self.finish(step, fn(step.resume) is not False)

    def start(
        self, name: str, key: Any, outputs: list[Path], parts: dict[str, str] | None = None,
        prepare: Callable[[bool], Any] | None = None,
    ) -> "Started | None":
        """The first half of :meth:`run`, for steps that run side by side: None when the step is
        up to date (skipped), else the step recorded as running; :meth:`finish` ends it.

        ``prepare(resume)`` makes the step's outputs fit the new record (clears what the new key
        makes stale) and runs before the record is written: what the record's ``parts`` say of
        the outputs then holds whenever the run stops, and a ``prepare`` that raises leaves the
        earlier record as it was.
        """
        self.index += 1
        fp = fingerprint(key)
        old = self.state.get(name, {})
        if self.is_done(name, key, outputs):
            self.skipped.append(name)
            self.tell(StepEvent(self.index, self.total, name, "skipped", detail="up to date"))
            return None
        resume = old.get("fingerprint") == fp and not old.get("done")
        if prepare is not None:
            prepare(resume)
        extra = {"parts": parts} if parts else {}
        self.state[name] = {"fingerprint": fp, "done": False, **extra}
        self._save()
        self.tell(StepEvent(self.index, self.total, name, "running", detail="resuming" if resume else ""))
        return Started(name, self.index, fp, resume, extra, time.monotonic())

    def finish(self, step: "Started", complete: bool = True) -> None:
        """The second half of :meth:`run`: the step is recorded as done (or, not ``complete``, to be resumed)."""
        seconds = round(time.monotonic() - step.since, 1)
        self.state[step.name] = {"fingerprint": step.fingerprint, "done": complete, "seconds": seconds, **step.extra}
        self._save()
        self.ran.append(step.name)
        self.tell(StepEvent(step.index, self.total, step.name, "done", seconds=seconds, detail="" if complete else "incomplete: run again to retry"))

    def _save(self) -> None:
        write_json(self.path, self.state)
