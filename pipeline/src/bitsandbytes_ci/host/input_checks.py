"""Checks of what the host verbs read from disk, run before any job starts.

Each refuses a bad input with a message that names it and says what to do (exit code 2), so a run
never ends in a traceback half-way, or, worse, in success with nothing done:

- `check_libs`: `--libs DIR` exists, holds libraries built by `build-<backend> --out DIR`, and every
  build-info.json in it is readable (bnb_build.manifest.read_build_info);
- `check_wheel_files`: every `--wheels` file is a readable zip archive (bnb_build.audit, the check
  the release steps run);
- `check_sources`: every file the planned jobs take from the tree can be read (a symbolic link that
  loops or points nowhere is named, instead of failing every job).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bnb_build import inputs
from bnb_build.audit import check_wheel_archives
from bnb_build.errors import CorruptWheel, StepError
from bnb_build.manifest import BUILD_INFO_SUFFIX, read_build_info

from ..core.errors import PipelineError
from ..core.plan import Job, WheelJob
from ..core.tree import TreeError

LIBS_HINT = "build them first: bnb-ci build-<backend> --out DIR writes DIR/<os>/<arch>/<library> with its build-info.json"


class LibsError(PipelineError):
    """--libs names no folder of built libraries, or one whose build-info.json is damaged."""

    exit_code = 2


class CorruptWheelError(PipelineError):
    """A file given as a wheel is no readable zip archive."""

    exit_code = CorruptWheel.exit_code


def check_libs(libs: Path) -> Path:
    """`libs` as an absolute path, when it is a folder holding at least one library with its
    build-info.json, and every build-info.json in it can be read."""
    folder = Path(libs).absolute()
    if not folder.exists():
        msg = f"--libs {folder} does not exist; {LIBS_HINT}"
        raise LibsError(msg)
    if not folder.is_dir():
        msg = f"--libs {folder} is not a folder; {LIBS_HINT}"
        raise LibsError(msg)
    records = sorted(folder.rglob(f"*{BUILD_INFO_SUFFIX}"))
    if not records:
        msg = f"--libs {folder} holds no library (no <os>/<arch>/<library> with its {BUILD_INFO_SUFFIX.lstrip('.')}); {LIBS_HINT}"
        raise LibsError(msg)
    for record in records:
        try:
            read_build_info(record)
        except StepError as e:
            msg = f"--libs: {e}"
            raise LibsError(msg) from None
    return folder


def check_wheel_files(paths: Sequence[Path]) -> None:
    """Refuse, naming each, the files of `paths` that are no readable zip archive."""
    try:
        check_wheel_archives(list(paths))
    except CorruptWheel as e:
        raise CorruptWheelError(str(e)) from None


def check_sources(repo: Path, jobs: Sequence[Job], wheels: Sequence[WheelJob] = ()) -> None:
    """Every file the jobs and wheels take from the tree at `repo` can be opened: TreeError naming
    the symbolic links that loop or point nowhere (and files that cannot be read)."""
    patterns = sorted({p for job in jobs for p in job.all_sources} | {p for wheel in wheels for p in (*wheel.sources, *wheel.optional_sources)})
    try:
        files = inputs.expand_optional(repo, patterns)
    except (inputs.InputError, inputs.UsageError):
        return  # a missing required file: the job that needs it fails and says so (local.py)
    bad = []
    for rel in files:
        try:
            os.stat(repo / rel)
        except OSError as e:
            kind = "a symbolic link that cannot be followed" if os.path.islink(repo / rel) else "unreadable"
            bad.append(f"{rel} ({kind}: {e.strerror or e})")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        msg = f"the tree {repo} has source files the jobs cannot read: {shown}; remove them or make them point at files"
        raise TreeError(msg)
