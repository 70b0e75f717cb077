"""Fixtures of the Dagger module tests.

The SDK reads DAGGER_MAIN_OBJECT when `dagger` is first imported, so it is set here, before any test
module of this folder imports dagger. Registration checks also run in subprocesses (clean imports).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("DAGGER_MAIN_OBJECT", "BitsandbytesCi")
os.environ.setdefault("DAGGER_DEFAULT_PYTHON_PACKAGE", "bitsandbytes_ci")

REPO = Path(__file__).resolve().parents[2]
PIPELINE_SRC = REPO / "pipeline" / "src"
if str(PIPELINE_SRC) not in sys.path:
    sys.path.insert(0, str(PIPELINE_SRC))

import pytest  # noqa: E402

from dagger_fake_engine import FakeEngine, tree_source  # noqa: E402


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    """A recording stand-in for the Dagger engine (none can run here): every query is recorded."""
    fake = FakeEngine()
    fake.install(monkeypatch)
    yield fake


READ_BY_THE_MODULE = ("pyproject.toml", "VERSION", "CMakeLists.txt")
"""Files whose text the module reads itself (the tree's facts); the others stand in by a digest."""
UPLOADED = ("pyproject.toml", "VERSION", "CMakeLists.txt", "README.md", "cmake/", "csrc/", "bitsandbytes/", "tests/wheel_smoke.py")
"""The part of this repository the dry runs upload: every file a job of our tree reads."""


def repo_files(*, everything: bool = False) -> dict[str, str]:
    """path -> contents of this repository's files (tracked and new, not ignored), as `dagger call`
    would upload them; `everything`: the whole tree, else the files in UPLOADED."""
    import hashlib
    import subprocess

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


@pytest.fixture(scope="session")
def tree():
    """What the plan knows of this repository (its [tool.bitsandbytes-ci] settings, ...)."""
    from bitsandbytes_ci.tree import read_tree

    return read_tree(REPO)
