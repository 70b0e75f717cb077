"""How a plan is shown: a readable table, or JSON for machines. Pure: returns text and data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .errors import SelectionError, allowed_list, did_you_mean
from .matrix import LOCK_FILE, Matrix
from .plan import Dropped, Job, WheelJob
from .shards import IN_CONTAINERS, ci_matrix, pull_size

TAG_ONLY = "(tag only)"
COLUMNS = ("id", "backend", "version", "platform", "runner", "toolchain", "image", "archs", "library")


PLAN_FORMATS = ("table", "json", "markdown", "ci-matrix")
"""What `plan --format` prints: the aligned table, every job as JSON, the support matrix as Markdown
(README.md embeds it), or the CI shards as the workflow's matrices (shards.ci_matrix)."""


def check_format(value: str) -> str:
    if value not in PLAN_FORMATS:
        msg = f"--format {value!r} is not known{did_you_mean(value, PLAN_FORMATS)}; allowed: {allowed_list(PLAN_FORMATS)}"
        raise SelectionError(msg)
    return value


def render_plan(fmt: str, matrix: Matrix, jobs: Sequence[Job], wheels: Sequence[WheelJob], dropped: Sequence[Dropped] = ()) -> str:
    """The plan in one of PLAN_FORMATS (the one rendering both `bnb-ci plan` and `dagger call plan` use);
    `dropped`: the jobs the tree's build cannot make (`plan.dropped_jobs`), listed by the table."""
    check_format(fmt)
    if fmt == "json":
        return json.dumps(jobs_json(jobs), indent=2) + "\n"
    if fmt == "markdown":
        return support_table(jobs, wheels) + "\n"
    if fmt == "ci-matrix":
        return json.dumps(ci_matrix(matrix, jobs), indent=2) + "\n"
    return format_table(jobs, wheels, dropped) + "\n"


def image_cell(image: str | None, pinned: bool) -> str:
    if image is None:
        return "-"
    return image if pinned else f"{image} {TAG_ONLY}"


def job_row(job: Job) -> tuple[str, ...]:
    return (
        job.id, job.backend, job.version or "-", job.platform, job.runner, job.toolchain or "-",
        image_cell(job.image, job.image_pinned), ";".join(job.archs) or "-", job.library,
    )  # fmt: skip


def format_table(jobs: Sequence[Job], wheels: Sequence[WheelJob] = (), dropped: Sequence[Dropped] = ()) -> str:
    """The plan as an aligned text table, why each toolchain was chosen where the tree decided it, the
    jobs the tree cannot build (and why), then one line per wheel and a summary."""
    lines = _aligned([COLUMNS, *(job_row(job) for job in jobs)])
    reasons = [(job.id, job.toolchain_reason) for job in jobs if job.toolchain_reason]
    if reasons:
        lines += ["", "toolchains chosen for the tree:", *_aligned([("  " + job_id, reason) for job_id, reason in reasons])]
    if dropped:
        lines += ["", f"not planned: {len(dropped)} job(s) the tree's build cannot make:", *_aligned([("  " + d.id, d.reason) for d in dropped])]
    if wheels:
        wheel_rows = [("wheel", "plat_tag", "cpu_floor", "runner", "image", "libraries")]
        wheel_rows += [(w.id, w.plat_tag, w.cpu_floor or "-", w.runner, image_cell(w.image, w.image_pinned), str(len(w.libraries))) for w in wheels]
        lines.append("")
        lines += _aligned(wheel_rows)
    unpinned = {job.image for job in [*jobs, *wheels] if job.image and not job.image_pinned}
    lines.append("")
    lines.append(f"build jobs: {len(jobs)}, wheels: {len(wheels)}")
    in_containers = [job for job in jobs if job.runner in IN_CONTAINERS]
    if in_containers:
        images = {(job.image, job.dagger_platform) for job in in_containers}
        lines.append(f"container and cross jobs: {len(in_containers)}, on {len(images)} image(s) of about {pull_size(in_containers):.1f} GB in all")
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
    lines = ["| platform | wheel tag | CPU floor | built by |", "|---|---|---|---|"]
    # "built by": the runners of the platform's jobs (e.g. Windows: CPU cross-built, GPU on native runners)
    lines += [f"| {w.platform} | `{w.plat_tag}` | {w.cpu_floor} | {', '.join(sorted({j.runner for j in jobs if j.platform == w.platform}))} |"
              for w in wheels]  # fmt: skip
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
