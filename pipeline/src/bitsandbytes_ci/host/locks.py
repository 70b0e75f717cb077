"""Locks between bnb-ci runs that share a cache: one holder at a time, and a waiter says whom it waits for.

A lock is a file (`<name>.lock`) locked with the operating system's advisory lock (`fcntl.flock`;
`msvcrt.locking` on Windows), so it is released when its holder exits however it ends (a SIGKILL
too) and never goes stale. While held, the file names its holder as JSON: pid, host, user, the
command line and since when. A run that finds a lock held prints one line naming that holder, then
waits (Ctrl-C ends the wait):

    waiting for the work directory of cpu-linux-x86_64 (/home/me/.cache/bitsandbytes-ci/jobs/cpu-linux-x86_64.lock):
    held by pid 4242 (me on build-3, since 10:02:11 UTC): bnb-ci build-all --out dist

`held` takes several locks in the order of their paths, so two runs that need overlapping sets never
wait for each other in a circle.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

POLL_S = 0.2
"""How often a waiting run tries the lock again."""

_WINDOWS_LOCK_OFFSET = 1 << 30
"""Windows locks a byte range; one far beyond the holder's JSON, so a waiter can still read that."""


class LockBusy(Exception):
    """The lock is held by another process (`holder`: its description, {} when it has not written one yet)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(f"{path} is held by {describe_holder(holder)}")
        self.path = path
        self.holder = holder


def _try_lock(f: TextIO) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows runners
        import msvcrt

        f.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(f: TextIO) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        f.seek(_WINDOWS_LOCK_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    import fcntl

    fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def this_process(command: Iterable[str] | None = None) -> dict[str, Any]:
    """The description a holder writes into its lock file."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    argv = list(command) if command is not None else [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": user, "command": argv, "since": time.time()}


def read_holder(path: Path) -> dict[str, Any]:
    """What the lock file at `path` says about its holder ({} when it says nothing readable)."""
    try:
        text = path.read_text(encoding="utf-8")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process (it has not written its name yet)"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(float(holder.get("since") or 0)))
    command = " ".join(str(a) for a in holder.get("command") or [])
    return f"pid {holder['pid']} ({holder.get('user', '?')} on {holder.get('host', '?')}, since {since}): {command}"


class FileLock:
    """One lock file; `acquire` waits (saying for whom), `release` lets the next holder in."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._file: TextIO | None = None

    def try_acquire(self) -> None:
        """Take the lock now or raise LockBusy naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while held
        try:
            if not _try_lock(f):
                raise LockBusy(self.path, read_holder(self.path))
            f.seek(0)
            f.truncate()
            f.write(json.dumps(this_process()) + "\n")
            f.flush()
        except BaseException:
            f.close()
            raise
        self._file = f

    def acquire(self, on_wait: Callable[[str], None], *, poll_s: float = POLL_S) -> None:
        """Take the lock, waiting while another process holds it; `on_wait` gets one line per holder waited for."""
        told: Any = None
        while True:
            try:
                self.try_acquire()
                return
            except LockBusy as busy:
                who = (busy.holder.get("pid"), busy.holder.get("since"))
                if who != told:
                    on_wait(f"waiting for {self.what} ({self.path}): held by {describe_holder(busy.holder)}")
                    told = who
            time.sleep(poll_s)

    def release(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.seek(0)
            f.truncate()
            f.flush()
        except OSError:
            pass
        finally:
            try:
                _unlock(f)
            finally:
                f.close()

    @property
    def held(self) -> bool:
        return self._file is not None


def is_held(path: Path) -> bool:
    """Whether another process holds the lock at `path` now (False when there is no such file)."""
    if not path.exists():
        return False
    lock = FileLock(path, str(path))
    try:
        lock.try_acquire()
    except LockBusy:
        return True
    except OSError:
        return False
    lock.release()
    return False


@contextlib.contextmanager
def held(locks: Iterable[FileLock], on_wait: Callable[[str], None]) -> Iterator[list[FileLock]]:
    """Hold every one of `locks` (taken in the order of their paths) for the body; released however it ends."""
    ordered = sorted({lock.path: lock for lock in locks}.values(), key=lambda lock: str(lock.path))
    taken: list[FileLock] = []
    try:
        for lock in ordered:
            lock.acquire(on_wait)
            taken.append(lock)
        yield taken
    finally:
        for lock in reversed(taken):
            lock.release()
