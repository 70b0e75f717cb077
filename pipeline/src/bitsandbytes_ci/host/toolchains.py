"""What this host can build, and the environment each job's step runs with.

Glossary
- host: the machine running `bnb-ci`; its platform id (`linux-x86_64`, ...) comes from `host_platform`.
- installation: a toolkit found on the host: a CUDA root with its nvcc, a ROCm root with its hipcc
  (or Debian's packaged ROCm in /usr), a oneAPI compiler with its icpx. Each carries the version its
  compiler reports.
- decision: per job, either `Runnable` (the full environment to run its step with, and a line naming
  the toolchain) or `Skip` (a reason naming what is missing, and what was found instead).

Detection (`detect_host`) looks at the environment it is given and at the usual install locations,
and runs `<compiler> --version` once per installation (the queries at the same time, each answer
memoised for the process). Everything after it is pure: `decide(job,
host, base)` gives the same answer for the same inputs, and `step_environment` builds the base
environment every step gets (the interpreter running bnb-ci first on PATH, so `python3` has the
step tools; `bnb_build` importable through PYTHONPATH; SOURCE_DATE_EPOCH).

Worked example, on a Linux x86_64 machine with nvcc 13.0 in /usr/local/cuda:

    host = detect_host(env, python=sys.executable, repo=repo)
    decide(cuda130_job, host, base)   # Runnable(env={... "CUDACXX": "/usr/local/cuda/bin/nvcc", ...})
    decide(cuda128_job, host, base)   # Skip("no nvcc 12.8 on this host (found: 13.0 at /usr/local/cuda)")
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bnb_build import native as bnb_native

from ..core.plan import Job
from .install_toolkit import CUDA_WHEELS_DEFAULT_PREFIX, CUDA_WHEELS_ROOT

PIPELINE_CMAKE_DIR = bnb_native.CMAKE_DIR
"""The pipeline's own CMake files (toolchain files, project.cmake), beside the step programs."""

Kind = Literal["cuda", "rocm", "oneapi"]

CUDA_ROOTS_ENV = "BNB_CUDA_ROOTS"
"""os.pathsep-separated CUDA roots (each holding bin/nvcc) to consider besides the usual places."""

CUDA_WHEELS_PREFIX = f"{CUDA_WHEELS_DEFAULT_PREFIX}/{CUDA_WHEELS_ROOT.as_posix()}"
"""Where `bnb-ci install-cuda-wheels` assembles a CUDA 13 toolkit from PyPI wheels by default (relative to the tree)."""

DEBIAN_ROCM_TOOLCHAIN = str(PIPELINE_CMAKE_DIR / "debian-rocm.cmake")
GCC_CROSS_TOOLCHAIN = str(PIPELINE_CMAKE_DIR / "gcc-cross.cmake")
"""The pipeline's CMake toolchain file for Debian's cross gcc (BNB_GCC_CROSS_TRIPLE names the target)."""

GCC_CROSS_TARGETS = {"linux-aarch64": ("aarch64-linux-gnu", "arm64"), "linux-x86_64": ("x86_64-linux-gnu", "amd64")}
"""Linux platform -> (the cross gcc's triple, Debian's architecture name): gcc jobs (OpenMP trees' CPU
libraries) of another Linux architecture build with <triple>-g++ and the sysroot in /usr/<triple>."""
GCC_CROSS_SYSROOT = Path("/usr")
"""The pipeline's CMake toolchain file for Debian's ROCm packages (it ships with the step programs)."""

HOST_EXTRA_HINT = "install the pipeline with its host extra, e.g. pip install './pipeline[host]' (the step tools at their pinned versions)"
"""What brings the tools the steps run (cmake, ninja, ziglang, ...) where a plain install lacks them."""

CUDA_COMPONENT_FILES = {
    "cublas": ("cublas_v2.h", "cublas"),
    "cublasLt": ("cublasLt.h", "cublasLt"),
    "cusparse": ("cusparse.h", "cusparse"),
    "curand": ("curand.h", "curand"),
    "cufft": ("cufft.h", "cufft"),
    "cusolver": ("cusolverDn.h", "cusolver"),
    "nvrtc": ("nvrtc.h", "nvrtc"),
}
"""A CUDA:: target -> (its header, its library's name): what a toolkit must hold to link it. The
files: lib<name>.so* on Linux (lib/, lib64/); <name>.lib (lib/x64/) and <name>64_*.dll (bin/) on Windows."""
CUBLAS_WHEELS_HINT = "bnb-ci install-cuda-wheels --with-cublas --prefix PREFIX (NVIDIA's nvidia-cublas wheel from PyPI), then BNB_CUDA_ROOTS=PREFIX/nvidia/cu13"
COMPONENT_WHEELS = {
    "cusparse": "nvidia-cusparse nvidia-nvjitlink", "curand": "nvidia-curand", "cufft": "nvidia-cufft",
    "cusolver": "nvidia-cusolver", "nvrtc": "nvidia-cuda-nvrtc",
}  # fmt: skip
"""CUDA:: targets other than cuBLAS -> NVIDIA's PyPI wheels that hold them for CUDA 13 (cuSPARSE needs nvJitLink to load)."""


def components_hint(components: Sequence[str]) -> str:
    """How to add the CUDA libraries `components` to a toolkit: the cuBLAS route for cublas/cublasLt,
    NVIDIA's wheel of each other one (never the cuBLAS route for a library it does not bring)."""
    hints = []
    if any(c in ("cublas", "cublasLt") for c in components):
        hints.append(CUBLAS_WHEELS_HINT)
    others = [COMPONENT_WHEELS.get(c, f"the {c} library of the CUDA toolkit") for c in components if c not in ("cublas", "cublasLt")]
    if others:
        hints.append(f"python3 -m pip install --target PREFIX {' '.join(others)} (NVIDIA's wheels from PyPI), then BNB_CUDA_ROOTS=PREFIX/nvidia/cu13")
    return "; ".join(hints)

OWNED_VARIABLES = (
    "CUDACXX", "CUDAToolkit_ROOT", "CUDA_PATH", "HIP_PLATFORM", "ROCM_PATH", "CMAKE_TOOLCHAIN_FILE", "BNB_GCC_CROSS_TRIPLE",
    "PYTHONPATH", "PYTHONHOME", "SOURCE_DATE_EPOCH",
)  # fmt: skip
"""Variables the executor decides per job; inherited values are dropped so they cannot pick another toolkit."""

ZIG_CACHE_VARIABLE = "ZIG_GLOBAL_CACHE_DIR"
"""zig's global cache (libc/libc++ per target, minutes to build once): the environment's, else <cache dir>/zig."""

OS_TITLE = {"linux": "Linux", "windows": "Windows", "macos": "macOS"}

_HOST_PLATFORMS = {
    ("linux", "x86_64"): "linux-x86_64",
    ("linux", "amd64"): "linux-x86_64",
    ("linux", "aarch64"): "linux-aarch64",
    ("linux", "arm64"): "linux-aarch64",
    ("darwin", "arm64"): "macos-arm64",
    ("windows", "amd64"): "windows-x64",
    ("windows", "x86_64"): "windows-x64",
    ("windows", "arm64"): "windows-arm64",
}
_CXX_NAMES = ("c++", "g++", "clang++")

COMPILER_VARIABLES = bnb_native.COMPILER_VARIABLES
"""The host compilers a build takes from the environment, as CMake reads them: CC (C), CXX (C++) and
CUDAHOSTCXX (nvcc's host compiler). A name on PATH or a path; e.g. CXX=g++-11."""
_VERSION_TIMEOUT_S = 60


@dataclass(frozen=True)
class Installation:
    """A toolkit found on the host."""

    kind: Kind
    version: str  # what its compiler reports: "13.0.88", "5.2.3", "2025.1.0"
    root: Path  # CUDAToolkit_ROOT, ROCM_PATH, or the oneAPI compiler root
    compiler: Path  # nvcc, hipcc or icpx
    origin: str  # where it was found, for messages: "$CUDA_HOME", "PATH", "/usr/local/cuda*", ...
    layout: Literal["standard", "debian"] = "standard"

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def describe(self) -> str:
        compiler = {"cuda": "nvcc", "rocm": "hipcc", "oneapi": "icpx"}[self.kind]
        return f"{compiler} {self.version} at {self.root} ({self.origin})"


@dataclass(frozen=True)
class SelectedCompiler:
    """A compiler the environment selects (CC=..., CXX=..., CUDAHOSTCXX=...)."""

    variable: str
    value: str  # as given: "g++-11", "/usr/bin/clang++-15"
    path: str | None  # the program it names on PATH; None when there is none
    version: str  # the first line of `<path> --version` ("" when it does not answer)

    def describe(self) -> str:
        return f"{self.variable}={self.value} ({self.path}: {self.version or 'version unknown'})"


@dataclass(frozen=True)
class HostToolchains:
    """Everything detection found; `decide` reads only this."""

    platform: str | None
    python_dir: Path
    path: str  # the PATH that was searched
    cmake: str | None = None
    ninja: str | None = None
    ccache: str | None = None
    cxx: str | None = None
    cuda: tuple[Installation, ...] = ()
    rocm: tuple[Installation, ...] = ()
    oneapi: tuple[Installation, ...] = ()
    zig: str | None = None  # `python3 -m ziglang version` of the interpreter running the steps (cross jobs)
    cross_gxx: Mapping[str, str] = field(default_factory=dict)  # platform -> <triple>-g++ found on PATH (GCC_CROSS_TARGETS)
    compilers: tuple[SelectedCompiler, ...] = ()  # what CC, CXX and CUDAHOSTCXX select (COMPILER_VARIABLES), where set

    def describe(self) -> list[str]:
        """One line per tool, for the start of a run."""
        lines = [f"host platform: {self.platform or 'unknown'}", f"python for steps: {self.python_dir}"]
        for name in ("cmake", "ninja", "ccache", "cxx"):
            lines.append(f"{name}: {getattr(self, name) or 'not found'}")
        for kind, found in (("CUDA", self.cuda), ("ROCm", self.rocm), ("oneAPI", self.oneapi)):
            lines.append(f"{kind}: {', '.join(i.describe() for i in found) or 'none'}")
        lines.append(f"zig (cross): {'ziglang ' + self.zig if self.zig else 'not installed'}")
        lines.append(f"cross gcc: {', '.join(f'{p}: {gxx}' for p, gxx in sorted(self.cross_gxx.items())) or 'none'}")
        lines += [f"selected compiler: {c.describe()}" for c in self.compilers]
        return lines


@dataclass(frozen=True)
class Runnable:
    env: Mapping[str, str] = field(repr=False)
    toolchain: str  # e.g. "nvcc 13.0.88 at /usr/local/cuda", for logs and the summary
    changes: Mapping[str, str] = field(default_factory=dict)  # the variables set for this job, for the log


@dataclass(frozen=True)
class Skip:
    reason: str


Decision = Runnable | Skip

VersionProbe = Callable[[Sequence[str], Mapping[str, str]], str | None]


# ---- host platform ----------------------------------------------------------------------------


def host_platform(system: str, machine: str) -> str | None:
    """The platform id of a host from `platform.system()` and `platform.machine()`; None if unknown."""
    return _HOST_PLATFORMS.get((system.lower(), machine.lower()))


# ---- version parsing (pure) -------------------------------------------------------------------


def parse_nvcc_version(text: str) -> str | None:
    """`nvcc --version` -> "13.0.88" (the V number), or "13.0" when only the release is printed."""
    m = re.search(r"\bV(\d+\.\d+\.\d+)", text) or re.search(r"release (\d+\.\d+)", text)
    return m.group(1) if m else None


def parse_rocm_version(text: str) -> str | None:
    """A ROCm/Debian package version ("6.4.1-83", "5.2.3-8") -> "6.4.1"."""
    m = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def parse_hip_version_header(text: str) -> str | None:
    """hip/hip_version.h -> "5.2" (major.minor; its patch number is a build number, not the release)."""
    major = re.search(r"#define HIP_VERSION_MAJOR (\d+)", text)
    minor = re.search(r"#define HIP_VERSION_MINOR (\d+)", text)
    return f"{major.group(1)}.{minor.group(1)}" if major and minor else None


def parse_icpx_version(text: str) -> str | None:
    """`icpx --version` ("Intel(R) oneAPI DPC++/C++ Compiler 2025.1.0 (2025.1.0.20250317)") -> "2025.1.0"."""
    m = re.search(r"Compiler (\d{4}(?:\.\d+)*)", text)
    return m.group(1) if m else None


def parse_zig_version(text: str) -> str | None:
    """`python3 -m ziglang version` -> "0.17.1"."""
    m = re.match(r"\s*(\d+\.\d+\.\d+\S*)", text)
    return m.group(1) if m else None


# ---- detection --------------------------------------------------------------------------------


_VERSION_ANSWERS: dict[tuple[tuple[str, ...], frozenset[tuple[str, str]]], str | None] = {}
"""run_version's answers in this process, by command line and environment (a tool is asked once)."""


def run_version(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Run a version query; its stdout+stderr, or None when it cannot run or fails. Memoised per
    process (same command line and environment: the same answer)."""
    key = (tuple(argv), frozenset(env.items()))
    if key not in _VERSION_ANSWERS:
        _VERSION_ANSWERS[key] = _run_version(argv, env)
    return _VERSION_ANSWERS[key]


def _run_version(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    try:
        done = subprocess.run(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=_VERSION_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout + done.stderr if done.returncode == 0 else None


def detect_host(
    env: Mapping[str, str],
    *,
    python: str,
    repo: Path,
    platform: str | None,
    probe: VersionProbe = run_version,
) -> HostToolchains:
    """Find the tools and toolkits of this host. `python` is the interpreter that runs the steps."""
    python_dir = Path(python).parent
    path = os.pathsep.join([str(python_dir), env.get("PATH", os.defpath)])
    which = _which_in(path)
    selected = {var: (env[var], which(env[var])) for var in COMPILER_VARIABLES if env.get(var, "").strip()}
    cxx = selected["CXX"][1] if "CXX" in selected else next((found for name in _CXX_NAMES if (found := which(name))), None)
    zig_argv = [python, "-m", "ziglang", "version"]
    # The version queries are independent: find which ones detection asks (a dry pass answering
    # None), run them at the same time, then detect with their answers.
    asked: list[tuple[str, ...]] = [tuple(zig_argv), *((found, "--version") for _, found in selected.values() if found)]

    def record(argv: Sequence[str], _env: Mapping[str, str]) -> str | None:
        asked.append(tuple(argv))
        return None

    for detect in (lambda p: _detect_cuda(env, repo, which, p), lambda p: _detect_rocm(env, which, p), lambda p: _detect_oneapi(env, which, p)):
        for _ in detect(record):
            pass
    probe = _answered(probe, asked, env)
    return HostToolchains(
        platform=platform,
        python_dir=python_dir,
        path=path,
        cmake=which("cmake"),
        ninja=which("ninja"),
        ccache=which("ccache"),
        cxx=cxx,
        cuda=tuple(_detect_cuda(env, repo, which, probe)),
        rocm=tuple(_detect_rocm(env, which, probe)),
        oneapi=tuple(_detect_oneapi(env, which, probe)),
        zig=parse_zig_version(probe(zig_argv, env) or ""),
        cross_gxx={p: found for p, (triple, _) in GCC_CROSS_TARGETS.items() if p != platform and (found := which(f"{triple}-g++"))},
        compilers=tuple(
            SelectedCompiler(var, value, found, ((probe([found, "--version"], env) or "").strip().splitlines() or [""])[0] if found else "")
            for var, (value, found) in selected.items()
        ),
    )


def _answered(probe: VersionProbe, asked: Sequence[tuple[str, ...]], env: Mapping[str, str]) -> VersionProbe:
    """`probe`, with the answers to `asked` (for `env`) obtained concurrently up front."""
    unique = list(dict.fromkeys(asked))
    if len(unique) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(unique))) as pool:
            answers = dict(zip(unique, pool.map(lambda argv: probe(argv, env), unique)))
    else:
        answers = {argv: probe(argv, env) for argv in unique}

    def answered(argv: Sequence[str], probe_env: Mapping[str, str]) -> str | None:
        key = tuple(argv)
        if probe_env is env and key in answers:
            return answers[key]
        return probe(argv, probe_env)

    return answered


def _which_in(path: str) -> Callable[[str], str | None]:
    return lambda name: shutil.which(name, path=path)


def cuda_root_candidates(env: Mapping[str, str], repo: Path, nvcc_on_path: str | None) -> list[tuple[Path, str]]:
    """(root, origin) in the order they are preferred; duplicates and invalid roots are removed later."""
    candidates: list[tuple[Path, str]] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            candidates.append((Path(env[var]), f"${var}"))
    candidates += [(Path(p), f"${CUDA_ROOTS_ENV}") for p in env.get(CUDA_ROOTS_ENV, "").split(os.pathsep) if p]
    if nvcc_on_path:
        candidates.append((Path(nvcc_on_path).resolve().parent.parent, "PATH"))
    candidates.append((Path("/usr/local/cuda"), "/usr/local/cuda*"))
    candidates += [(Path(p), "/usr/local/cuda*") for p in sorted(glob.glob("/usr/local/cuda-*"))]
    candidates.append((repo / CUDA_WHEELS_PREFIX, "bnb-ci install-cuda-wheels"))
    return candidates


def _nvcc(root: Path) -> Path:
    """<root>/bin/nvcc, or nvcc.exe where that is what the toolkit has (Windows)."""
    exe = root / "bin" / "nvcc.exe"
    return exe if exe.is_file() else root / "bin" / "nvcc"


def _is_cuda_root(root: Path) -> bool:
    """bin/nvcc plus the runtime headers: a wrapper script's folder (e.g. /usr/local) is not a root."""
    nvcc = _nvcc(root)
    return nvcc.is_file() and os.access(nvcc, os.X_OK) and (root / "include" / "cuda_runtime.h").is_file()


def _detect_cuda(env: Mapping[str, str], repo: Path, which: Callable[[str], str | None], probe: VersionProbe) -> Iterable[Installation]:
    seen: set[Path] = set()
    for root, origin in cuda_root_candidates(env, repo, which("nvcc")):
        if not _is_cuda_root(root) or root.resolve() in seen:
            continue
        seen.add(root.resolve())
        nvcc = _nvcc(root)
        version = parse_nvcc_version(probe([str(nvcc), "--version"], env) or "")
        if version:
            yield Installation("cuda", version, root, nvcc, origin)


def _detect_rocm(env: Mapping[str, str], which: Callable[[str], str | None], probe: VersionProbe) -> Iterable[Installation]:
    roots = [(Path(env["ROCM_PATH"]), "$ROCM_PATH")] if env.get("ROCM_PATH") else []
    roots += [(Path(p), "/opt/rocm*") for p in ["/opt/rocm", *sorted(glob.glob("/opt/rocm-*"))]]
    seen: set[Path] = set()
    for root, origin in roots:
        # Windows' ROCm SDK has hipcc.exe (or hipcc.bat)
        hipcc = next((root / "bin" / name for name in ("hipcc", "hipcc.exe", "hipcc.bat") if (root / "bin" / name).is_file()), root / "bin" / "hipcc")
        if not hipcc.is_file() or root.resolve() in seen:
            continue
        seen.add(root.resolve())
        version = _rocm_root_version(root)
        if version:
            yield Installation("rocm", version, root, hipcc, origin)
    # Debian's packages (hipcc, libamdhip64-dev) put ROCm in /usr.
    hipcc_path = which("hipcc")
    if hipcc_path and Path(hipcc_path).resolve().parent == Path("/usr/bin") and Path("/usr") not in seen:
        version = parse_rocm_version(probe(["dpkg-query", "-W", "-f=${Version}", "hipcc"], env) or "")
        header = Path("/usr/include/hip/hip_version.h")
        if version is None and header.is_file():
            version = parse_hip_version_header(header.read_text(errors="replace"))
        if version:
            yield Installation("rocm", version, Path("/usr"), Path(hipcc_path), "Debian packages", layout="debian")


def _rocm_root_version(root: Path) -> str | None:
    info = root / ".info" / "version"
    if info.is_file():
        return parse_rocm_version(info.read_text(errors="replace"))
    header = root / "include" / "hip" / "hip_version.h"
    return parse_hip_version_header(header.read_text(errors="replace")) if header.is_file() else None


def _detect_oneapi(env: Mapping[str, str], which: Callable[[str], str | None], probe: VersionProbe) -> Iterable[Installation]:
    candidates = [(Path(p), "PATH") for p in [which("icpx"), which("icx") if os.name == "nt" else None] if p]  # Windows: icx
    oneapi_root = env.get("ONEAPI_ROOT", "/opt/intel/oneapi")
    candidates += [(Path(p), "oneAPI install") for p in sorted(glob.glob(f"{oneapi_root}/compiler/*/bin/icpx"))]
    seen: set[Path] = set()
    for icpx, origin in candidates:
        if icpx.resolve() in seen:
            continue
        seen.add(icpx.resolve())
        version = parse_icpx_version(probe([str(icpx), "--version"], env) or "")
        if version:
            yield Installation("oneapi", version, icpx.parent.parent, icpx, origin)


# ---- environments (pure) ----------------------------------------------------------------------


def step_environment(
    env: Mapping[str, str], host: HostToolchains, *, pythonpath: Path, source_date_epoch: str, zig_cache: Path | None = None
) -> dict[str, str]:
    """The environment every step starts from: `env` without the variables the executor owns, the
    interpreter running bnb-ci first on PATH, `bnb_build` importable, SOURCE_DATE_EPOCH set, and
    ZIG_GLOBAL_CACHE_DIR (kept from `env`, else `zig_cache`) so zig builds each target's libc once."""
    result = {k: v for k, v in env.items() if k not in OWNED_VARIABLES}
    result["PATH"] = host.path
    result["PYTHONPATH"] = str(pythonpath)
    result["SOURCE_DATE_EPOCH"] = source_date_epoch
    if zig_cache is not None and not result.get(ZIG_CACHE_VARIABLE):
        result[ZIG_CACHE_VARIABLE] = str(zig_cache)
    return result


def decide(job: Job, host: HostToolchains, base: Mapping[str, str]) -> Decision:
    """Whether this host can run `job`, and with which environment (`base` from `step_environment`)."""
    reason = platform_skip(job, host)
    if reason is None and host.cmake is None:
        reason = f"no cmake on PATH ({host.path}); {HOST_EXTRA_HINT}, or put one on PATH"
    if reason is None:
        reason = compiler_skip(job, host)
    if reason is None and host.cxx is None and job.family != "xpu" and job.runner != "cross":
        reason = f"no C++ compiler ({', '.join(_CXX_NAMES)} or $CXX) on PATH ({host.path})"
    if reason is not None:
        return Skip(reason)
    if gcc_cross_applies(job, host):
        return _toolchain_file_compilers(_gcc_cross(job, host, base))
    if job.runner == "cross":
        return _toolchain_file_compilers(_cross(job, host, base))
    if job.family == "cpu":
        return with_selected_compilers(job, host, Runnable(dict(base), f"cxx {host.cxx}"))
    if job.family == "cuda":
        return with_selected_compilers(job, host, _cuda(job, host, base))
    if job.family == "rocm":
        return with_selected_compilers(job, host, _rocm(job, host, base))
    return _oneapi(job, host, base)


def compiler_variables(job: Job, host: HostToolchains) -> tuple[str, ...]:
    """The COMPILER_VARIABLES a job's build reads: the host-compiler jobs (CPU with the host's compiler,
    CUDA, ROCm) read CC and CXX, a CUDA job CUDAHOSTCXX too; a zig or cross gcc job gets its compilers
    from its toolchain file, an XPU job uses oneAPI's."""
    if job.runner == "cross" or gcc_cross_applies(job, host) or job.family not in ("cpu", "cuda", "rocm"):
        return ()
    return COMPILER_VARIABLES if job.family == "cuda" else tuple(v for v in COMPILER_VARIABLES if v != "CUDAHOSTCXX")


def compiler_skip(job: Job, host: HostToolchains) -> str | None:
    """Why a compiler the environment selects for `job` cannot be used (None when it can)."""
    wanted = compiler_variables(job, host)
    for chosen in host.compilers:
        if chosen.variable in wanted and chosen.path is None:
            return (
                f"{chosen.variable}={chosen.value!r} names no program on PATH ({host.path}); set {chosen.variable} to a compiler's "
                f"name on PATH or its path (e.g. {chosen.variable}={'g++-11' if chosen.variable != 'CC' else 'gcc-11'}), or unset it"
            )
    return None


def _toolchain_file_compilers(decision: Decision) -> Decision:
    """A job whose toolchain file names its compilers: without COMPILER_VARIABLES, so they neither
    reach its build nor its keys."""
    if not isinstance(decision, Runnable):
        return decision
    return Runnable({k: v for k, v in decision.env.items() if k not in COMPILER_VARIABLES}, decision.toolchain, decision.changes)


def with_selected_compilers(job: Job, host: HostToolchains, decision: Decision) -> Decision:
    """`decision` with the compilers the environment selects for `job`: set (as the programs found) for
    the step, and named with their versions in the toolchain line (so in the job's cache key)."""
    if not isinstance(decision, Runnable):
        return decision
    chosen = [c for c in host.compilers if c.variable in compiler_variables(job, host) and c.path]
    if not chosen:
        return decision
    changes = {**decision.changes, **{c.variable: c.path for c in chosen if c.path}}
    toolchain = f"{decision.toolchain}; {', '.join(c.describe() for c in chosen)}"
    return Runnable({**decision.env, **changes}, toolchain, changes)


def platform_skip(job: Job, host: HostToolchains) -> str | None:
    """Why a job of another platform cannot run here (None when it can)."""
    if job.runner == "cross":
        return cross_skip(job, host)
    if job.platform == host.platform:
        return None
    if gcc_cross_applies(job, host):
        return gcc_cross_skip(job, host)
    if job.runner == "native-runner":
        return f"native-runner job for {job.platform}: needs a {OS_TITLE.get(job.os, job.os)} runner"
    return (
        f"{job.platform} job: needs a {OS_TITLE.get(job.os, job.os)} {job.arch} host or a cross toolchain, "
        f"and this host is {host.platform or 'of an unknown platform'}"
    )


def cross_skip(job: Job, host: HostToolchains) -> str | None:
    """Why this host cannot run a cross job (None when it can): the toolchain's tool is missing."""
    if job.toolchain != "zig":
        return f"{job.id}: unknown cross toolchain {job.toolchain!r}"
    if host.zig is None:
        return (
            f"cross job for {job.platform}: needs zig for the Python running bnb-ci "
            f"({host.python_dir}): {HOST_EXTRA_HINT}"
        )
    return None


def gcc_cross_applies(job: Job, host: HostToolchains) -> bool:
    """Whether `job` is a gcc job (an OpenMP tree's Linux CPU library, planned for its platform's image)
    of another Linux architecture than this Linux host's: Debian's cross gcc can build it here."""
    return (job.family == "cpu" and job.toolchain == "gcc" and job.os == "linux" and job.platform in GCC_CROSS_TARGETS
            and host.platform in GCC_CROSS_TARGETS and job.platform != host.platform)  # fmt: skip


def gcc_cross_skip(job: Job, host: HostToolchains) -> str | None:
    """Why the cross gcc cannot build `job` here (None when it can): the compiler or the sysroot is missing."""
    triple, debian_arch = GCC_CROSS_TARGETS[job.platform]
    packages = f"apt-get install g++-{triple} libc6-dev-{debian_arch}-cross"
    if job.platform not in host.cross_gxx:
        return (
            f"{job.platform} job (gcc, the tree uses OpenMP): needs a Linux {job.arch} host, the Dagger engine, "
            f"or the cross gcc {triple}-g++ on PATH ({host.path}): {packages}"
        )
    if not (GCC_CROSS_SYSROOT / triple / "include" / "stdio.h").is_file():
        return f"{job.platform} job: {triple}-g++ is installed, but the {job.arch} C library to build against is not ({GCC_CROSS_SYSROOT / triple}/include): {packages}"
    return None


def _gcc_cross(job: Job, host: HostToolchains, base: Mapping[str, str]) -> Decision:
    triple, _ = GCC_CROSS_TARGETS[job.platform]
    env, changes = _with(base, {"CMAKE_TOOLCHAIN_FILE": GCC_CROSS_TOOLCHAIN, "BNB_GCC_CROSS_TRIPLE": triple})
    return Runnable(env, f"{host.cross_gxx[job.platform]} (cross gcc, sysroot {GCC_CROSS_SYSROOT / triple})", changes)


def _cross(job: Job, host: HostToolchains, base: Mapping[str, str]) -> Decision:
    changes = {ZIG_CACHE_VARIABLE: base[ZIG_CACHE_VARIABLE]} if base.get(ZIG_CACHE_VARIABLE) else {}
    return Runnable(dict(base), f"zig {host.zig} ({job.toolchain}, cross)", changes)


def _wanted(job: Job) -> str:
    assert job.version is not None, job.id
    return ".".join(job.version.split(".")[:2])


def _with(base: Mapping[str, str], changes: Mapping[str, str], *, path_first: Sequence[Path] = ()) -> tuple[dict[str, str], dict[str, str]]:
    changes = dict(changes)
    if path_first:
        parts = base["PATH"].split(os.pathsep)
        changes["PATH"] = os.pathsep.join([parts[0], *(str(p) for p in path_first), *parts[1:]])
    return {**base, **changes}, changes


def missing_cuda_components(root: Path, components: Sequence[str]) -> list[str]:
    """The CUDA:: targets of `components` whose header or library the toolkit at `root` lacks."""
    missing = []
    for component in components:
        header, name = CUDA_COMPONENT_FILES.get(component, (None, component))
        has_header = header is None or (root / "include" / header).is_file()
        linux = any(any(folder.glob(f"lib{name}.so*")) for folder in (root / "lib", root / "lib64") if folder.is_dir())
        windows = (root / "lib" / "x64" / f"{name}.lib").is_file() and any((root / "bin").glob(f"{name}64_*.dll"))
        has_library = linux or windows
        if not (has_header and has_library):
            missing.append(component)
    return missing


def _cuda(job: Job, host: HostToolchains, base: Mapping[str, str]) -> Decision:
    wanted = _wanted(job)
    match = next((i for i in host.cuda if i.major_minor == wanted), None)
    if match is None:
        found = ", ".join(f"{i.major_minor} at {i.root}" for i in host.cuda) or "none"
        return Skip(f"no nvcc {wanted} on this host (found: {found})")
    with_components = [i for i in host.cuda if i.major_minor == wanted and not missing_cuda_components(i.root, job.toolkit_components)]
    if not with_components:
        missing = missing_cuda_components(match.root, job.toolkit_components)
        targets = ", ".join(f"CUDA::{c}" for c in missing)
        return Skip(f"the tree links {targets}, and the CUDA {wanted} at {match.root} has no {', '.join(missing)}; add it: {components_hint(missing)}")
    match = with_components[0]
    env, changes = _with(base, {"CUDACXX": str(match.compiler), "CUDAToolkit_ROOT": str(match.root)}, path_first=[match.root / "bin"])
    return Runnable(env, f"nvcc {match.version} at {match.root}", changes)


def _rocm(job: Job, host: HostToolchains, base: Mapping[str, str]) -> Decision:
    wanted = _wanted(job)
    match = next((i for i in host.rocm if i.major_minor == wanted), None)
    if match is None:
        found = ", ".join(f"hipcc {i.version}" for i in host.rocm) or "no hipcc"
        return Skip(f"no ROCm {wanted} on this host (found {found})")
    # With nvcc on PATH, hipcc would pick the NVIDIA platform: always ask for AMD.
    if match.layout == "debian":
        changes = {"HIP_PLATFORM": "amd", "CMAKE_TOOLCHAIN_FILE": DEBIAN_ROCM_TOOLCHAIN}
        env, changes = _with(base, changes)
    else:
        env, changes = _with(base, {"HIP_PLATFORM": "amd", "ROCM_PATH": str(match.root)}, path_first=[match.root / "bin"])
    return Runnable(env, f"hipcc {match.version} at {match.root}", changes)


def _oneapi(job: Job, host: HostToolchains, base: Mapping[str, str]) -> Decision:
    wanted = (job.version or "").split(".")[0]
    match = next((i for i in host.oneapi if i.version.split(".")[0] == wanted), None)
    if match is None:
        found = ", ".join(f"icpx {i.version} at {i.compiler}" for i in host.oneapi) or "none"
        return Skip(f"no oneAPI icpx {wanted} on this host (found: {found})")
    bin_dir = match.compiler.parent
    env, changes = _with(base, {"CXX": str(match.compiler), "CC": str(bin_dir / "icx")}, path_first=[bin_dir])
    return Runnable(env, f"icpx {match.version} at {match.compiler}", changes)
