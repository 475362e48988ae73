"""The one adapter from library progress events to what a person sees on stderr.

At a terminal: a Rich bar per stage. In a log file (stderr not a terminal: nohup, a cluster
job): plain lines at a bounded rate — the first and last event of a stage, every milestone
(an epoch's validation F1, a seed finished) and otherwise at most one line per stage every
``interval`` seconds — instead of silence. With ``--quiet``: nothing.
"""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from smm4h_cli.progress import ProgressEvent


class ProgressDisplay:
    """Use as ``with ProgressDisplay(quiet) as show: library_call(..., progress=show)``."""

    def __init__(
        self,
        quiet: bool,
        console: Console | None = None,
        *,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from smm4h_cli.cli._common import err

        self.console = console or err
        self.mode = "off" if quiet else ("bars" if self.console.is_terminal else "lines")
        self.interval = interval
        self.clock = clock
        self._bar: Progress | None = None
        self._tasks: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._last_line: dict[str, float] = {}

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> "ProgressDisplay":
        if self.mode == "bars":
            self._bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=self.console, transient=True,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    # -- events ------------------------------------------------------------------------------
    def __call__(self, event: ProgressEvent) -> None:
        if self.mode == "bars":
            self._show_bar(event)
        elif self.mode == "lines":
            self._show_line(event)

    def clear(self) -> None:
        """Remove every bar (a new step starts); the next event of a stage starts it afresh."""
        if self._bar is not None:
            for task in self._tasks.values():
                self._bar.remove_task(task)
        self._tasks.clear()
        self._started.clear()
        self._last_line.clear()

    def _show_bar(self, event: ProgressEvent) -> None:
        assert self._bar is not None, "use ProgressDisplay as a context manager"
        description = escape(event.stage + (f" · {event.detail}" if event.detail else ""))
        if event.stage not in self._tasks:
            self._tasks[event.stage] = self._bar.add_task(description, total=event.total)
        self._bar.update(self._tasks[event.stage], completed=event.done, total=event.total, description=description)

    def _show_line(self, event: ProgressEvent) -> None:
        now = self.clock()
        first = event.stage not in self._started
        if first:
            self._started[event.stage] = now
        finished = event.total is not None and event.done >= event.total
        due = now - self._last_line.get(event.stage, float("-inf")) >= self.interval
        if not (first or finished or event.milestone or due):
            return
        self._last_line[event.stage] = now
        count = f"{event.done:,}/{event.total:,}" if event.total is not None else f"{event.done:,}"
        detail = f" · {event.detail}" if event.detail else ""
        elapsed = now - self._started[event.stage]
        self.console.print(f"{escape(event.stage)}: {count}{escape(detail)} ({elapsed:,.0f} s)", soft_wrap=True, highlight=False)
