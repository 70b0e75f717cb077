"""pyright over the orchestration package (config: [tool.pyright] in pipeline/pyproject.toml)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_pyright_reports_no_errors() -> None:
    pyright = Path(sys.executable).parent / "pyright"
    if not pyright.exists():
        found = shutil.which("pyright")
        if found is None:
            pytest.fail("pyright not found: install tests/requirements.txt (it pins pyright)")
        pyright = Path(found)
    proc = subprocess.run([str(pyright), "--outputjson", "-p", str(REPO / "pipeline"), "--pythonpath", sys.executable],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    report = json.loads(proc.stdout)
    errors = [f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}" for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], "\n".join(errors)
    assert report["summary"]["filesAnalyzed"] >= len(list((REPO / "pipeline/src/bitsandbytes_ci").rglob("*.py")))
