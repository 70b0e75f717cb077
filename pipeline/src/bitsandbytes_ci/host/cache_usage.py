"""`bnb-ci cache info|prune`: what the cache root holds, and removing what was not used lately.

    bnb-ci cache info  [--cache-dir DIR]
        where the cache is and its size per kind: library, wheel and report (audit, try) entries of
        the artifact cache, the jobs' work directories (kept CMake build folders), zig's runtime
    bnb-ci cache prune [--cache-dir DIR] [--older-than DAYS] [--max-size SIZE]
        remove artifact entries and work directories not used for DAYS days, then the least recently
        used ones until the cache is at most SIZE (e.g. 20G, 500M); never one in use

In use: a work directory whose lock a run holds (local.holding_work_dirs). Runs read artifact
entries while they hold their work directories, so prune removes artifact entries only while it
holds every work directory's lock itself; when a run holds one, the artifact entries stay and prune
says which run. An entry's last use is its marker's modification time (artifact_cache.lookup sets
it); a work directory's is its own. zig's runtime is shared by every build of a target and is never
pruned here (remove `<cache>/zig` by hand to rebuild it).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import PipelineError
from . import artifact_cache, locks
from .local import default_cache_dir, work_dir_lock

if TYPE_CHECKING:
    from .invocation import Invocation

ACTIONS = ("info", "prune")
KINDS = ("library", "wheel", "report", "work directory", "zig runtime", "other")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


class CacheUsageError(PipelineError):
    """A bad value for a cache option."""

    exit_code = 2


def parse_size(text: str) -> int:
    """`--max-size`: bytes, or a number with K, M, G or T (powers of 1024)."""
    match = _SIZE.match(text or "")
    if not match:
        msg = f"--max-size {text!r} is not a size; use a number of bytes or one with K, M, G or T, e.g. 20G"
        raise CacheUsageError(msg)
    return int(float(match[1]) * 1024 ** " KMGT".index(match[2].upper() or " "))


def parse_days(text: str) -> float:
    """`--older-than`: a number of days (a fraction is allowed)."""
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if days < 0:
        msg = f"--older-than {text!r} is not a number of days (0 or more), e.g. 30"
        raise CacheUsageError(msg)
    return days


@dataclass(frozen=True)
class Item:
    """One removable thing in the cache: an artifact entry or a work directory."""

    path: Path
    kind: str
    size: int
    last_used: float
    job_id: str | None = None  # a work directory's job


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _entry_kind(entry: Path) -> str:
    names = [p.name for p in entry.rglob("*") if p.is_file()]
    if any(n.endswith(".whl") for n in names):
        return "wheel"
    if any(n in ("audit.md", "tries.md") for n in names):
        return "report"
    return "library"


def items(cache_dir: Path) -> list[Item]:
    """Every artifact entry and work directory of the cache (what prune may remove)."""
    found = []
    artifacts = cache_dir / artifact_cache.ARTIFACTS_SUBDIR
    if artifacts.is_dir():
        for entry in sorted(artifacts.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                marker = entry / artifact_cache.MARKER
                used = (marker if marker.exists() else entry).stat().st_mtime
                found.append(Item(entry, _entry_kind(entry), _size(entry), used))
    jobs = cache_dir / "jobs"
    if jobs.is_dir():
        for work in sorted(jobs.iterdir()):
            if work.is_dir():
                found.append(Item(work, "work directory", _size(work), work.stat().st_mtime, job_id=work.name))
    return found


def usage(cache_dir: Path) -> dict[str, int]:
    """Bytes per kind (KINDS), everything below the cache root counted once."""
    sizes: dict[str, int] = dict.fromkeys(KINDS, 0)
    for item in items(cache_dir):
        sizes[item.kind] += item.size
    zig = cache_dir / "zig"
    if zig.is_dir():
        sizes["zig runtime"] = _size(zig)
    sizes["other"] = max(0, _size(cache_dir) - sum(sizes.values())) if cache_dir.is_dir() else 0
    return sizes


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def render_info(cache_dir: Path) -> str:
    sizes = usage(cache_dir)
    lines = [f"cache: {cache_dir}{'' if cache_dir.is_dir() else ' (does not exist yet)'}"]
    lines += [f"  {kind:<15} {human(size):>10}" for kind, size in sizes.items()]
    lines.append(f"  {'total':<15} {human(sum(sizes.values())):>10}")
    return "\n".join(lines) + "\n"


def prune(cache_dir: Path, *, older_than_s: float | None, max_bytes: int | None, now: float | None = None) -> tuple[list[Item], list[str]]:
    """Remove the artifact entries and work directories last used more than `older_than_s` ago, then
    the least recently used ones until the cache is at most `max_bytes`; never one in use (see the
    module doc). Returns (what was removed, lines about what was kept because it is in use)."""
    now = time.time() if now is None else now
    kept: list[str] = []
    removed: list[Item] = []
    with ExitStack() as stack:
        held: set[str] = set()
        busy: dict[str, str] = {}
        jobs = cache_dir / "jobs"
        for lock_path in sorted(jobs.glob("*.lock")) if jobs.is_dir() else []:
            job_id = lock_path.name.removesuffix(".lock")
            lock = work_dir_lock(cache_dir, job_id)
            try:
                lock.try_acquire()
            except locks.LockBusy as e:
                busy[job_id] = locks.describe_holder(e.holder)
                continue
            stack.callback(lock.release)
            held.add(job_id)
        for job_id, holder in sorted(busy.items()):
            kept.append(f"in use: the work directory of {job_id}, held by {holder}")
        if busy:
            kept.append("artifact entries: kept, because a run is using the cache (it reads entries while it holds its work directories)")

        def removable(item: Item) -> bool:
            if item.job_id is None:  # an artifact entry
                return not busy
            return item.job_id in held or not work_dir_lock(cache_dir, item.job_id).path.exists()

        candidates = sorted((i for i in items(cache_dir) if removable(i)), key=lambda i: i.last_used)
        total = _size(cache_dir) if cache_dir.is_dir() else 0
        for item in candidates:
            too_old = older_than_s is not None and now - item.last_used > older_than_s
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                continue
            shutil.rmtree(item.path, ignore_errors=True)
            if not item.path.exists():
                removed.append(item)
                total -= item.size
        if max_bytes is not None and total > max_bytes:
            kept.append(f"the cache is still {human(total)} (over {human(max_bytes)}): the rest is in use or zig's runtime")
    return removed, kept


def run_cache(invocation: Invocation) -> int:
    """`bnb-ci cache info|prune`."""
    options = invocation.options
    cache_dir = Path(options.get("cache_dir") or default_cache_dir(invocation.env)).absolute()
    out = invocation.stdout
    if options.get("action") == "info":
        out.write(render_info(cache_dir))
        return 0
    older = options.get("older_than")
    size = options.get("max_size")
    if older is None and size is None:
        msg = "cache prune needs --older-than DAYS, --max-size SIZE or both (e.g. --older-than 30 --max-size 20G)"
        raise CacheUsageError(msg)
    removed, kept = prune(cache_dir, older_than_s=parse_days(older) * 86400 if older is not None else None,
                          max_bytes=parse_size(size) if size is not None else None)  # fmt: skip
    for item in removed:
        out.write(f"removed {item.kind} {item.path} ({human(item.size)}, last used {time.strftime('%Y-%m-%d', time.gmtime(item.last_used))})\n")
    for line in kept:
        out.write(line + "\n")
    out.write(f"pruned {len(removed)} item(s), {human(sum(i.size for i in removed))}\n")
    out.write(render_info(cache_dir))
    return 0
