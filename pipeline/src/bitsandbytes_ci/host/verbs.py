"""The host handlers of the build verbs: `Invocation -> exit code`, registered in `cli.HANDLERS`.

    build-cpu | build-cuda | build-rocm | build-xpu --out DIR
        build the selected libraries this host can build; DIR/<os>/<arch>/<library> + build-info.json
    build-wheels --out DIR [--libs LIBS] [--keep-going]
        pack one wheel per platform into DIR/wheels/, from the libraries in LIBS (built earlier with
        build-<backend> --out LIBS) or, without --libs, from the selected libraries built first
    audit-wheels --wheels WHEELS --out DIR
        audit the wheels against the plan, restricted to the libraries they hold; DIR/audit.md
    test-wheels --wheels WHEELS --out DIR
        install each wheel this host can run into a clean virtualenv and run the tree's try-script
        (win_amd64 under Wine when $BNB_WINE_PYTHON names a Windows CPython); DIR/tries.md
    build-all --out DIR [--libs LIBS] [--keep-going]
        libraries (or, with --libs, those built earlier: every planned one must be there), wheels,
        tries, audit; DIR/libs/<os>/<arch>/..., DIR/wheels/*.whl, DIR/tries.md, DIR/audit.md,
        DIR/manifest.json, DIR/failures.md (the layout of the Dagger function's result), and
        DIR/summary.md (summary.py), which is also appended to $GITHUB_STEP_SUMMARY when that is set

Wheels packed with --keep-going while jobs failed get DIR/wheels/INCOMPLETE.md, and the release verbs
refuse that folder. Progress goes to stdout (progress.py): a status line on a terminal, plain lines
elsewhere. Ctrl-C or SIGTERM stops the running steps and removes their work directories; the output
directory is only written after the jobs ran, so it never holds a partial file. build-all in which a
job failed writes nothing without --keep-going (the previous output stays, as with the Dagger
function); its output is assembled aside and switched in whole (outputs.py). --out is checked
before any job runs, and the work directories a verb uses are held until its outputs are written
(local.holding_work_dirs), so runs sharing a cache take turns.

Every verb prints a summary (built / skipped with the reason / failed with the log) and exits 1 when
a job failed. Options common to them: --source DIR (the checkout, default "."), --cache-dir DIR
(work directories and artifact cache, default $XDG_CACHE_HOME/bitsandbytes-ci, else ~/.cache/bitsandbytes-ci), --jobs N (concurrency, default 2).
"""

from __future__ import annotations

import platform
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio
from bnb_build import manifest as manifest_step
from bnb_build.version import tree_version

from ..core.errors import PipelineError
from ..core.plan import try_checks
from ..core.results import JobResult, any_failed, render_summary
from ..core.summary import append_step_summary, render_summary_md
from ..core.tree import check_tree
from .local import (
    default_cache_dir,
    DEFAULT_CONCURRENCY,
    Console,
    HostSettings,
    built_jobs,
    input_digests,
    libraries_from_dir,
    packed_wheels,
    run_audit,
    run_builds,
    run_tries,
    run_wheels,
    source_date_epoch,
    step_pythonpath,
    holding_work_dirs,
    AUDIT_JOB_ID,
    TRY_JOB_ID,
)
from .outputs import (
    WHEELS_SUBDIR,
    check_out_dir,
    mark_wheel_set,
    publish_build_all,
    publish_file,
    publish_libraries,
    publish_wheels,
    wheel_platform,
    write_text_atomic,
    writing,
)
from .input_checks import check_libs, check_sources, check_wheel_files
from .toolchains import detect_host, host_platform, step_environment

if TYPE_CHECKING:
    from .invocation import Handler, Invocation

T = TypeVar("T")

FAILED_EXIT = 1
"""Exit code of a verb when at least one job failed (the summary lists them)."""


class WheelsMissingError(PipelineError):
    """audit-wheels found no wheel to audit."""

    exit_code = 2


def host_settings(invocation: Invocation) -> HostSettings:
    options = invocation.options
    repo = check_tree(Path(options.get("source") or "."))
    if invocation.verb.startswith("build-"):  # the verbs that copy the tree's sources into jobs
        check_sources(repo, invocation.jobs, invocation.wheels)
    cache = Path(options.get("cache_dir") or default_cache_dir(invocation.env)).absolute()
    host = detect_host(invocation.env, python=sys.executable, repo=repo, platform=host_platform(platform.system(), platform.machine()))
    epoch = source_date_epoch(options.get("source_date_epoch"))
    base = step_environment(invocation.env, host, pythonpath=step_pythonpath(), source_date_epoch=epoch, zig_cache=cache / "zig")
    return HostSettings(
        repo=repo,
        cache_dir=cache,
        concurrency=int(options.get("jobs") or DEFAULT_CONCURRENCY),
        host=host,
        base_env=base,
        source_date_epoch=epoch,
        keep_going=bool(options.get("keep_going")),
        tree=invocation.tree,
    )


def _start(invocation: Invocation, settings: HostSettings) -> Console:
    console = Console(invocation.stdout)
    console.line(f"bnb-ci {invocation.verb}: {len(invocation.jobs)} planned library job(s), source {settings.repo}")
    for line in [*settings.host.describe(), f"cache: {settings.cache_dir}", f"SOURCE_DATE_EPOCH={settings.source_date_epoch}"]:
        console.line(f"  {line}")
    return console


def _run(console: Console, work: Callable[..., Awaitable[T]], *args: object) -> T:
    """anyio.run(work, *args); the console's status line is removed however it ends (an interruption too)."""
    try:
        return anyio.run(work, *args)
    except BaseException:
        console.close()
        raise


def _finish(console: Console, results: Sequence[JobResult], written: str, *, explicit: bool = False) -> int:
    """Print the summary; the exit code: 1 when a job failed, or when an `explicit` selection (the
    user asked for these jobs) built none of its libraries here."""
    console.close()
    console.line("")
    console.line(render_summary(results))
    console.line(written)
    libraries = [r for r in results if r.kind == "library"]
    if explicit and libraries and not any(r.status == "built" for r in libraries):
        console.line(f"\nnothing of the selection can be built on this host ({len(libraries)} job(s) skipped, reasons above); {DOCTOR_HINT}")
        return FAILED_EXIT
    return FAILED_EXIT if any_failed(results) else 0


DOCTOR_HINT = "`bnb-ci doctor` lists the toolkits this host has, the jobs they build, and how to install the missing ones"


def _explicit(invocation: Invocation) -> bool:
    """Whether the user asked for specific jobs: a build-<backend> verb, or any selection option."""
    selection = invocation.selection
    return invocation.verb.startswith("build-") and invocation.verb not in ("build-all", "build-wheels") or bool(
        selection.platforms or selection.versions or selection.archs or selection.backends
    )


def _out(invocation: Invocation, *, replaced: bool = False) -> Path:
    """--out, checked before any job runs (outputs.check_out_dir): not the source tree, /, or the home folder; writable."""
    home = invocation.env.get("HOME")
    source = invocation.options.get("source")
    return check_out_dir(invocation.options["out"], source=Path(source) if source is not None else None, home=Path(home) if home else None,
                         replaced=replaced)  # fmt: skip


def _held(invocation: Invocation, settings: HostSettings, console: Console, *reports: str) -> AbstractContextManager[None]:
    """The work directories this verb uses, held for the run and the writing of its outputs (local.holding_work_dirs)."""
    builds = invocation.verb.startswith("build-") and not invocation.options.get("libs")
    packs = invocation.verb in ("build-wheels", "build-all")
    ids = [*(job.id for job in invocation.jobs if builds), *(w.id for w in invocation.wheels if packs), *reports]
    return holding_work_dirs(settings, ids, console)


def build_libraries(invocation: Invocation) -> int:
    """build-cpu, build-cuda, build-rocm, build-xpu."""
    out = _out(invocation)
    settings = host_settings(invocation)
    console = _start(invocation, settings)
    with _held(invocation, settings, console):
        results = _run(console, run_builds, invocation.jobs, settings, console)
        with writing(out):
            written = publish_libraries(out, results)
    return _finish(console, results, f"libraries: {len(written)} written under {out}", explicit=_explicit(invocation))


def build_wheels(invocation: Invocation) -> int:
    out = _out(invocation)
    libs = check_libs(invocation.options["libs"]) if invocation.options.get("libs") is not None else None
    settings = host_settings(invocation)
    console = _start(invocation, settings)

    async def run() -> tuple[list[JobResult], list[JobResult]]:
        builds = libraries_from_dir(invocation.jobs, Path(libs).absolute()) if libs else await run_builds(invocation.jobs, settings, console)
        return builds, await run_wheels(invocation.wheels, builds, settings, console)

    with _held(invocation, settings, console):
        builds, wheels = _run(console, run)
        packed = [(path, p) for p, path in packed_wheels(wheels).items()]
        # a --libs folder without some planned libraries of a packed platform: those wheels are incomplete
        packed_platforms = {p for _, p in packed}
        missing = [f"{r.job_id} ({r.reason})" for r in builds if libs and r.status == "skipped" and r.platform in packed_platforms]
        with writing(out):
            if not libs:
                publish_libraries(out, builds)
            mark_wheel_set(out / WHEELS_SUBDIR, [*builds, *wheels], packed=bool(packed), keep_going=settings.keep_going, missing=missing)
            written = publish_wheels(out / WHEELS_SUBDIR, packed, invocation.matrix)
    return _finish(console, [*builds, *wheels], f"wheels: {len(written)} written to {out / WHEELS_SUBDIR}", explicit=_explicit(invocation) and not libs)


def _wheels_option(invocation: Invocation) -> tuple[Path, list[Path]]:
    """--wheels DIR and the wheels in it; an empty folder is an error that says how to get wheels."""
    wheels_dir = Path(invocation.options["wheels"]).absolute()
    found = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    if not found:
        msg = f"--wheels {wheels_dir} holds no wheel (*.whl); build them first: bnb-ci build-wheels --out DIR writes DIR/{WHEELS_SUBDIR}"
        raise WheelsMissingError(msg)
    check_wheel_files(found)
    return wheels_dir, found


def audit_wheels(invocation: Invocation) -> int:
    _, found = _wheels_option(invocation)
    out = _out(invocation)
    settings = host_settings(invocation)
    console = _start(invocation, settings)
    planned = {job.platform for job in invocation.jobs}
    wheels = {}
    for wheel in found:
        platform_id = wheel_platform(wheel.name, invocation.matrix)
        if platform_id in planned:
            wheels.setdefault(platform_id, wheel)
        else:
            console.line(f"  not audited: {wheel.name} (platform {platform_id or 'unknown'} is not selected)")
    # The audit checks each wheel against the plan for its platform: every planned library must be in it.
    held = {p: _file_names(w) for p, w in wheels.items()}
    jobs = [job for job in invocation.jobs if job.platform in held]
    for platform_id, names in sorted(held.items()):
        lacking = [job.library for job in jobs if job.platform == platform_id and job.library not in names]
        if lacking:
            console.line(f"  {wheels[platform_id].name} lacks {len(lacking)} of the {len(lacking) + sum(1 for j in jobs if j.platform == platform_id and j.library in names)} planned libraries: {', '.join(lacking)}")
    with _held(invocation, settings, console, AUDIT_JOB_ID):
        result = _run(console, run_audit, invocation.matrix, jobs, wheels, settings, console)
        written = "audit report: not written"
        if result.artifact is not None and result.artifact.is_file():
            with writing(out):
                written = f"audit report: {publish_file(result.artifact, out / 'audit.md')}"
    return _finish(console, [result], written)


def _file_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {Path(name).name for name in z.namelist()}


def build_all(invocation: Invocation) -> int:
    out = _out(invocation, replaced=True)
    settings = host_settings(invocation)
    started = time.monotonic()
    console = _start(invocation, settings)

    libs = check_libs(invocation.options["libs"]) if invocation.options.get("libs") is not None else None
    script = invocation.tree.config.try_script

    async def run() -> list[JobResult]:
        builds = libraries_from_dir(invocation.jobs, Path(libs).absolute(), missing="failed") if libs else await run_builds(invocation.jobs, settings, console)
        wheels = await run_wheels(invocation.wheels, builds, settings, console)
        packed = packed_wheels(wheels)
        tried = await run_tries(packed, script, settings, console, try_checks(invocation.matrix, list(packed), invocation.tree))
        audit = await run_audit(invocation.matrix, built_jobs(invocation.jobs, builds), packed_wheels(wheels), settings, console)
        return [*builds, *wheels, tried, audit]

    with _held(invocation, settings, console, TRY_JOB_ID, AUDIT_JOB_ID):
        results = _run(console, run)
        if any_failed(results) and not settings.keep_going:  # as the Dagger function: nothing exported on failure
            written = f"outputs: not written (a job failed); {out} keeps the previous output; --keep-going writes the outputs with failures.md"
            append_step_summary(invocation.env, render_summary_md(results, wall_s=time.monotonic() - started, sizes={}, audit_report=None, out_dir=out))
            return _finish(console, results, written, explicit=_explicit(invocation) and not libs)
        tried, audit = results[-2], results[-1]
        manifest = publish_build_all(
            out,
            wheels=[(path, p) for p, path in packed_wheels(results).items()],
            reports={"tries.md": _report(tried), "audit.md": _report(audit)},
            results=results,
            digests=input_digests(invocation.jobs, settings.repo),
            version=invocation.tree.version or tree_version(settings.repo, invocation.env, invocation.tree.package),
            source_date_epoch=settings.source_date_epoch,
            source=manifest_step.source_state(settings.repo),
            extra=lambda folder: write_summary(invocation, out, results, wall_s=time.monotonic() - started, folder=folder),
        )
    summary = out / "summary.md"
    return _finish(console, results, f"outputs: {out} (manifest: {manifest}, summary: {summary})", explicit=_explicit(invocation) and not libs)


def _report(result: JobResult) -> Path | None:
    return result.artifact if result.artifact is not None and result.artifact.is_file() else None


def test_wheels(invocation: Invocation) -> int:
    """test-wheels --wheels WHEELS --out DIR: each wheel installed and the tree's try-script run; DIR/tries.md."""
    wheels_dir, found = _wheels_option(invocation)
    out = _out(invocation)
    settings = host_settings(invocation)
    console = _start(invocation, settings)
    wheels: dict[str, Path] = {}
    for wheel in found:
        platform_id = wheel_platform(wheel.name, invocation.matrix) or wheel.name
        if platform_id in wheels:
            msg = f"--wheels {wheels_dir} holds two wheels for {platform_id} ({wheels[platform_id].name}, {wheel.name}); keep one per platform"
            raise WheelsMissingError(msg)
        wheels[platform_id] = wheel
    with _held(invocation, settings, console, TRY_JOB_ID):
        checks = try_checks(invocation.matrix, list(wheels), invocation.tree)
        result = _run(console, run_tries, wheels, invocation.tree.config.try_script, settings, console, checks)
        report = _report(result)
        with writing(out):
            written = f"try report: {publish_file(report, out / 'tries.md')}" if report is not None else "try report: not written"
    return _finish(console, [result], written)


def write_summary(invocation: Invocation, out: Path, results: Sequence[JobResult], *, wall_s: float, folder: Path | None = None) -> Path:
    """DIR/summary.md (written into `folder`, where the output is assembled, when given), also
    appended to $GITHUB_STEP_SUMMARY when the environment names that file."""
    folder = out if folder is None else folder
    sizes = {r.job_id: r.artifact.stat().st_size for r in results if r.artifact is not None and r.artifact.is_file()}
    report = folder / "audit.md"
    text = render_summary_md(
        results, wall_s=wall_s, sizes=sizes, audit_report=report.read_text(encoding="utf-8") if report.is_file() else None, out_dir=out
    )
    path = folder / "summary.md"
    write_text_atomic(path, text)
    append_step_summary(invocation.env, text)
    return path


HOST_HANDLERS: dict[str, Handler] = {
    "build-cpu": build_libraries,
    "build-cuda": build_libraries,
    "build-rocm": build_libraries,
    "build-xpu": build_libraries,
    "build-wheels": build_wheels,
    "audit-wheels": audit_wheels,
    "test-wheels": test_wheels,
    "build-all": build_all,
}
