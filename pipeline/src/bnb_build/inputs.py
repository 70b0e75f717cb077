"""Source patterns, input digests and source subsets: one algorithm for the plan and the steps.

A job's sources are a list of *patterns* relative to a root (docs/contracts.md, "Source patterns"):

- an exact file path, e.g. ``CMakeLists.txt`` or ``csrc/bitsandbytes.h``;
- a folder with every file below it, e.g. ``csrc/cpu/**``.

Nothing else (no ``*.cu``, no ``..``), so the same list means the same files here and to a Dagger
``include=`` filter. A missing exact file is an error; a folder pattern may match no file.

Worked example::

    files = expand(root, ["CMakeLists.txt", "csrc/cpu/**"])
    # ['CMakeLists.txt', 'csrc/cpu/kernels.cpp', 'csrc/cpu/ops.cpp']
    key = digest(root, files, {"backend": "cpu", "flags": ["-DCOMPUTE_BACKEND=cpu"]})
    # 'sha256:3f0c...'; changes when a file's content or executable bit, the file list or extra changes

The orchestration side imports :func:`expand`, :func:`digest` and :func:`copy_subset` from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Iterable, List, Sequence, Tuple

from . import package_files
from .errors import InputError, UsageError

FOLDER_SUFFIX = "/**"
_FORBIDDEN_CHARS = set("*?[]\\")


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is an allowed source pattern, else raise UsageError."""
    body = pattern[: -len(FOLDER_SUFFIX)] if pattern.endswith(FOLDER_SUFFIX) else pattern
    parts = body.split("/")
    bad = (
        not body
        or body.startswith("/")
        or any(c in _FORBIDDEN_CHARS for c in body)
        or any(p in ("", ".", "..") for p in parts)
    )
    if bad:
        msg = (
            f"source pattern {pattern!r} is not allowed: use an exact relative file path "
            "(e.g. 'CMakeLists.txt') or a folder followed by '/**' (e.g. 'csrc/cpu/**'); "
            "no other wildcards, no '.', '..', leading '/' or backslashes"
        )
        raise UsageError(msg)
    return pattern


def expand(root: Path | str, patterns: Iterable[str]) -> List[str]:
    """The files under ``root`` that ``patterns`` select: sorted, unique, relative POSIX paths."""
    root = Path(root)
    found: set[str] = set()
    missing: list[str] = []
    for pattern in patterns:
        check_pattern(pattern)
        if pattern.endswith(FOLDER_SUFFIX):
            found.update(_files_below(root, pattern[: -len(FOLDER_SUFFIX)]))
        elif (root / pattern).is_file():
            found.add(pattern)
        else:
            missing.append(pattern)
    if missing:
        msg = f"source files missing under {root}: {', '.join(missing)}"
        raise InputError(msg)
    return sorted(found)


def expand_optional(root: Path | str, patterns: Iterable[str]) -> List[str]:
    """Like :func:`expand`, but an exact file that is missing selects nothing instead of failing
    (patterns copied where the tree has them)."""
    root = Path(root)
    present = [p for p in patterns if check_pattern(p).endswith(FOLDER_SUFFIX) or (root / p).is_file()]
    return expand(root, present)


def _files_below(root: Path, folder: str) -> Iterable[str]:
    base = root / folder
    if not base.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            yield f"{rel_dir}/{name}"


def all_files(root: Path | str) -> List[str]:
    """Every file below ``root`` (sorted relative POSIX paths)."""
    root = Path(root)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            files.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return sorted(files)


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest(root: Path | str, files: Sequence[str], extra: Any = None) -> str:
    """The input digest of ``files`` (relative to ``root``) plus ``extra`` (toolkit, flags, image...).

    sha256 over, for each file in sorted order, ``path NUL x|- NUL sha256(content) LF``, then
    ``extra NUL`` and the canonical JSON of ``extra``. Returned as ``sha256:<hex>``.
    """
    root = Path(root)
    h = hashlib.sha256()
    for rel in sorted(set(files)):
        path = root / rel
        executable = "x" if os.stat(path).st_mode & stat.S_IXUSR else "-"
        h.update(f"{rel}\0{executable}\0{file_sha256(path)}\n".encode("utf-8"))
    h.update(b"extra\0" + canonical_json(extra).encode("utf-8"))
    return "sha256:" + h.hexdigest()


STEPS_DIR = "pipeline/src/bnb_build"
"""The step programs inside a checkout: they decide outputs too, so every job digest covers them."""

DEFAULT_SOURCE_DATE_EPOCH = "315532800"
"""The one default SOURCE_DATE_EPOCH of both executors and every step: 1980-01-01T00:00:00Z, the
earliest time a zip entry can hold. A commit time is an explicit choice (``--source-date-epoch``)."""
LATEST_SOURCE_DATE_EPOCH = 4354819199
"""2107-12-31T23:59:59Z, the latest time a zip entry can hold (earlier than 1980 is written as 1980)."""


def check_source_date_epoch(text: str) -> str:
    """A SOURCE_DATE_EPOCH option's value as canonical digits: whole seconds since 1970-01-01 UTC, no
    later than the last time a zip entry can hold; UsageError naming the value otherwise."""
    value = str(text).strip()
    if not value.isdigit():
        raise UsageError(f"--source-date-epoch {text!r} is not a whole number of seconds since 1970-01-01 UTC")
    if int(value) > LATEST_SOURCE_DATE_EPOCH:
        raise UsageError(
            f"--source-date-epoch {text!r} is after 2107-12-31T23:59:59Z, the last time a wheel (zip) entry can hold; "
            f"allowed: 0 to {LATEST_SOURCE_DATE_EPOCH}, e.g. \"$(git log -1 --format=%ct)\""
        )
    return str(int(value))


STEP_FILE_SUFFIXES = (".py", ".cmake")
"""The step package's files that decide what a step does: its programs and its CMake files."""
PINS = "step-requirements.txt"
"""The versions of the tools every step runs: inside the step package of an installed pipeline, else
beside the package's parent (pipeline/); package_files.py says where."""


def step_files(steps_dir: Path | str) -> List[Tuple[str, str]]:
    """(relative path, sha256) of every program and CMake file of the step package in ``steps_dir``
    (bytecode and caches left out: they are not inputs), and of the tool pins beside it."""
    steps_dir = Path(steps_dir)
    found = []
    for rel in all_files(steps_dir):
        if rel.endswith(STEP_FILE_SUFFIXES) and "__pycache__" not in rel.split("/"):
            found.append((f"bnb_build/{rel}", file_sha256(steps_dir / rel)))
    pins = package_files.step_requirements(steps_dir)
    if pins.is_file():
        found.append((PINS, file_sha256(pins)))
    return found


def job_digest(
    root: Path | str,
    patterns: Sequence[str],
    extra: Any,
    *,
    steps_dir: Path | str | None = None,
    optional_patterns: Sequence[str] = (),
) -> str:
    """The input digest of one job: its source subset (``patterns``; ``optional_patterns`` only where
    they select files) under ``root``, the step programs (``steps_dir``, default
    ``<root>/pipeline/src/bnb_build``) and ``extra`` (toolkit, image, CMake arguments, ...).

    Pure given the file contents: the same files and ``extra`` give the same digest in any folder.
    """
    root = Path(root)
    present = [p for p in optional_patterns if p.endswith(FOLDER_SUFFIX) or (root / p).is_file()]
    files = expand(root, [*patterns, *present])
    steps = step_files(root / STEPS_DIR if steps_dir is None else steps_dir)
    return digest(root, files, {"job": extra, "steps": steps})


def copy_subset(root: Path | str, patterns: Iterable[str], dest: Path | str) -> List[str]:
    """Copy exactly the files ``patterns`` select from ``root`` to ``dest``; return their list."""
    root, dest = Path(root), Path(dest)
    files = expand(root, patterns)
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    return files


def sync_subset(root: Path | str, patterns: Iterable[str], dest: Path | str) -> List[str]:
    """Make ``dest`` hold exactly the files ``patterns`` select from ``root``; return their list.

    Like :func:`copy_subset`, but for a folder that already holds an earlier copy: a file whose
    content and executable bit are unchanged is left alone (its modification time too, so a build
    tool sees it as up to date); a changed or new file is rewritten, with the current time as its
    modification time (newer than anything built from the old content); files and folders the subset
    no longer selects are removed. Anything in ``dest`` that is not a plain file where one is
    expected (a folder, a link) is replaced.
    """
    root, dest = Path(root), Path(dest)
    files = expand(root, patterns)
    wanted = set(files)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        dest.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    # Remove what is no longer selected (deepest first, so emptied folders can go too).
    for dirpath, dirnames, filenames in os.walk(dest, topdown=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(dest).as_posix()
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in wanted or (here / name).is_symlink():
                (here / name).unlink()
        if here != dest and not any(here.iterdir()):
            here.rmdir()
    for rel in files:
        src, target = root / rel, dest / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.is_file() and _same_file_content(src, target):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.sync-tmp")
        shutil.copyfile(src, tmp)
        shutil.copymode(src, tmp)
        os.replace(tmp, target)
    return files


def _same_file_content(a: Path, b: Path) -> bool:
    """Same bytes and the same executable bit (what :func:`digest` sees of a file)."""
    sa, sb = os.stat(a), os.stat(b)
    if sa.st_size != sb.st_size or (sa.st_mode & stat.S_IXUSR) != (sb.st_mode & stat.S_IXUSR):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True
