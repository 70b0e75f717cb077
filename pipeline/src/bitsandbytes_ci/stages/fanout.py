"""Run many jobs at once and keep going when one fails; collect outputs, failures and a manifest.

Every build job is awaited in its own task of one anyio task group. A job that fails (dagger.ExecError
for a failed command, dagger.QueryError for anything else the engine refuses) is recorded, never
re-raised, so the other jobs finish. `build_all` then packs wheels only for platforms whose libraries
all built (a wheel missing a library is the import error users hit most), audits them, and lays out:

    libs/<os>/<arch>/<library> (+ .build-info.json)    every library that built
    wheels/*.whl                                      one wheel per complete platform
    audit.md                                          the audit step's report
    manifest.json                                     jobs, images, libraries, wheels and their status
    failures.md                                       only when something failed
    ccache/<job id>/                                  only when a ccache seed was given
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import dagger
from dagger import dag

from ..matrix import Matrix
from ..plan import Job, WheelJob, expectations
from . import native, packaging

TAIL_LINES = 30


class BuildFailed(Exception):
    """Raised after every job ran, when at least one failed; the message is failures.md."""


@dataclass
class Outcome:
    """What a fan-out produced, by job id."""

    outputs: dict[str, dagger.Directory] = field(default_factory=dict)
    ccache: dict[str, dagger.Directory] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def describe(error: dagger.QueryError) -> str:
    """A failure's text: the command and exit code of a failed exec plus its output tail."""
    if isinstance(error, dagger.ExecError):
        tail = "\n".join((error.stdout + "\n" + error.stderr).strip().splitlines()[-TAIL_LINES:])
        return f"`{' '.join(error.command)}` exited with {error.exit_code}\n\n```text\n{tail}\n```"
    return str(error)


async def collect(outcome: Outcome, key: str, work: Callable[[], Awaitable[None]]) -> None:
    try:
        await work()
    except dagger.QueryError as e:
        outcome.failures[key] = describe(e)


async def build_libraries(jobs: Sequence[Job], source: dagger.Directory, *, python_image: str, seed: dagger.Directory | None) -> Outcome:
    """Every job concurrently; each output (and ccache snapshot) is synced, failures recorded."""
    outcome = Outcome()

    async def one(job: Job) -> None:
        result = native.build(job, source, python_image=python_image, seed=seed)
        outcome.outputs[job.id] = await result.out.sync()
        if result.ccache is not None:
            outcome.ccache[job.id] = await result.ccache.sync()

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(collect, outcome, job.id, functools.partial(one, job))
    return outcome


def merge(parts: dict[str, dagger.Directory], order: Sequence[str], prefix: str = ".") -> dagger.Directory:
    """One Directory from several (in plan order), each at `prefix`; their layouts do not overlap."""
    merged = dag.directory()
    for key in order:
        if key in parts:
            merged = merged.with_directory(prefix, parts[key])
    return merged


def libraries_result(outcome: Outcome, jobs: Sequence[Job]) -> dagger.Directory:
    """The layout of the build-* functions: `<os>/<arch>/...` plus `ccache/<job id>/` when seeded."""
    ids = [job.id for job in jobs]
    return merge(outcome.outputs, ids).with_directory("ccache", merge(outcome.ccache, ids)) if outcome.ccache else merge(outcome.outputs, ids)


async def build_wheels(wheels: Sequence[WheelJob], source: dagger.Directory, libs: dagger.Directory, outcome: Outcome) -> None:
    async def one(job: WheelJob) -> None:
        outcome.outputs[job.id] = await packaging.wheel(job, source, libs).sync()

    async with anyio.create_task_group() as tg:
        for job in wheels:
            tg.start_soon(collect, outcome, job.id, functools.partial(one, job))


async def run_audit(image: str, source: dagger.Directory, wheels: dagger.Directory, expected: dict[str, Any]) -> tuple[dagger.File, int]:
    ctr = await packaging.audit(image, source, wheels, expected).sync()
    return ctr.file(packaging.REPORT), await ctr.exit_code()


def failures_md(failures: dict[str, str]) -> str:
    lines = ["# Failed jobs", ""]
    for key, text in sorted(failures.items()):
        lines += [f"## {key}", "", text, ""]
    return "\n".join(lines)


def manifest(jobs: Sequence[Job], wheels: Sequence[WheelJob], outcome: Outcome, audit_exit: int | None) -> str:
    def status(key: str) -> str:
        return "failed" if key in outcome.failures else "ok" if key in outcome.outputs else "skipped"

    data = {
        "jobs": [{"id": j.id, "image": j.image, "image_pinned": j.image_pinned, "platform": j.platform,
                  "library": f"libs/{j.output_subdir}/{j.library}", "status": status(j.id)} for j in jobs],
        "wheels": [{"id": w.id, "plat_tag": w.plat_tag, "libraries": w.libraries, "status": status(w.id)} for w in wheels],
        "audit": {"exit_code": audit_exit},
        "ok": not outcome.failures,
    }  # fmt: skip
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


async def build_all(matrix: Matrix, jobs: Sequence[Job], wheels: Sequence[WheelJob], source: dagger.Directory, *,
                    python_image: str, seed: dagger.Directory | None) -> tuple[dagger.Directory, dict[str, str]]:  # fmt: skip
    """The whole pipeline for `jobs`; returns the result Directory and the failures (empty on success)."""
    outcome = await build_libraries(jobs, source, python_image=python_image, seed=seed)
    libs = merge(outcome.outputs, [job.id for job in jobs])
    complete = [w for w in wheels if all(i in outcome.outputs for i in w.build_job_ids)]
    await build_wheels(complete, source, libs, outcome)
    packed = [w for w in complete if w.id in outcome.outputs]
    result = dag.directory().with_directory("libs", libs).with_directory("wheels", merge(outcome.outputs, [w.id for w in packed]))
    audit_exit: int | None = None
    if packed:
        audited = [job for job in jobs if any(job.platform == w.platform for w in packed)]
        report, audit_exit = await run_audit(python_image, source, result.directory("wheels"), expectations(matrix, audited))
        result = result.with_file("audit.md", report)
        if audit_exit != 0:
            outcome.failures["audit"] = f"the audit step exited with {audit_exit}: see audit.md"
    for w in wheels:
        if w not in complete:
            outcome.failures.setdefault(w.id, "not packed: a library of this platform failed to build")
    if outcome.ccache:
        result = result.with_directory("ccache", merge(outcome.ccache, [job.id for job in jobs]))
    result = result.with_new_file("manifest.json", manifest(jobs, wheels, outcome, audit_exit))
    if outcome.failures:
        result = result.with_new_file("failures.md", failures_md(outcome.failures))
    return result, outcome.failures
