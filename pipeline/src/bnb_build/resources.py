"""What this machine (or container) gives a build: CPUs and memory, and the compile parallelism
that follows from them.

A build job shares the machine with the other jobs running at the same time (``BNB_CONCURRENT_JOBS``,
set by the executor, default 1) and each compiler process may take ``BNB_COMPILE_MEMORY_GB`` (the
matrix's ``compile_memory_gb`` of the job's family, default 1). The native step then runs
``min(its share of the CPUs, its share of the memory / compile memory)`` compiles at once, at least
one, so a 4-core / 16 GB runner is never asked for more than it holds. None of it changes a build's
output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

CONCURRENT_JOBS_ENV = "BNB_CONCURRENT_JOBS"
COMPILE_MEMORY_ENV = "BNB_COMPILE_MEMORY_GB"
PARALLEL_ENV = "BNB_BUILD_PARALLEL"
"""An explicit compile parallelism (a positive whole number) overrides the computed one."""

_GB = 1024**3


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, bounded by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _read(Path("/sys/fs/cgroup/cpu.max"))
    if quota:
        parts = quota.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                cpus = min(cpus, max(1, int(int(parts[0]) / int(parts[1]))))
            except ValueError:
                pass
    return max(1, cpus)


def available_memory_gb() -> float:
    """Memory this process may use (GB): MemAvailable, bounded by a cgroup (v2 or v1) limit."""
    meminfo = _read(Path("/proc/meminfo")) or ""
    available: Optional[float] = None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024 / _GB
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _GB
        except (AttributeError, ValueError, OSError):
            available = 4.0
    for limit_file in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        text = _read(limit_file)
        if text and text.strip().isdigit():
            available = min(available, int(text.strip()) / _GB)
    return max(0.5, available)


def compile_parallelism(*, cpus: int, memory_gb: float, concurrent_jobs: int = 1, compile_memory_gb: float = 1.0) -> int:
    """Compiles at once for one job: its share of the CPUs and of the memory, at least one."""
    share = max(1, concurrent_jobs)
    by_cpus = cpus // share
    by_memory = int((memory_gb / share) // max(compile_memory_gb, 0.1))
    return max(1, min(by_cpus, by_memory))


def parallelism_from_env(env: Mapping[str, str]) -> int:
    """The compile parallelism for a build run with ``env`` on this machine."""
    explicit = env.get(PARALLEL_ENV, "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    return compile_parallelism(
        cpus=available_cpus(),
        memory_gb=available_memory_gb(),
        concurrent_jobs=_positive_int(env.get(CONCURRENT_JOBS_ENV), 1),
        compile_memory_gb=_positive_float(env.get(COMPILE_MEMORY_ENV), 1.0),
    )


def _positive_int(text: Optional[str], default: int) -> int:
    try:
        value = int(str(text))
    except ValueError:
        return default
    return value if value > 0 else default


def _positive_float(text: Optional[str], default: float) -> float:
    try:
        value = float(str(text))
    except ValueError:
        return default
    return value if value > 0 else default


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None
