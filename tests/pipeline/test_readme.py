"""README.md states facts that live elsewhere; these tests keep the copies equal to their source."""

from __future__ import annotations

import re
from pathlib import Path

from bitsandbytes_ci.host import cli

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


def test_readme_opens_with_the_two_commands() -> None:
    """The first section holds exactly two commands, the main job and the tests; `.ci/run` ends in the
    second; the Dagger call they wrap stays documented below them."""
    text = README.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)
    assert sections[1].startswith("The two commands\n"), "the README's first section is the two commands"
    commands = re.findall(r"^    (\S[^\n]*)$", sections[1], flags=re.M)
    assert commands == ["./bnb build", "./bnb test"]
    ci = [line.strip() for line in (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    assert ci[-1] == commands[1], ".ci/run must run the README's test command"
    assert "dagger call build-all export --path dist" in text