"""Pure helpers for release notes: checksums of files and Markdown tables.

(The release and publish steps themselves build on these.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Sequence

from .inputs import file_sha256


def sha256_files(paths: Iterable[Path]) -> Dict[str, str]:
    """``{file name: sha256 hex}`` for ``paths``, sorted by name; two files of one name are an error."""
    result: Dict[str, str] = {}
    for path in sorted(paths, key=lambda p: p.name):
        if path.name in result:
            msg = f"two files named {path.name}; release files need unique names"
            raise ValueError(msg)
        result[path.name] = file_sha256(path)
    return result


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; ``|`` in cells is escaped, every row must have one cell per header."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            msg = f"row {list(row)} has {len(row)} cells, the table has {len(headers)} columns"
            raise ValueError(msg)
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
