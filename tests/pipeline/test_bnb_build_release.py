"""Pure helpers of bnb_build.release."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bnb_build import release


def test_sha256_files(tmp_path: Path) -> None:
    (tmp_path / "b.whl").write_bytes(b"b")
    (tmp_path / "a.whl").write_bytes(b"a")
    sums = release.sha256_files([tmp_path / "b.whl", tmp_path / "a.whl"])
    assert list(sums) == ["a.whl", "b.whl"]
    assert sums["a.whl"] == hashlib.sha256(b"a").hexdigest()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.whl").write_bytes(b"other")
    with pytest.raises(ValueError, match="two files named a.whl"):
        release.sha256_files([tmp_path / "a.whl", tmp_path / "x" / "a.whl"])


def test_render_table() -> None:
    assert release.render_table(["wheel", "sha256"], [["a|b", 1]]) == "| wheel | sha256 |\n|---|---|\n| a\\|b | 1 |\n"
    with pytest.raises(ValueError, match="has 1 cells, the table has 2 columns"):
        release.render_table(["a", "b"], [["x"]])
