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

from dagger_fake_engine import FakeEngine  # noqa: E402


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    """A recording stand-in for the Dagger engine (none can run here): every query is recorded."""
    fake = FakeEngine()
    fake.install(monkeypatch)
    yield fake
