"""The `host` extra of the pipeline's distribution: the tools its step programs run, exactly as
step-requirements.txt pins them (that file stays the one place of the pins)."""

from __future__ import annotations

from pathlib import Path

from hatchling.metadata.plugin.interface import MetadataHookInterface

PINS = "step-requirements.txt"
EXTRA = "host"


def pinned_requirements(text: str) -> list[str]:
    """The requirement lines of a pins file, without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


class StepToolsHook(MetadataHookInterface):
    def update(self, metadata: dict) -> None:
        pins = Path(self.root) / PINS
        metadata["optional-dependencies"] = {EXTRA: pinned_requirements(pins.read_text(encoding="utf-8"))}
