"""This repository as the Dagger tests upload it: a source Directory of its files (FakeEngine, the
tests' stand-in for the engine, knows what such a Directory holds)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dagger_fake_engine import _pattern_regex, tree_source

REPO = Path(__file__).resolve().parents[2]


READ_BY_THE_MODULE = ("pyproject.toml", "VERSION", "CMakeLists.txt")
"""Files whose text the module reads itself (the tree's facts); the others stand in by a digest."""
UPLOADED = ("pyproject.toml", "VERSION", "CMakeLists.txt", "README.md", "cmake/", "csrc/", "bitsandbytes/", "tests/wheel_smoke.py")
"""The part of this repository the dry runs upload: every file a job of our tree reads."""


def uploaded_paths(roots: tuple[str, ...] = ("",)) -> list[str]:
    """The files of this checkout under `roots` that a `dagger call` uploads as the `source` argument:
    every file on disk but those the function's ignore patterns exclude. The engine loads a `DefaultPath`
    Directory with `CopyFilter{Exclude: arg.Ignore}` only (core/modfunc.go, loadContextualArg; no
    .gitignore rules: core/modulesource.go, LoadContextDir adds them only when asked), so untracked and
    git-ignored files are uploaded unless SOURCE_IGNORE names them."""
    from bitsandbytes_ci.module.stages.common import SOURCE_IGNORE

    ignored = [_pattern_regex(p) for p in SOURCE_IGNORE]
    found: list[str] = []
    for root in roots:
        top = REPO / root
        if top.is_file():
            found += [] if any(r.match(root) for r in ignored) else [root]
            continue
        for folder, dirs, names in os.walk(top):
            rel = Path(folder).relative_to(REPO).as_posix()
            rel = "" if rel == "." else rel
            dirs[:] = sorted(d for d in dirs if not any(r.match(f"{rel}/{d}" if rel else d) for r in ignored))
            for name in sorted(names):
                path = f"{rel}/{name}" if rel else name
                if not any(r.match(path) for r in ignored) and (REPO / path).is_file():
                    found.append(path)
    return sorted(set(found))


def repo_files(*, everything: bool = False) -> dict[str, str]:
    """path -> contents of this repository's files as `dagger call` would upload them (uploaded_paths:
    untracked files too); `everything`: the whole tree, else the files in UPLOADED."""
    files = {}
    for rel in uploaded_paths(("",) if everything else tuple(u.rstrip("/") for u in UPLOADED)):
        data = (REPO / rel).read_bytes()
        files[rel] = data.decode("utf-8") if rel in READ_BY_THE_MODULE or rel.endswith(".cmake") else hashlib.sha256(data).hexdigest()[:16]
    return files


_REPO_FILES: dict[str, str] = {}


def repo_source():
    """This repository as a source Directory (the default of every function's `source`)."""
    if not _REPO_FILES:
        _REPO_FILES.update(repo_files())
    return tree_source(_REPO_FILES)
