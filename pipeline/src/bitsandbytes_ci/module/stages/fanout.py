"""Run many jobs at once and keep going when one fails; collect outputs, failures and a manifest.

Every build job is awaited in its own task of one anyio task group, at most `limit` at a time (an anyio
CapacityLimiter; each job's compile parallelism is sized to its share of the engine). A job that fails
(dagger.ExecError for a failed command, dagger.QueryError for anything else the engine refuses) is
recorded, never re-raised, so the other jobs finish. With `libs` (libraries built earlier, e.g. by the
CI shards and native runners) nothing is built: every planned library is taken from there, and one
that is missing is a failure. `build_all` then packs wheels only for platforms whose libraries all
built (a wheel missing a library is the import error users hit most), tries and audits them, and lays out:

    libs/<os>/<arch>/<library> (+ .build-info.json)    every library that built
    wheels/*.whl                                      one wheel per complete platform
    tries.md                                          each wheel installed and run (try-wheels)
    audit.md                                          the audit step's report
    manifest.json                                     jobs, images, libraries, wheels and their status
    summary.md                                        the run for people (summary.py, as bnb-ci writes it)
    failures.md                                       only when something failed
    ccache/<job id>/                                  only when a ccache seed was given
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import dagger
from dagger import dag

from bnb_build.inputs import DEFAULT_SOURCE_DATE_EPOCH
from bnb_build.native import BUILD_INFO_SUFFIX
from bnb_build.release import INCOMPLETE_MARKER, incomplete_notice

from ...core.matrix import Matrix
from ...core.plan import Job, WheelJob, expectations
from ...core.results import JobResult
from ...core.summary import render_summary_md
from ...core.tree import DEFAULT_TREE, TreeFacts
from . import native, packaging, tries
from .common import TAIL_LINES, describe, filtered, rerun_env


class BuildFailed(Exception):
    """Raised after every job ran, when at least one failed; the message is failures.md."""


@dataclass
class Outcome:
    """What a fan-out produced, by job id."""

    outputs: dict[str, dagger.Directory] = field(default_factory=dict)
    ccache: dict[str, dagger.Directory] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


async def collect(outcome: Outcome, key: str, work: Callable[[], Awaitable[None]]) -> None:
    try:
        await work()
    except dagger.QueryError as e:
        outcome.failures[key] = describe(e)


async def build_libraries(jobs: Sequence[Job], source: dagger.Directory, *, python_image: str, seed: dagger.Directory | None,
                          fresh: Mapping[str, str] | None = None, limit: int = 1) -> Outcome:  # fmt: skip
    """Every job, `limit` at a time; each output (and ccache snapshot) is synced, failures recorded."""
    outcome = Outcome()
    limiter = anyio.CapacityLimiter(max(1, limit))
    sharing = max(1, min(limit, len(jobs)))

    async def one(job: Job) -> None:
        async with limiter:
            result = native.build(job, source, python_image=python_image, seed=seed, fresh=fresh, concurrent_jobs=sharing)
            outcome.outputs[job.id] = await result.out.sync()
            if result.ccache is not None:
                outcome.ccache[job.id] = await result.ccache.sync()

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(collect, outcome, job.id, functools.partial(one, job))
    return outcome


async def libraries_from(libs: dagger.Directory, jobs: Sequence[Job]) -> Outcome:
    """The planned libraries taken from `libs` (`<os>/<arch>/<library>` + its build-info.json, as the
    build functions and `bnb-ci build-<backend> --out` lay them out); a missing one is a failure."""
    outcome = Outcome()
    present = set(await libs.glob("**/libbitsandbytes_*"))
    for job in jobs:
        library = f"{job.output_subdir}/{job.library}"
        if library in present and f"{library}{BUILD_INFO_SUFFIX}" in present:
            outcome.outputs[job.id] = filtered(libs, [library, f"{library}{BUILD_INFO_SUFFIX}"])
        else:
            outcome.failures[job.id] = f"not in --libs: no {library} with its build-info.json (the {job.runner} job {job.id} builds it)"
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


async def build_wheels(wheels: Sequence[WheelJob], source: dagger.Directory, libs: dagger.Directory, outcome: Outcome, *,
                       source_date_epoch: str = DEFAULT_SOURCE_DATE_EPOCH, fresh: Mapping[str, str] | None = None) -> None:  # fmt: skip
    async def one(job: WheelJob) -> None:
        outcome.outputs[job.id] = await packaging.wheel(job, source, libs, source_date_epoch=source_date_epoch, fresh=fresh).sync()

    async with anyio.create_task_group() as tg:
        for job in wheels:
            tg.start_soon(collect, outcome, job.id, functools.partial(one, job))


@dataclass(frozen=True)
class AuditRun:
    """audit.md, the audit's exit code, and the container's failure when it failed before reporting."""

    report: dagger.File
    exit_code: int
    error: str = ""

    def failure(self) -> str:
        """failures.md's text for a failed audit."""
        return f"the audit step exited with {self.exit_code}: see audit.md" + (f"\n\n{self.error}" if self.error else "")


async def run_audit(image: str, source: dagger.Directory, wheels: dagger.Directory, expected: dict[str, Any],
                    fresh: Mapping[str, str] | None = None) -> AuditRun:  # fmt: skip
    """The audit over `wheels`. A failed tool install or a killed step (exit codes 128-191 raise even
    with expect=ANY) is reported in audit.md, not raised; a failure is checked by one more run with
    `rerun_env` (the engine would answer a failed run from its cache in later sessions)."""

    async def attempt(variables: Mapping[str, str] | None) -> AuditRun:
        try:
            ctr = await packaging.audit(image, source, wheels, expected, variables).sync()
            return AuditRun(await ctr.file(packaging.REPORT).sync(), await ctr.exit_code())
        except dagger.QueryError as e:
            code = (e.exit_code if isinstance(e, dagger.ExecError) else 1) or 1
            error = f"the audit container failed: {describe(e)}"
            return AuditRun(dag.file("audit.md", f"# Audit\n\n{error}\n"), code, error)

    run = await attempt(fresh)
    if run.exit_code != 0 and not fresh:
        run = await attempt(rerun_env())
    return run


def failures_md(failures: dict[str, str]) -> str:
    lines = ["# Failed jobs", ""]
    for key, text in sorted(failures.items()):
        lines += [f"## {key}", "", text, ""]
    return "\n".join(lines)


async def jobs_document(jobs: Sequence[Job], wheels: Sequence[WheelJob], outcome: Outcome, reports: Mapping[str, int | None], *,
                        version: str, source_date_epoch: str) -> dict[str, Any]:  # fmt: skip
    """jobs.json of the manifest step: every job's outcome (the host executor writes the same shape)."""
    def status(key: str) -> str:
        return "failed" if key in outcome.failures else "built" if key in outcome.outputs else "skipped"

    entries: list[dict[str, Any]] = []
    for job in jobs:
        entry: dict[str, Any] = {"id": job.id, "kind": "library", "status": status(job.id), "platform": job.platform}
        if entry["status"] == "built":
            entry["artifact"] = job.library
        elif entry["status"] == "failed":
            entry["reason"] = outcome.failures[job.id].splitlines()[0] if outcome.failures[job.id].startswith("not in --libs") else "the native step failed: see failures.md"
        entries.append(entry)
    for wheel in wheels:
        entry = {"id": wheel.id, "kind": "wheel", "status": status(wheel.id), "platform": wheel.platform}
        if entry["status"] == "built":
            names = [n for n in await outcome.outputs[wheel.id].entries() if n.endswith(".whl")]
            if names:
                entry["artifact"] = names[0]
        elif entry["status"] == "failed":
            entry["reason"] = outcome.failures[wheel.id].splitlines()[0]
        else:
            entry["reason"] = "not packed: a library of this platform failed to build"
        entries.append(entry)
    for kind in ("try", "audit"):
        code = reports.get(kind)
        if code is not None:
            report: dict[str, Any] = {"id": kind, "kind": kind, "status": "built" if code == 0 else "failed"}
            if code != 0:
                report["exit_code"] = code
            entries.append(report)
    return {"version": version, "source_date_epoch": source_date_epoch, "jobs": entries}


@dataclass(frozen=True)
class Settings:
    """How build_all runs: the images, the wheels' SOURCE_DATE_EPOCH, what is known of the tree, and
    `fresh` (see `native.container`: verify-reproducible's second build)."""

    python_image: str
    version: str
    source_date_epoch: str = DEFAULT_SOURCE_DATE_EPOCH
    tree: TreeFacts = DEFAULT_TREE
    limit: int = 1
    seed: dagger.Directory | None = None
    fresh: Mapping[str, str] | None = None


async def build_all(matrix: Matrix, jobs: Sequence[Job], wheels: Sequence[WheelJob], source: dagger.Directory, settings: Settings, *,
                    libs: dagger.Directory | None = None) -> tuple[dagger.Directory, dict[str, str]]:  # fmt: skip
    """The whole pipeline for `jobs` (built here, or taken from `libs`); returns the result Directory
    and the failures (empty on success)."""
    fresh = settings.fresh
    if libs is None:
        outcome = await build_libraries(jobs, source, python_image=settings.python_image, seed=settings.seed, fresh=fresh, limit=settings.limit)
    else:
        outcome = await libraries_from(libs, jobs)
    built = merge(outcome.outputs, [job.id for job in jobs])
    complete = [w for w in wheels if all(i in outcome.outputs for i in w.build_job_ids)]
    await build_wheels(complete, source, built, outcome, source_date_epoch=settings.source_date_epoch, fresh=fresh)
    packed = [w for w in complete if w.id in outcome.outputs]
    # the wheels as packed: the try and audit steps take this Directory, never `result`'s subfolder
    # (a Directory built here has no content digest, so a subfolder of `result` would carry tries.md
    # into the audit's key)
    packed_wheels = merge(outcome.outputs, [w.id for w in packed])
    result = dag.directory().with_directory("libs", built).with_directory("wheels", packed_wheels)
    try_exit: int | None = None
    audit_exit: int | None = None
    if packed:
        names = [name for w in packed for name in await outcome.outputs[w.id].entries() if name.endswith(".whl")]
        tried = await tries.run(matrix, source, packed_wheels, names, script=settings.tree.config.try_script, fresh=fresh, tree=settings.tree)
        result, try_exit = result.with_new_file("tries.md", tried.report), tried.exit_code
        if try_exit != 0:
            failed = [f"- `{t.wheel}`: {t.detail}" for t in tried.tries if t.status == "failed"]
            outcome.failures["try"] = "\n".join([f"the try step exited with {try_exit}: see tries.md", "", *failed])
        audited = [job for job in jobs if any(job.platform == w.platform for w in packed)]
        audit = await run_audit(settings.python_image, source, packed_wheels, expectations(matrix, audited, settings.tree), fresh)
        result, audit_exit = result.with_file("audit.md", audit.report), audit.exit_code
        if audit_exit != 0:
            outcome.failures["audit"] = audit.failure()
    for w in wheels:
        if w not in complete:
            outcome.failures.setdefault(w.id, "not packed: a library of this platform failed to build")
    if outcome.ccache:
        result = result.with_directory("ccache", merge(outcome.ccache, [job.id for job in jobs]))
    document = await jobs_document(jobs, wheels, outcome, {"try": try_exit, "audit": audit_exit},
                                   version=settings.version, source_date_epoch=settings.source_date_epoch)  # fmt: skip
    try:
        result = result.with_file("manifest.json", await packaging.manifest(settings.python_image, source, result, document, fresh).sync())
    except dagger.QueryError as e:
        outcome.failures["manifest"] = describe(e)
    summary = render_summary_md(job_results(document, outcome.failures), title="dagger call build-all", out_dir=None,
                                audit_report=await result.file("audit.md").contents() if audit_exit is not None else None)  # fmt: skip
    result = result.with_new_file("summary.md", summary)
    if outcome.failures:
        result = result.with_new_file("failures.md", failures_md(outcome.failures))
        if packed:  # the release functions refuse a wheel set that carries this marker
            result = result.with_new_file(f"wheels/{INCOMPLETE_MARKER}", incomplete_notice(sorted(outcome.failures)))
    return result, outcome.failures


def job_results(document: Mapping[str, Any], failures: Mapping[str, str]) -> list[JobResult]:
    """The jobs of a manifest's jobs.json as the results summary.md is rendered from."""
    results = []
    for job in document["jobs"]:
        text = failures.get(job["id"], "")
        tail = tuple(line for line in text.splitlines()[-TAIL_LINES:] if line.strip() and not line.startswith("```"))
        results.append(JobResult(job["id"], job["kind"], job["status"], job.get("platform"), reason=job.get("reason", ""),
                                 exit_code=job.get("exit_code"), log_tail=tail if job["status"] == "failed" else ()))  # fmt: skip
    return results


# ---- verify-reproducible ---------------------------------------------------------------------------

COMPARED = ("libs/*/*/*", "wheels/*.whl", "audit.md", "manifest.json")
"""The artifacts verify-reproducible compares (not failures.md or ccache/, which are no artifacts)."""


def fresh_env(token: str) -> dict[str, str]:
    """Variables of verify-reproducible's second build: a value never used before, so the engine runs
    every step again instead of answering from its cache, and ccache off; none changes an output."""
    return {"BNB_CACHE_BUSTER": token, "BNB_NO_CCACHE": "1"}


async def file_digests(result: dagger.Directory) -> dict[str, str]:
    """Path -> content digest (metadata such as mtimes excluded) of every compared artifact of a build-all result."""
    paths: list[str] = []
    for pattern in COMPARED:
        paths += [p for p in await result.glob(pattern) if not p.endswith("/")]
    digests: dict[str, str] = {}

    async def one(path: str) -> None:
        digests[path] = await result.file(path).digest(exclude_metadata=True)

    async with anyio.create_task_group() as tg:
        for path in sorted(set(paths)):
            tg.start_soon(one, path)
    return dict(sorted(digests.items()))


def reproducibility_report(first: dict[str, str], second: dict[str, str]) -> tuple[str, bool]:
    """(Markdown report, whether both builds gave the same artifacts with the same digests)."""
    rows = []
    counts = {"identical": 0, "different": 0, "missing": 0}
    for path in sorted(set(first) | set(second)):
        a, b = first.get(path), second.get(path)
        verdict = "identical" if a is not None and a == b else "different" if a is not None and b is not None else "missing"
        counts[verdict] += 1
        rows.append(f"| `{path}` | {a or '-'} | {b or '-'} | {verdict} |")
    same = counts["different"] == 0 and counts["missing"] == 0 and bool(first)
    lines = [
        "# Reproducibility report",
        "",
        "Two builds of the same sources; the second with the engine's cache bypassed for every step and ccache off.",
        "",
        f"Result: **{'REPRODUCIBLE' if same else 'NOT REPRODUCIBLE'}**: {counts['identical']} identical, "
        f"{counts['different']} different, {counts['missing']} in one build only.",
        "",
        "| artifact | first build | second build | result |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines), same
