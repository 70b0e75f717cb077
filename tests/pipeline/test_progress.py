"""bitsandbytes_ci.host.progress: a redrawn status line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from bitsandbytes_ci.host.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_jobs(progress: Progress, clock: Clock) -> None:
    progress.planned(3)
    progress.started("cpu-linux-x86_64")
    progress.line("[cpu-linux-x86_64] start")
    clock.now += 5
    progress.started("cuda130-linux-x86_64")
    clock.now += 70
    progress.finished("cpu-linux-x86_64", "built")
    progress.line("[cpu-linux-x86_64] built in 75.0 s")
    progress.finished("cuda130-linux-x86_64", "failed")
    progress.close()


def test_not_a_terminal_gets_the_event_lines_only() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream, clock=clock)
    assert progress.tty is False
    run_jobs(progress, clock)
    assert stream.getvalue() == "[cpu-linux-x86_64] start\n[cpu-linux-x86_64] built in 75.0 s\n"


def test_terminal_gets_one_status_line_redrawn_below_the_events() -> None:
    stream, clock = Terminal(), Clock()
    progress = Progress(stream, clock=clock, refresh_s=3600)
    assert progress.tty is True
    run_jobs(progress, clock)
    text = stream.getvalue()
    assert "[0/3 done | running: cpu-linux-x86_64 (0s) | 2 queued | 0s elapsed]" in text
    assert "[0/3 done | running: cpu-linux-x86_64 (5s), cuda130-linux-x86_64 (0s) | 1 queued | 5s elapsed]" in text
    assert "[1/3 done | running: cuda130-linux-x86_64 (1m 10s) | 1 queued | 1m 15s elapsed]" in text
    assert "[2/3 done, 1 failed | 1 queued | 1m 15s elapsed]" in text
    # Every redraw clears the line first; the event lines stay whole, and close() leaves no status line.
    assert "\r\x1b[2K[cpu-linux-x86_64] built in 75.0 s\n" in text
    assert text.endswith("\r\x1b[2K")


def test_status_counts_and_durations() -> None:
    clock = Clock()
    progress = Progress(io.StringIO(), clock=clock)
    progress.planned(2)
    progress.finished("prepared-but-failed", "failed")  # finished without starting: leaves the queue
    assert progress.status() == "[1/2 done, 1 failed | 1 queued | 0s elapsed]"
    assert [format_duration(s) for s in (0.4, 59, 72, 3725)] == ["0s", "59s", "1m 12s", "1h 02m 05s"]


def test_ticker_redraws_the_elapsed_time_on_a_terminal() -> None:
    stream = Terminal()
    progress = Progress(stream, refresh_s=0.01)
    progress.planned(1)
    progress.started("job")
    import time

    time.sleep(0.1)
    progress.close()
    assert stream.getvalue().count("running: job") >= 3
