"""The image lock file: digests of the base images, keyed by `name:tag`.

The matrix names images by tag only; this file (images.lock.toml, next to matrix.toml) is the one
place that holds digests. An empty value means "not locked yet": the plan then uses the tag alone and
says so. `render_lock` writes the file back in the same layout (for a function that refreshes it).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from .errors import MatrixError

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

HEADER = """\
# Digests of the base images, keyed by `name:tag` exactly as the support matrix (matrix.toml) names them.
# "" = not locked yet: jobs use the tag alone and `bnb-ci plan` marks them "tag only".
# Refresh with the lock-images function rather than by hand; a digest here must be the image
# index (multi-arch manifest list) digest, so one entry serves every platform of a tag.
"""


def load_lock(path: Path) -> dict[str, str | None]:
    """`name:tag` -> digest (or None when not locked yet). A missing file locks nothing."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        msg = f"{path}: not valid TOML ({e}); fix the file or regenerate it with lock-images"
        raise MatrixError(msg) from None
    except (OSError, UnicodeDecodeError) as e:
        msg = f"image lock file {path} cannot be read ({getattr(e, 'strerror', None) or e}); fix it or regenerate it with lock-images"
        raise MatrixError(msg) from None
    unknown = sorted(set(data) - {"images"})
    if unknown:
        msg = f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}; allowed: images"
        raise MatrixError(msg)
    images = data.get("images", {})
    result: dict[str, str | None] = {}
    for ref, digest in images.items():
        if not isinstance(digest, str) or (digest and not DIGEST.match(digest)):
            msg = f'{path}: digest of {ref!r} is {digest!r}; expected "sha256:<64 hex digits>" or "" (not locked yet)'
            raise MatrixError(msg)
        if "@" in ref or ":" not in ref.rsplit("/", 1)[-1]:
            msg = f"{path}: key {ref!r} is not `name:tag`; the lock is keyed by the tag the matrix names"
            raise MatrixError(msg)
        result[ref] = digest or None
    return result


def render_lock(digests: Mapping[str, str | None]) -> str:
    """The lock file text for `digests`, sorted by image."""
    lines = [HEADER, "[images]"]
    for ref in sorted(digests):
        lines.append(f'"{ref}" = "{digests[ref] or ""}"')
    return "\n".join(lines) + "\n"
