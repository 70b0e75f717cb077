"""Dotted toolkit versions ("12.8.1", "7.14.0", "2025"): parsing, ordering, matching.

Versions stay strings everywhere (that is how they appear in image tags and file names); this module
is the one place that compares them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_VERSION = re.compile(r"^\d+(\.\d+)*$")


def is_version(text: str) -> bool:
    return bool(_VERSION.match(text))


def version_key(version: str) -> tuple[int, ...]:
    """Sort key: "12.10" sorts after "12.9"."""
    return tuple(int(part) for part in version.split("."))


def at_least(version: str, since: str) -> bool:
    """Whether `version` is `since` or later, comparing only as many parts as `since` has."""
    parts = version_key(version)[: len(version_key(since))]
    return parts >= version_key(since)


def short_tag(version: str) -> str:
    """Major and minor run together, as in library names: "12.8.1" -> "128", "7.14.0" -> "714", "2025" -> "2025"."""
    return "".join(version.split(".")[:2])


def matches(version: str, wanted: str) -> bool:
    """Whether a requested version selects `version`: exactly, or as a leading part ("12.8" selects "12.8.1")."""
    return version == wanted or version.startswith(wanted + ".")


def sort_versions(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=version_key)
