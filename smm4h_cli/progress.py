"""The one progress protocol: every long step of the library reports through ``Progress`` events.

Library functions take an optional ``progress`` callback (a ``ProgressFn``) and call it with
``ProgressEvent`` values; they never print. The CLI layer turns the events into Rich bars at a
terminal, or into plain lines at a bounded rate in a log file (``smm4h_cli/cli/_progress.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProgressEvent:
    """Where one stage of a long step stands.

    stage: what is running, in a person's words ("generate", "embed", "k-means", "seed 0", …);
        one bar per stage.
    done, total: units finished and the units in all (calls, posts, steps); ``total`` None when
        not known yet.
    detail: a short line for the bar and the log (posts kept, loss, validation F1, …).
    milestone: an event worth a line of its own in a log file even when lines are rate-limited
        (an epoch's validation F1, a seed finished, a stage's end).
    """

    stage: str
    done: int
    total: int | None = None
    detail: str = ""
    milestone: bool = False


#: A progress callback: library functions call it; it must not raise.
ProgressFn = Callable[[ProgressEvent], None]


def report(progress: ProgressFn | None, stage: str, done: int, total: int | None = None, detail: str = "", milestone: bool = False) -> None:
    """Send one event to ``progress`` where there is a callback (a no-op otherwise)."""
    if progress is not None:
        progress(ProgressEvent(stage, done, total, detail, milestone))
