"""README.md states facts that live elsewhere; these tests keep the copies equal to their source."""

from __future__ import annotations

import re
from pathlib import Path

from bitsandbytes_ci import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"README.md has no <!-- {name}:start/end --> section"
    return match.group(1)


def test_support_matrix_section_equals_the_matrix(capsys) -> None:
    assert cli.main(["plan", "--format", "markdown"]) == 0
    generated = capsys.readouterr().out
    assert section("support-matrix") == generated, (
        "README.md's support matrix differs from the matrix: regenerate it with `bnb-ci plan --format markdown`"
    )


def test_readme_names_both_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "dagger call build-all export --path dist" in text
    test_command = re.search(r"Run the tests[^\n]*(?:\n[^\n]+)*\n\n    ([^\n]+)\n", text)
    assert test_command, "README.md must show the test command"
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.group(1).strip() in ci, ".ci/run must run the README's test command"
