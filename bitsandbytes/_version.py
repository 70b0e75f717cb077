"""The package version: the checkout's VERSION file when run from a checkout, else installed metadata."""

from __future__ import annotations

from pathlib import Path


def package_version() -> str:
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "VERSION").is_file() and (checkout / "pyproject.toml").is_file():
        # Running from a source checkout: its VERSION describes this code, whatever is installed.
        return (checkout / "VERSION").read_text(encoding="utf-8").strip()
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8 is not supported
        return "0+unknown"
    try:
        return version("bitsandbytes")
    except PackageNotFoundError:
        return "0+unknown"
