"""How a plan is shown: a readable table, or JSON for machines. Pure: returns text and data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .matrix import LOCK_FILE
from .plan import Job, WheelJob

TAG_ONLY = "(tag only)"
COLUMNS = ("id", "backend", "version", "platform", "runner", "image", "archs", "library")


def image_cell(image: str | None, pinned: bool) -> str:
    if image is None:
        return "-"
    return image if pinned else f"{image} {TAG_ONLY}"


def job_row(job: Job) -> tuple[str, ...]:
    return (
        job.id, job.backend, job.version or "-", job.platform, job.runner,
        image_cell(job.image, job.image_pinned), ";".join(job.archs) or "-", job.library,
    )  # fmt: skip


def format_table(jobs: Sequence[Job], wheels: Sequence[WheelJob] = ()) -> str:
    """The plan as an aligned text table, then one line per wheel and a summary."""
    lines = _aligned([COLUMNS, *(job_row(job) for job in jobs)])
    if wheels:
        wheel_rows = [("wheel", "plat_tag", "runner", "image", "libraries")]
        wheel_rows += [(w.id, w.plat_tag, w.runner, image_cell(w.image, w.image_pinned), str(len(w.libraries))) for w in wheels]
        lines.append("")
        lines += _aligned(wheel_rows)
    unpinned = {job.image for job in [*jobs, *wheels] if job.image and not job.image_pinned}
    lines.append("")
    lines.append(f"build jobs: {len(jobs)}, wheels: {len(wheels)}")
    if unpinned:
        lines.append(f"{len(unpinned)} image(s) used by tag only: no digest in {LOCK_FILE} yet")
    return "\n".join(lines)


def jobs_json(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Every field of every job, JSON-ready."""
    return [job.model_dump(mode="json") for job in jobs]


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows with every column but the last padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows]


def support_table(jobs: Sequence[Job], wheels: Sequence[WheelJob]) -> str:
    """The support matrix as Markdown (README.md embeds it; a test keeps the two equal)."""
    lines = ["| platform | wheel tag | built by |", "|---|---|---|"]
    # "built by": the runners of the platform's jobs (e.g. Windows: CPU cross-built, GPU on native runners)
    lines += [f"| {w.platform} | `{w.plat_tag}` | {', '.join(sorted({j.runner for j in jobs if j.platform == w.platform}))} |" for w in wheels]
    lines += ["", "| backend | toolkit | library | platforms: GPU targets |", "|---|---|---|---|"]
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.backend, job.version or "-"), []).append(job)
    for (backend, version), group in sorted(groups.items(), key=lambda item: (item[0][0], _version_key(item[0][1]))):
        by_archs: dict[str, list[str]] = {}
        for job in group:
            by_archs.setdefault(";".join(job.archs) or "-", []).append(job.platform)
        cells = "<br>".join(f"{', '.join(platforms)}: {archs}" for archs, platforms in by_archs.items())
        stem = group[0].library.rsplit(".", 1)[0]
        lines.append(f"| {backend} | {version} | `{stem}` | {cells} |")
    return "\n".join(lines)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")) if version != "-" else ()
