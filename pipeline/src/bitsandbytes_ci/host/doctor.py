"""`bnb-ci doctor`: which toolkits this host has, which planned jobs they let `bnb-ci` build here, and
how to install each one that is missing.

The toolkits come from toolchains.py's detection (`detect_host`: cmake, the C++ compiler, every nvcc,
hipcc and icpx with the version it reports); which jobs they enable comes from the executor's own
decision (`toolchains.decide`), so the doctor and `bnb-ci build-*` never disagree. Besides those it
looks for the cross tools (aarch64-linux-gnu-g++, zig from the `ziglang` wheel, qemu-aarch64-static),
wine64 (which tries windows-x64 wheels; no build needs it) and the Dagger CLI and engine, which builds
every Linux container job. The C++ compiler row lists the jobs that compile with the host's compiler
($CXX, else c++; never the zig, cross gcc or oneAPI ones).

    bnb-ci doctor [--source DIR]      # DIR: the tree to build (default: the current directory)

    | toolkit | found | jobs it enables | install hint |
    |---|---|---|---|
    | nvcc 13.0 | 13.0.88 at /usr/local/cuda-13.0 (/usr/local/cuda*) | cuda130-linux-x86_64 | |
    | nvcc 12.8 | not found | (cuda128-linux-x86_64) | https://developer.nvidia.com/cuda-12-8-0-download-archive ... |

Jobs in parentheses are the ones the toolkit would enable once installed. `diagnose` is pure: the
handler detects, the tests can hand it any host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.plan import Job
from ..core.versions import sort_versions
from .local import step_pythonpath
from .toolchains import (
    HOST_EXTRA_HINT,
    HostToolchains,
    Installation,
    Runnable,
    compiler_variables,
    components_hint,
    decide,
    detect_host,
    gcc_cross_applies,
    host_platform,
    missing_cuda_components,
    run_version,
    step_environment,
)

if TYPE_CHECKING:
    from .invocation import Invocation

ENGINE_TIMEOUT_S = 20
"""How long `dagger core version` may take to reach the engine before it counts as unreachable."""
TOOL_TIMEOUT_S = 10

CUDA_HINT = "install CUDA {v} (https://developer.nvidia.com/cuda-toolkit-archive), then set CUDA_HOME or BNB_CUDA_ROOTS to its root"
ROCM_HINT = "install ROCm {v} (https://rocm.docs.amd.com/projects/install-on-linux/en/latest/), then set ROCM_PATH to its root"
ONEAPI_HINT = (
    "install the oneAPI {v} DPC++/C++ compiler (apt-get install intel-oneapi-compiler-dpcpp-cpp-{v}; "
    "https://www.intel.com/content/www/us/en/developer/tools/oneapi/base-toolkit-download.html), then source setvars.sh"
)


@dataclass(frozen=True)
class Tool:
    """A helper program found (or not) on PATH: cross compilers, emulators, the Dagger CLI."""

    name: str
    path: str | None
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Row:
    toolkit: str
    found: str  # "" when missing
    enables: tuple[str, ...]  # job ids, or a short text for non-job capabilities
    hint: str  # "" when nothing needs installing
    would_enable: bool = False  # `enables` lists what the toolkit would enable once installed


@dataclass(frozen=True)
class Extras:
    """What the doctor looks for beyond toolchains.detect_host."""

    cross_gxx: Tool
    zig: Tool
    wine: Tool
    qemu: Tool
    dagger: Tool
    engine: Tool


Probe = Callable[[Sequence[str], Mapping[str, str], float], str | None]


def run_probe(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> str | None:
    """stdout+stderr of a version query, or None when it cannot run, fails or takes too long."""
    try:
        done = subprocess.run(list(argv), env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout + done.stderr).strip() if done.returncode == 0 else None


def _first_line(text: str | None) -> str | None:
    return text.splitlines()[0].strip() if text else None


def dagger_engine(env: Mapping[str, str], *, cli: str | None) -> Tool:
    """Whether the Dagger engine answers the Dagger CLI `cli` (`dagger core version`); `detail` says why
    not. `./bnb build` asks the same to choose between Dagger and the host executor."""
    if cli is None:
        return Tool("dagger engine", None, detail="no Dagger CLI on PATH")
    try:
        done = subprocess.run([cli, "--silent", "core", "version"], env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=ENGINE_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Tool("dagger engine", None, detail=f"the Dagger engine did not answer `{cli} core version` within {ENGINE_TIMEOUT_S} s")
    except OSError as e:
        return Tool("dagger engine", None, detail=f"the Dagger CLI {cli} cannot run: {e}")
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return Tool("dagger engine", None, detail=f"the Dagger engine is not reachable (`{cli} core version`: {last[0]})")
    return Tool("dagger engine", cli, _first_line(done.stdout) or "answers")


def detect_extras(env: Mapping[str, str], *, path: str, python: str, probe: Probe = run_probe) -> Extras:
    """Look for the cross tools and Dagger on `path` (the engine is asked with a short timeout)."""

    def tool(name: str, version_args: Sequence[str]) -> Tool:
        found = shutil.which(name, path=path)
        return Tool(name, found, _first_line(probe([found, *version_args], env, TOOL_TIMEOUT_S)) if found else None)

    zig_version = _first_line(probe([python, "-m", "ziglang", "version"], env, TOOL_TIMEOUT_S))
    zig = Tool("zig", f"{python} -m ziglang" if zig_version else shutil.which("zig", path=path), zig_version)
    if zig.path and not zig.version:
        zig = Tool("zig", zig.path, _first_line(probe([zig.path, "version"], env, TOOL_TIMEOUT_S)))
    dagger = tool("dagger", ["version"])
    engine = dagger_engine(env, cli=dagger.path)
    return Extras(
        cross_gxx=tool("aarch64-linux-gnu-g++", ["--version"]),
        zig=zig,
        wine=tool("wine64", ["--version"]),
        qemu=tool("qemu-aarch64-static", ["--version"]),
        dagger=dagger,
        engine=engine,
    )


# ---- the table (pure) --------------------------------------------------------------------------


def runnable_jobs(jobs: Sequence[Job], host: HostToolchains, base: Mapping[str, str]) -> list[Job]:
    return [job for job in jobs if isinstance(decide(job, host, base), Runnable)]


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _toolkit_rows(kind: str, label: str, found: Sequence[Installation], jobs: Sequence[Job], runnable: set[str], host_platform_id: str | None,
                  key: Callable[[str], str], hint: str) -> list[Row]:  # fmt: skip
    """One row per installation found, then one per version the plan builds here that none provides."""
    family = {"cuda": "cuda", "rocm": "rocm", "oneapi": "xpu"}[kind]
    mine = [job for job in jobs if job.family == family and job.platform == host_platform_id and job.version]
    rows = []
    covered: set[str] = set()
    for inst in found:
        enabled = tuple(j.id for j in mine if j.id in runnable and key(j.version or "") == key(inst.version))
        covered.add(key(inst.version))
        rows.append(Row(f"{label} {key(inst.version)}", f"{inst.version} at {inst.root} ({inst.origin})", enabled, ""))
    for version in sort_versions({j.version for j in mine if j.version}):
        if key(version) in covered:
            continue
        covered.add(key(version))
        wanted = tuple(j.id for j in mine if key(j.version or "") == key(version))
        rows.append(Row(f"{label} {key(version)}", "", wanted, hint.format(v=key(version)), would_enable=True))
    return rows


def diagnose(jobs: Sequence[Job], host: HostToolchains, base: Mapping[str, str], extras: Extras) -> list[Row]:
    """Every row of the doctor's table, for the planned `jobs`."""
    runnable = {job.id for job in runnable_jobs(jobs, host, base)}
    here = host.platform
    # The jobs that compile with the host's C++ compiler ($CXX, else c++): not the zig, cross gcc or oneAPI ones.
    host_compiled = tuple(j.id for j in jobs if compiler_variables(j, host) and (j.id in runnable or not host.cxx))
    selected = "; ".join(c.describe() if c.path else f"{c.variable}={c.value} names no program on PATH" for c in host.compilers)
    rows = [
        Row("cmake", host.cmake or "", ("every job on this host",) if host.cmake else (), "" if host.cmake else f"{HOST_EXTRA_HINT} (or apt-get install cmake)"),
        Row("C++ compiler", f"{host.cxx or ''}{' (' + selected + ')' if selected and host.cxx else selected}", host_compiled,
            "" if host.cxx else "apt-get install g++ (or set CXX, e.g. CXX=g++-11)", would_enable=not host.cxx),
        Row("ninja", host.ninja or "", ("faster builds (optional)",), "" if host.ninja else HOST_EXTRA_HINT),
        Row("ccache", host.ccache or "", ("faster rebuilds (optional)",), "" if host.ccache else "apt-get install ccache"),
    ]
    rows += _toolkit_rows("cuda", "nvcc", host.cuda, jobs, runnable, here, _major_minor, CUDA_HINT)
    rows += _cuda_component_rows(jobs, host, runnable)
    rows += _toolkit_rows("rocm", "hipcc", host.rocm, jobs, runnable, here, _major_minor, ROCM_HINT)
    rows += _toolkit_rows("oneapi", "icpx", host.oneapi, jobs, runnable, here, lambda v: v.split(".")[0], ONEAPI_HINT)

    def elsewhere(*platforms: str) -> tuple[str, ...]:
        return tuple(j.id for j in jobs if j.platform in platforms and j.platform != here and j.id in runnable)

    aarch64 = elsewhere("linux-aarch64")
    zig_jobs = tuple(j.id for j in jobs if j.runner == "cross" and j.id in runnable)
    gcc_cross = tuple(j.id for j in jobs if gcc_cross_applies(j, host) and j.id in runnable)
    windows_wheels = ("the try of windows-x64 wheels (with BNB_WINE_PYTHON)",) if any(j.platform == "windows-x64" for j in jobs) else ()
    for tool, purpose, enabled, hint in (
        (extras.cross_gxx, "cross, linux-aarch64", gcc_cross, "apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross"),
        (extras.zig, "cross: CPU libraries of other platforms", zig_jobs, HOST_EXTRA_HINT),
        (extras.wine, "tries windows-x64 wheels; no build needs it", windows_wheels, "apt-get install wine64"),
        (extras.qemu, "runs linux-aarch64 binaries", aarch64, "apt-get install qemu-user-static"),
    ):
        found = f"{tool.version or 'version unknown'} at {tool.path}" if tool.path else ""
        rows.append(Row(f"{tool.name} ({purpose})", found, enabled, "" if tool.path else hint, would_enable=not tool.path))
    containers = tuple(j.id for j in jobs if j.runner == "container")
    summary = (f"{len(containers)} Linux container job(s) through `dagger call build-all`",) if containers else ()
    rows.append(Row("dagger CLI", f"{extras.dagger.version or 'version unknown'} at {extras.dagger.path}" if extras.dagger.path else "",
                    summary, "" if extras.dagger.path else "curl -fsSL https://dl.dagger.io/dagger/install.sh | BIN_DIR=$HOME/.local/bin sh (https://docs.dagger.io/install)",
                    would_enable=not extras.dagger.path))  # fmt: skip
    engine_hint = "" if extras.engine.path else (
        f"{extras.engine.detail}; start Docker (the engine runs as a container) or point _EXPERIMENTAL_DAGGER_RUNNER_HOST at an engine"
    )
    rows.append(Row("dagger engine", f"reachable ({extras.engine.version})" if extras.engine.path else "", summary, engine_hint,
                    would_enable=not extras.engine.path))  # fmt: skip
    return rows


def _cuda_component_rows(jobs: Sequence[Job], host: HostToolchains, runnable: set[str]) -> list[Row]:
    """What the tree's CUDA library links beyond the runtime (CUDA::cublas, ...), per CUDA version
    found: the roots of that version that hold it (one is enough: the build takes the first that
    holds every component, e.g. one BNB_CUDA_ROOTS names), or none, and the jobs it decides."""
    rows = []
    for version in dict.fromkeys(inst.major_minor for inst in host.cuda):
        roots = [inst.root for inst in host.cuda if inst.major_minor == version]
        mine = [j for j in jobs if j.family == "cuda" and j.platform == host.platform and _major_minor(j.version or "") == version]
        components = sorted({c for j in mine for c in j.toolkit_components})
        for component in components:
            enables = tuple(j.id for j in mine if component in j.toolkit_components)
            holding = [root for root in roots if not missing_cuda_components(root, [component])]
            if not holding:
                rows.append(Row(f"{component} (CUDA {version}, the tree links CUDA::{component})", "", enables, components_hint([component]), would_enable=True))
            else:
                lacking = [root for root in roots if root not in holding]
                found = f"in {', '.join(map(str, holding))}" + (f" (not in {', '.join(map(str, lacking))})" if lacking else "")
                rows.append(Row(f"{component} (CUDA {version})", found, tuple(j for j in enables if j in runnable), ""))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(rows: Sequence[Row], jobs: Sequence[Job], runnable: Sequence[Job], host: HostToolchains) -> str:
    lines = [
        f"host platform: {host.platform or 'unknown'}",
        "",
        "| toolkit | found | jobs it enables | install hint |",
        "|---|---|---|---|",
    ]
    for row in rows:
        enables = ", ".join(row.enables) or "-"
        if row.would_enable and row.enables:
            enables = f"({enables})"
        lines.append(f"| {_cell(row.toolkit)} | {_cell(row.found or 'not found')} | {_cell(enables)} | {_cell(row.hint)} |")
    lines += [
        "",
        "Jobs in parentheses are what a missing toolkit would enable.",
        f"bnb-ci can build {len(runnable)} of the {len(jobs)} planned job(s) on this host: {', '.join(j.id for j in runnable) or 'none'}",
    ]
    return "\n".join(lines) + "\n"


def detect(env: Mapping[str, str]) -> tuple[HostToolchains, dict[str, str]]:
    """This host's toolkits and the base environment of its steps (what `decide` needs)."""
    import platform as platform_module

    host = detect_host(env, python=sys.executable, repo=Path(os.getcwd()), platform=host_platform(platform_module.system(), platform_module.machine()))
    return host, step_environment(env, host, pythonpath=step_pythonpath(), source_date_epoch="0")


def compiler_version(job: Job, decision: Runnable, host: HostToolchains, env: Mapping[str, str]) -> str | None:
    """The first line of `--version` of the C++ compiler a runnable job builds with: zig's clang for the
    zig toolchain, else the compiler the environment's CXX selects or the host's c++ (a GPU job's nvcc
    or hipcc names its version already); None when it does not answer."""
    if job.toolchain == "zig":
        argv = [sys.executable, "-m", "ziglang", "c++", "--version"]
    elif job.backend == "cpu" and host.cxx:
        argv = [host.cxx, "--version"]
    else:
        return None
    answer = (run_version(argv, decision.env) or "").strip()
    return answer.splitlines()[0] if answer else None


def verdicts(jobs: Sequence[Job], host: HostToolchains, base: Mapping[str, str]) -> str:
    """One line per job: whether `bnb-ci` can build it on this host, with which compiler (and its
    version), and why not (`plan --here`)."""
    width = max((len(job.id) for job in jobs), default=0)
    lines = [f"buildable here ({host.platform or 'unknown platform'}):"]
    for job in jobs:
        decision = decide(job, host, base)
        if isinstance(decision, Runnable):
            version = compiler_version(job, decision, host, base)
            known = not version or version in decision.toolchain  # a CXX=... selection names it already
            verdict = f"yes ({decision.toolchain}{'' if known else f'; {version}'})"
        else:
            verdict = f"no: {decision.reason}"
        lines.append(f"  {job.id.ljust(width)}  {verdict}")
    return "\n".join(lines) + "\n"


def run_doctor(invocation: Invocation) -> int:
    """The `doctor` verb: detect, print the table; always exit 0 (it reports, it does not judge)."""
    env = invocation.env
    python = sys.executable
    host, base = detect(env)
    extras = detect_extras(env, path=host.path, python=python)
    rows = diagnose(invocation.jobs, host, base, extras)
    invocation.stdout.write(render(rows, invocation.jobs, runnable_jobs(invocation.jobs, host, base), host))
    invocation.stdout.flush()
    return 0
