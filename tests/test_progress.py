"""The progress protocol's CLI adapter: bars at a terminal, bounded plain lines in a log, nothing with --quiet."""

from __future__ import annotations

import io

from rich.console import Console

from smm4h_cli.cli._progress import ProgressDisplay
from smm4h_cli.progress import ProgressEvent, report


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_display(quiet: bool = False, interval: float = 30.0) -> tuple[ProgressDisplay, io.StringIO, Clock]:
    buf = io.StringIO()
    clock = Clock()
    console = Console(file=buf, force_terminal=False, width=200)
    return ProgressDisplay(quiet, console, interval=interval, clock=clock), buf, clock


def test_log_lines_are_rate_limited_but_keep_first_last_and_milestones():
    show, buf, clock = log_display(interval=30.0)
    with show:
        for call in range(1, 101):  # 100 calls, one a second
            clock.now = float(call)
            show(ProgressEvent("generate", call, 100, f"{call * 6} posts"))
        show(ProgressEvent("seed 0", 1, 10, "epoch 1 · val F1 0.700", milestone=True))
        show(ProgressEvent("seed 0", 2, 10, "epoch 2 · val F1 0.750", milestone=True))
    lines = buf.getvalue().splitlines()
    generate = [line for line in lines if line.startswith("generate:")]
    # the first call, one line per 30 s after it (31, 61, 91) and the last call
    assert [line.split()[1] for line in generate] == ["1/100", "31/100", "61/100", "91/100", "100/100"]
    assert generate[-1] == "generate: 100/100 · 600 posts (99 s)"
    assert [line for line in lines if line.startswith("seed 0:")] == [
        "seed 0: 1/10 · epoch 1 · val F1 0.700 (0 s)",
        "seed 0: 2/10 · epoch 2 · val F1 0.750 (0 s)",
    ]


def test_quiet_prints_nothing_and_terminal_draws_bars():
    show, buf, _ = log_display(quiet=True)
    with show:
        report(show, "embed", 5, 10)
    assert buf.getvalue() == ""

    buf = io.StringIO()
    bars = ProgressDisplay(False, Console(file=buf, force_terminal=True, width=100))
    assert bars.mode == "bars"
    with bars:
        report(bars, "embed [x]", 5, 10, "posts")  # markup in a stage name is shown, not interpreted
        bars.clear()
        assert list(bars._tasks) == []
        report(bars, "t-SNE", 1, 1)
        assert list(bars._tasks) == ["t-SNE"]
    assert "embed [x] · posts" in buf.getvalue()


def test_report_sends_one_event_to_a_callback_and_without_one_does_nothing():
    events: list[ProgressEvent] = []
    report(events.append, "embed", 1, 2, "3 posts", milestone=True)
    report(events.append, "k-means", 0)
    assert events == [ProgressEvent("embed", 1, 2, "3 posts", True), ProgressEvent("k-means", 0, None, "", False)]
    report(None, "embed", 1, 2)  # no callback: nothing to call, nothing raised
