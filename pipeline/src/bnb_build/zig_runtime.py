"""Whether zig has built its C runtime for a target yet.

zig builds libc, libc++ and compiler-rt for a target the first time something is compiled for it
(minutes; the cache in ZIG_GLOBAL_CACHE_DIR keeps them). The native step and the host executor say so
before such a build, so a long silence reads as work, not as a hang. A marker per target,
``<zig cache>/bnb-runtimes/<target>``, is written after the first build that succeeded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

MARKERS = "bnb-runtimes"


def zig_cache(env: Mapping[str, str]) -> Path:
    """zig's global cache: ZIG_GLOBAL_CACHE_DIR, else its default (~/.cache/zig, $XDG_CACHE_HOME/zig)."""
    if env.get("ZIG_GLOBAL_CACHE_DIR"):
        return Path(env["ZIG_GLOBAL_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME", os.path.expanduser("~")), ".cache")
    return Path(base) / "zig"


def target_of(cmake_args: "list[str] | tuple[str, ...]") -> Optional[str]:
    """The zig target a job's CMake arguments name (-DBNB_ZIG_TARGET=...), or None."""
    for arg in cmake_args:
        if arg.startswith("-DBNB_ZIG_TARGET="):
            return arg.split("=", 1)[1]
    return None


def first_build(target: str, env: Mapping[str, str]) -> bool:
    return not (zig_cache(env) / MARKERS / target).is_file()


def notice(target: str, env: Mapping[str, str]) -> str:
    return (
        f"zig: building its C runtime and libc++ for {target} first; this happens once per target "
        f"(a few minutes), later builds reuse {zig_cache(env)}"
    )


def mark_built(target: str, env: Mapping[str, str]) -> None:
    folder = zig_cache(env) / MARKERS
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / target).write_text("built\n", encoding="utf-8")
    except OSError:  # a read-only cache only loses the notice
        pass
