"""This repository as the Dagger tests upload it: a source Directory of its files (FakeEngine, the
tests' stand-in for the engine, knows what such a Directory holds)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from dagger_fake_engine import tree_source

REPO = Path(__file__).resolve().parents[2]


READ_BY_THE_MODULE = ("pyproject.toml", "VERSION", "CMakeLists.txt")
"""Files whose text the module reads itself (the tree's facts); the others stand in by a digest."""
UPLOADED = ("pyproject.toml", "VERSION", "CMakeLists.txt", "README.md", "cmake/", "csrc/", "bitsandbytes/", "tests/wheel_smoke.py")
"""The part of this repository the dry runs upload: every file a job of our tree reads."""


def repo_files(*, everything: bool = False) -> dict[str, str]:
    """path -> contents of this repository's files (tracked and new, not ignored), as `dagger call`
    would upload them; `everything`: the whole tree, else the files in UPLOADED."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()  # fmt: skip
    files = {}
    for rel in listed:
        path = REPO / rel
        if not path.is_file() or any(part in ("__pycache__", ".venv") for part in Path(rel).parts):
            continue
        if not everything and not rel.startswith(UPLOADED):
            continue
        data = path.read_bytes()
        files[rel] = data.decode("utf-8") if rel in READ_BY_THE_MODULE or rel.endswith(".cmake") else hashlib.sha256(data).hexdigest()[:16]
    return files


_REPO_FILES: dict[str, str] = {}


def repo_source():
    """This repository as a source Directory (the default of every function's `source`)."""
    if not _REPO_FILES:
        _REPO_FILES.update(repo_files())
    return tree_source(_REPO_FILES)
