"""The package version and build information.

Pre-release wheels carry the placeholder version ``1.33.7.preview`` in their metadata (so that their
download links never change) and the real version and commit in ``_build_info.json`` next to this
file; ``package_version()`` and ``build_info()`` report those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

BUILD_INFO_FILE = Path(__file__).resolve().parent / "_build_info.json"


def build_info() -> Dict[str, str]:
    """Where this package came from: ``version`` and, for a pre-release wheel, ``commit``,
    ``platform``, ``placeholder_version`` and the original ``wheel`` file name."""
    try:
        info = json.loads(BUILD_INFO_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": package_version()}
    return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {"version": package_version()}


def package_version() -> str:
    try:
        recorded = json.loads(BUILD_INFO_FILE.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and recorded:
        return recorded
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
