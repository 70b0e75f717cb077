"""Progress of a host run: what is done, running and queued, and for how long the run has gone on.

`Progress` writes to one stream (the command's stdout) in one of two ways, chosen from the stream:

- on a terminal (`stream.isatty()`): event lines ("[cpu-linux-x86_64] built in 31.0 s") scroll as
  usual, and below them one status line is redrawn in place, every second while jobs run:

      [2/5 done, 1 failed | running: cuda130-linux-x86_64 (1m 12s) | 2 queued | 3m 05s elapsed]

- anywhere else (a CI log, a pipe, a file, a test's StringIO): the event lines only, one per job
  start and end, and no status line, so logs stay free of carriage returns and repeated lines.

The executor (local.py) calls `planned(n)` when it knows how many jobs will run, `started(id)` and
`finished(id, status)` around each job, and `line(text)` for everything it prints; the verb that made
the `Progress` calls `close()` at the end. Everything is thread-safe: the status line is redrawn by a
background thread on a terminal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

from ..core.summary import format_duration

REFRESH_S = 1.0
_CLEAR = "\r\x1b[2K"


class Progress:
    """Event lines always; a redrawn status line only when `stream` is a terminal (or `tty=True`)."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic, refresh_s: float = REFRESH_S) -> None:
        self.stream = stream
        if tty is None:
            isatty = getattr(stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.clock = clock
        self.started_at = clock()
        self.queued = 0
        self.done = 0
        self.failed = 0
        self.running: dict[str, float] = {}
        self._lock = threading.RLock()
        self._shown = False
        self._refresh_s = refresh_s
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ---- what the executor reports ------------------------------------------------------------

    def line(self, text: str) -> None:
        """An event line; on a terminal the status line is cleared first and redrawn after it."""
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self._draw()
            self.stream.flush()

    def planned(self, count: int) -> None:
        """`count` more jobs will run (they are queued until `started`)."""
        with self._lock:
            self.queued += count
            self._redraw()
        if self.tty and self._ticker is None and count > 0:
            self._ticker = threading.Thread(target=self._tick, name="bnb-ci-progress", daemon=True)
            self._ticker.start()

    def started(self, job_id: str) -> None:
        with self._lock:
            self.queued = max(0, self.queued - 1)
            self.running[job_id] = self.clock()
            self._redraw()

    def finished(self, job_id: str, status: str) -> None:
        """`status` is a results.Status: built, skipped or failed."""
        with self._lock:
            if self.running.pop(job_id, None) is None:  # finished without starting (e.g. its preparation failed)
                self.queued = max(0, self.queued - 1)
            self.done += 1
            self.failed += status == "failed"
            self._redraw()

    def close(self) -> None:
        """Stop redrawing and remove the status line (the final summary follows it)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * self._refresh_s)
        with self._lock:
            self._clear()
            self.stream.flush()

    # ---- the status line ------------------------------------------------------------------------

    def status(self) -> str:
        """The status line's text (without the terminal control characters)."""
        now = self.clock()
        total = self.done + len(self.running) + self.queued
        parts = [f"{self.done}/{total} done" + (f", {self.failed} failed" if self.failed else "")]
        if self.running:
            parts.append("running: " + ", ".join(f"{job} ({format_duration(now - t)})" for job, t in self.running.items()))
        parts.append(f"{self.queued} queued")
        parts.append(f"{format_duration(now - self.started_at)} elapsed")
        return "[" + " | ".join(parts) + "]"

    def _clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write(_CLEAR)
            self._shown = False

    def _draw(self) -> None:
        if self.tty and (self.running or self.queued):
            self.stream.write(self.status())
            self._shown = True

    def _redraw(self) -> None:
        if self.tty:
            self._clear()
            self._draw()
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self._refresh_s):
            with self._lock:
                self._redraw()
