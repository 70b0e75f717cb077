"""GPU arch lists: ";"-separated, as CMake receives them ("75;80;90", "gfx90a;gfx942").

CUDA lists hold compute capabilities without the "sm_" prefix, optionally with an "a"/"f" feature
suffix ("90a"); ROCm lists hold gfx target names. Functions raise ValueError with a message that names
the bad element; callers turn it into their own error class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SYNTAX = {
    "cuda": (re.compile(r"^\d{2,3}[af]?$"), 'compute capabilities such as "75;80;90" (no "sm_" prefix)'),
    "hip": (re.compile(r"^gfx[0-9a-f]{3,4}$"), 'gfx targets such as "gfx90a;gfx942"'),
}


def backends_with_archs() -> tuple[str, ...]:
    return tuple(_SYNTAX)


def parse_arch_list(text: str, backend: str) -> tuple[str, ...]:
    """Split and check an arch list for `backend` ("cuda" or "hip"); order is kept."""
    pattern, example = _SYNTAX[backend]
    items = [item.strip() for item in text.split(";")]
    if not text.strip() or any(not item for item in items):
        msg = f"arch list {text!r} has an empty element; expected {example}"
        raise ValueError(msg)
    bad = [item for item in items if not pattern.match(item)]
    if bad:
        msg = f"arch list {text!r}: {', '.join(repr(b) for b in bad)} not understood; expected {example}"
        raise ValueError(msg)
    seen: set[str] = set()
    dupes = [item for item in items if item in seen or seen.add(item)]
    if dupes:
        msg = f"arch list {text!r} repeats {', '.join(repr(d) for d in dupes)}"
        raise ValueError(msg)
    return tuple(items)


def split_by_backend(text: str) -> dict[str, str]:
    """{"cuda": "75;90", "hip": "gfx90a"} from "75;gfx90a;90": entries starting with "gfx" are ROCm
    targets, the others CUDA compute capabilities (each part is checked by parse_arch_list)."""
    items = [item.strip() for item in text.split(";")]
    if not text.strip() or any(not item for item in items):
        msg = f"arch list {text!r} has an empty element; expected e.g. {_SYNTAX['cuda'][1]} or {_SYNTAX['hip'][1]}"
        raise ValueError(msg)
    parts: dict[str, list[str]] = {}
    for item in items:
        parts.setdefault("hip" if item.startswith("gfx") else "cuda", []).append(item)
    return {backend: join(group) for backend, group in parts.items()}


def base_arch(arch: str) -> str:
    """The arch without a feature suffix: "90a" -> "90"."""
    return arch.rstrip("af") if arch[:1].isdigit() else arch


def unsupported(archs: Iterable[str], supported: Iterable[str]) -> list[str]:
    """The archs whose base arch is not in `supported`."""
    allowed = set(supported)
    return [arch for arch in archs if base_arch(arch) not in allowed]


def join(archs: Iterable[str]) -> str:
    return ";".join(archs)
