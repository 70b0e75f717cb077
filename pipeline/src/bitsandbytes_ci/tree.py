"""The built tree's own settings: `[tool.bitsandbytes-ci]` of its pyproject.toml.

A tree configures the pipeline the way cibuildwheel reads `[tool.cibuildwheel]`: what it sets
overrides the pipeline's defaults (matrix.toml), what it leaves out keeps them, and a tree with no such
table builds with the defaults. Keys are kebab-case; an unknown key is an error with the closest
known key as a suggestion.

    [tool.bitsandbytes-ci]
    try-script = "tests/wheel_smoke.py"   # run by try-wheels with each wheel installed

`load_tree_config(source)` reads it on the host; the Dagger module reads the same text from the source
Directory and hands it to `tree_config_from_text`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .errors import PipelineError, allowed_list, did_you_mean

TABLE = "bitsandbytes-ci"
PYPROJECT = "pyproject.toml"


class TreeConfigError(PipelineError):
    """The tree's `[tool.bitsandbytes-ci]` table is not valid."""

    exit_code = 2


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class TreeConfig(BaseModel):
    """What a tree may set (every field optional; None keeps the pipeline's default)."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=_kebab, populate_by_name=True)

    try_script: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = [_kebab(name) for name in cls.model_fields]
            for key in data:
                if key not in allowed:
                    msg = f"unknown key {key!r}{did_you_mean(str(key), allowed)}; allowed: {allowed_list(allowed)}"
                    raise ValueError(msg)
        return data

    @field_validator("try_script")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in Path(value).parts or not value.endswith(".py")):
            msg = f"try-script {value!r} must be a .py file given relative to the tree's root"
            raise ValueError(msg)
        return value


def tree_config_from_text(text: str | None, *, origin: str = PYPROJECT) -> TreeConfig:
    """The `[tool.bitsandbytes-ci]` table of a pyproject.toml's text (None or no table: the defaults)."""
    if text is None:
        return TreeConfig()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = f"{origin}: not valid TOML ({e})"
        raise TreeConfigError(msg) from None
    table = data.get("tool", {}).get(TABLE, {})
    if not isinstance(table, dict):
        msg = f"{origin}: [tool.{TABLE}] must be a table"
        raise TreeConfigError(msg)
    try:
        return TreeConfig.model_validate(table)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or TABLE}: {item['msg'].removeprefix('Value error, ')}" for item in e.errors())
        msg = f"{origin} [tool.{TABLE}]: {problems}"
        raise TreeConfigError(msg) from None


def load_tree_config(source: Path) -> TreeConfig:
    """The tree's settings from `<source>/pyproject.toml` (a tree without one builds with the defaults)."""
    path = Path(source) / PYPROJECT
    return tree_config_from_text(path.read_text(encoding="utf-8") if path.is_file() else None, origin=str(path))
