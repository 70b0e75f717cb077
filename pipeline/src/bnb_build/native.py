"""Step ``native``: configure and build one native library with CMake.

Command line (docs/contracts.md; run in the job's work directory with relative paths)::

    python3 -m bnb_build native --job-id ID --backend B [--toolkit-version V] --platform P
        --library NAME [--archs "75;80"] [--toolchain zig.cmake] --source src --out out
        [--build-dir build] -- <cmake args>

What it does, in order:

1. checks the arguments and that ``<source>/CMakeLists.txt`` exists;
2. computes the input digest (every file below ``--source`` plus backend, toolkit, archs, flags);
3. configures with ``cmake -S <source> -B <build-dir>`` (``-G Ninja`` when ninja is on PATH,
   ``-DCOMPUTE_BACKEND``, ``-DCOMPUTE_CAPABILITY`` or ``-DBNB_ROCM_ARCH`` from ``--archs``, ccache as
   compiler launcher when it is on PATH and ``BNB_NO_CCACHE`` is not ``1``), then builds with the
   compile parallelism of ``resources.py``. The pipeline brings its own build files (``cmake/`` beside
   this module), so the tree needs none of them: ``--toolchain`` names a toolchain file there
   (``-DCMAKE_TOOLCHAIN_FILE``), and ``project.cmake`` is included after the tree's ``project()``
   (``-DCMAKE_PROJECT_INCLUDE``: reproducible binaries, and a report of whether OpenMP was asked for
   and found);
4. finds ``--library`` wherever CMake put it: the staging folder inside ``--out`` (trees that honour
   ``-DBNB_OUTPUT_DIR``), else the build folder, else the source folder (trees that write into their
   package folder); a library of another name instead means the toolkit found is not the one the job
   asked for;
5. moves ``<library>`` and ``<library>.build-info.json`` into ``<out>/<os>/<arch>/``.

The build runs with ``SOURCE_DATE_EPOCH`` (kept from the environment, else a fixed default),
``LC_ALL=C``, ``TZ=UTC`` and umask 022. build-info.json has sorted keys, no timestamps and no
absolute paths, so two builds of the same inputs in different folders write the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from . import inputs, package_files, process, resources, stable_source, zig_runtime
from .errors import BuildMismatch, InputError, UsageError, run_step
from .files import move_into_place, remove_tree, write_text_atomic
from .platforms import Platform, check_backend, check_library_name, get_platform, is_library_file

BUILD_INFO_SCHEMA = 1
BUILD_INFO_SUFFIX = ".build-info.json"

# Which CMake variable receives --archs, per backend.
ARCH_VARIABLE = {"cuda": "COMPUTE_CAPABILITY", "hip": "BNB_ROCM_ARCH"}
# Languages whose compiler gets ccache as launcher, and whose compiler id/version go to build-info.
LAUNCHER_LANGUAGES = ("CXX", "CUDA", "HIP")
COMPILER_LANGUAGES = ("C", "CXX", "CUDA", "HIP")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DEFINE = re.compile(r"^-D([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z]+)?=(.*)$", re.DOTALL)


@dataclass(frozen=True)
class NativeJob:
    """One native build, as given on the command line (paths as given, relative to the cwd)."""

    job_id: str
    backend: str
    toolkit_version: Optional[str]
    platform: Platform
    library: str
    archs: Tuple[str, ...]
    source: Path
    out: Path
    build_dir: Path
    cmake_args: Tuple[str, ...]  # the arguments after "--"
    toolchain: Optional[str] = None  # a toolchain file of the pipeline's cmake/ folder

    @property
    def output_dir(self) -> Path:
        """``<out>/<os>/<arch>``: where the library and its build-info.json end up."""
        return self.out / self.platform.os / self.platform.arch

    @property
    def staging_dir(self) -> Path:
        """A folder inside ``--out`` that CMake writes into; moved into place when all is done."""
        return self.out / f".partial-{self.job_id}"

    @property
    def flags(self) -> List[str]:
        """The CMake arguments that define the build (recorded in build-info.json, part of the digest)."""
        return job_defines(self) + list(self.cmake_args)


# ----------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m bnb_build native",
        description="Configure and build one native library with CMake.",
        epilog="Arguments after '--' are passed to the CMake configure step.",
    )
    p.add_argument("--job-id", required=True, help="the job's id (names the staging folder, recorded)")
    p.add_argument("--backend", required=True, help="cpu, cuda, hip or xpu")
    p.add_argument("--toolkit-version", default=None, help="CUDA/ROCm/oneAPI version the job asks for")
    p.add_argument("--platform", required=True, help="platform id, e.g. linux-x86_64")
    p.add_argument("--library", required=True, help="expected library file, e.g. libbitsandbytes_cuda130.so")
    p.add_argument("--archs", default="", help='";"-separated GPU archs, e.g. "75;90" or "gfx90a"')
    p.add_argument("--toolchain", default=None, help=f"a toolchain file of the pipeline ({', '.join(TOOLCHAINS)})")
    p.add_argument("--source", required=True, type=Path, help="folder with the job's sources")
    p.add_argument("--out", required=True, type=Path, help="output folder (<out>/<os>/<arch>/...)")
    p.add_argument("--build-dir", default=Path("build"), type=Path, help="CMake build folder (default: build)")
    return p


def parse_args(argv: Sequence[str]) -> NativeJob:
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        own, cmake_args = argv[:cut], argv[cut + 1 :]
    else:
        own, cmake_args = argv, []
    ns = _parser().parse_args(own)
    platform = get_platform(ns.platform)
    backend = check_backend(ns.backend)
    if not _JOB_ID.match(ns.job_id):
        msg = f"job id {ns.job_id!r} is not allowed: use letters, digits, '.', '_' and '-'"
        raise UsageError(msg)
    archs = tuple(a.strip() for a in ns.archs.split(";") if a.strip())
    if archs and backend not in ARCH_VARIABLE:
        msg = f"--archs {ns.archs!r} is not allowed for backend {backend}: archs apply to cuda and hip only"
        raise UsageError(msg)
    job = NativeJob(
        job_id=ns.job_id,
        backend=backend,
        toolkit_version=ns.toolkit_version,
        platform=platform,
        library=check_library_name(ns.library, platform),
        archs=archs,
        source=ns.source,
        out=ns.out,
        build_dir=ns.build_dir,
        cmake_args=tuple(cmake_args),
        toolchain=_check_toolchain(ns.toolchain),
    )
    _check_cmake_args(job)
    _check_folders(job)
    return job


CMAKE_DIR = package_files.cmake_dir()
"""The pipeline's own CMake files: toolchain files and project.cmake."""
TOOLCHAINS = ("zig.cmake", "debian-rocm.cmake")
PROJECT_INCLUDE = CMAKE_DIR / "project.cmake"
CONFIGURE_REPORT = "bnb-configure.json"


def _check_toolchain(name: Optional[str]) -> Optional[str]:
    if name is not None and name not in TOOLCHAINS:
        msg = f"--toolchain {name!r} is not a toolchain file of the pipeline; allowed: {', '.join(TOOLCHAINS)}"
        raise UsageError(msg)
    return name


def _check_cmake_args(job: NativeJob) -> None:
    ours = dict(_parse_define(d) for d in option_defines(job))
    for arg in job.cmake_args:
        name, value = _parse_define(arg) if _DEFINE.match(arg) else (None, None)
        if name == "BNB_OUTPUT_DIR":
            msg = "-DBNB_OUTPUT_DIR is set by the native step (it builds into --out); remove it from the CMake arguments"
            raise UsageError(msg)
        if name in ours and value != ours[name]:
            msg = f"CMake argument {arg!r} contradicts the job options, which give -D{name}={ours[name]}"
            raise UsageError(msg)


def _check_folders(job: NativeJob) -> None:
    source = job.source.resolve()
    for option, folder in (("--out", job.out), ("--build-dir", job.build_dir)):
        resolved = folder.resolve()
        if resolved == source or source in resolved.parents:
            msg = f"{option} {folder} is inside --source {job.source}; put it beside the sources"
            raise UsageError(msg)


def _parse_define(arg: str) -> Tuple[str, str]:
    m = _DEFINE.match(arg)
    assert m is not None, arg
    return m.group(1), m.group(2)


# ----------------------------------------------------------------------------------------------
# Pure parts: CMake arguments, environment, build-info


def option_defines(job: NativeJob) -> List[str]:
    """The -D arguments that follow from the job options (backend, archs)."""
    defines = [f"-DCOMPUTE_BACKEND={job.backend}"]
    if job.archs:
        defines.append(f"-D{ARCH_VARIABLE[job.backend]}={';'.join(job.archs)}")
    return defines


def job_defines(job: NativeJob) -> List[str]:
    """:func:`option_defines`, less those the CMake arguments already give (with the same value)."""
    user_names = {_parse_define(a)[0] for a in job.cmake_args if _DEFINE.match(a)}
    return [d for d in option_defines(job) if _parse_define(d)[0] not in user_names]


def configure_args(
    job: NativeJob,
    *,
    cmake: str,
    ninja: Optional[str],
    ccache: Optional[str],
    source_path: Optional[Path] = None,
) -> List[str]:
    """The CMake configure command line (absolute paths: cmake runs with any cwd); `source_path`:
    the path CMake sees the sources at (default: where they are)."""
    args = [cmake, "-S", str(source_path or job.source.resolve()), "-B", str(job.build_dir.resolve())]
    if ninja is not None:
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    args.append(f"-DBNB_OUTPUT_DIR={(job.staging_dir / job.platform.os / job.platform.arch).resolve()}")
    args.append(f"-DCMAKE_PROJECT_INCLUDE={PROJECT_INCLUDE}")
    if job.toolchain is not None:
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={CMAKE_DIR / job.toolchain}")
    if ccache is not None:
        args += [f"-DCMAKE_{lang}_COMPILER_LAUNCHER={ccache}" for lang in LAUNCHER_LANGUAGES]
    return args + job.flags


def build_args(job: NativeJob, *, cmake: str, parallel: int) -> List[str]:
    """The CMake build command line; ``parallel`` compiles at once (resources.parallelism_from_env)."""
    return [cmake, "--build", str(job.build_dir.resolve()), "--config", "Release", "--parallel", str(parallel)]


def build_environment(env: Mapping[str, str], job: NativeJob) -> Dict[str, str]:
    """The environment CMake and the compilers run with."""
    result = process.reproducible_env(env)
    # ccache: paths below the work directory are hashed relative to it, so two work directories share hits.
    result.setdefault("CCACHE_BASEDIR", str(Path.cwd().resolve()))
    return result


def use_ccache(env: Mapping[str, str]) -> bool:
    return env.get("BNB_NO_CCACHE", "") != "1" and process.has_tool("ccache", env)


_SET_LINE = re.compile(r'^set\((CMAKE_(\w+?)_COMPILER_(ID|VERSION)) "([^"]*)"\)', re.MULTILINE)
_PROGRAM_LINE = re.compile(r'^set\(CMAKE_(\w+?)_COMPILER(|_ARG1) "([^"]*)"\)', re.MULTILINE)


def compiler_info(build_dir: Path) -> Dict[str, Dict[str, str]]:
    """Compiler id and version per enabled language, read from CMake's per-language files.

    CMake records them in ``<build>/CMakeFiles/<cmake version>/CMake<LANG>Compiler.cmake``
    (``CMAKE_CXX_COMPILER_ID``, ``CMAKE_CUDA_COMPILER_VERSION``, ...). ``program``: the compiler that
    ran, its links resolved, by file name, with the arguments CMake gives it first
    (``x86_64-linux-gnu-g++-12`` for /usr/bin/c++, ``zig c++ -target x86_64-linux-gnu.2.28``).
    """
    result: Dict[str, Dict[str, str]] = {}
    for lang in COMPILER_LANGUAGES:
        for path in sorted((build_dir / "CMakeFiles").glob(f"*/CMake{lang}Compiler.cmake")):
            found = {
                kind.lower(): value
                for _, file_lang, kind, value in _SET_LINE.findall(path.read_text(errors="replace"))
                if file_lang == lang
            }
            if found.get("id"):
                result[lang] = {"id": found["id"], "version": found.get("version", "")}
                program = _compiler_program(path.read_text(errors="replace"), lang)
                if program:
                    result[lang]["program"] = program
    return result


def _compiler_program(text: str, lang: str) -> str:
    values = {suffix: value for file_lang, suffix, value in _PROGRAM_LINE.findall(text) if file_lang == lang}
    compiler = values.get("", "")
    if not compiler:
        return ""
    name = Path(compiler).resolve().name if Path(compiler).is_absolute() else compiler
    return " ".join(part for part in (name, values.get("_ARG1", "").strip()) if part)


def build_info(
    job: NativeJob,
    *,
    library_sha256: str,
    compilers: Mapping[str, Mapping[str, str]],
    inputs_digest: str,
    openmp: Optional[Mapping[str, bool]] = None,
    compiler_variables: Optional[Mapping[str, str]] = None,
) -> Dict[str, object]:
    """``compiler_variables``: the COMPILER_VARIABLES set for the build (what CMake chose its compilers by)."""
    return {
        "compiler_variables": dict(compiler_variables or {}),
        "schema_version": BUILD_INFO_SCHEMA,
        "job_id": job.job_id,
        "backend": job.backend,
        "toolkit_version": job.toolkit_version,
        "platform": job.platform.id,
        "library": job.library,
        "library_sha256": library_sha256,
        "archs": list(job.archs),
        "compilers": {k: dict(v) for k, v in compilers.items()},
        "flags": job.flags,
        "inputs_digest": inputs_digest,
        "toolchain": job.toolchain,
        "openmp": dict(openmp or {"asked": False, "found": False}),
    }


def render_build_info(info: Mapping[str, object]) -> str:
    return json.dumps(info, sort_keys=True, indent=2) + "\n"


def inputs_digest(job: NativeJob) -> str:
    """Digest of every file below --source plus what else decides the output."""
    extra = {
        "backend": job.backend,
        "toolkit_version": job.toolkit_version,
        "platform": job.platform.id,
        "library": job.library,
        "archs": list(job.archs),
        "flags": job.flags,
        "toolchain": job.toolchain,
    }
    return inputs.digest(job.source, inputs.all_files(job.source), extra)


COMPILER_VARIABLES = ("CC", "CXX", "CUDAHOSTCXX")
"""The environment variables CMake picks the host compilers by (C, C++, and nvcc's host compiler)."""


def selected_compilers(env: Mapping[str, str]) -> Dict[str, str]:
    """The COMPILER_VARIABLES set in ``env``, as set."""
    return {name: env[name] for name in COMPILER_VARIABLES if env.get(name, "").strip()}


_FIND_OPENMP = re.compile(r"find_package\s*\(\s*OpenMP\b", re.IGNORECASE)


def openmp_report(job: NativeJob) -> Dict[str, bool]:
    """Whether the tree asked for OpenMP and whether the configure found it (project.cmake's report:
    find_package(OpenMP) ran in the branch this backend's configure took). A CPU build whose
    configure did not say so counts as asking when the tree's CMake files call find_package(OpenMP)
    (e.g. in a subdirectory's scope); a GPU build never does by the files alone, since a tree asks for
    OpenMP in its CPU branch."""
    report: Dict[str, bool] = {"asked": False, "found": False}
    path = job.build_dir / CONFIGURE_REPORT
    if path.is_file():
        try:
            report.update({k: bool(v) for k, v in json.loads(path.read_text(encoding="utf-8")).get("openmp", {}).items()})
        except ValueError:
            pass
    if not report["asked"] and job.backend == "cpu":
        cmake_files = [rel for rel in inputs.all_files(job.source) if rel.endswith(("CMakeLists.txt", ".cmake"))]
        report["asked"] = any(_FIND_OPENMP.search((job.source / rel).read_text(errors="replace")) for rel in cmake_files)
    return report


# ----------------------------------------------------------------------------------------------
# Running it


def build(job: NativeJob, env: Mapping[str, str]) -> Path:
    """Build the library of ``job``; return the path of the library in ``<out>/<os>/<arch>``."""
    if not (job.source / "CMakeLists.txt").is_file():
        msg = (
            f"no CMakeLists.txt in --source {job.source}: it must be the folder holding the job's "
            "sources (CMakeLists.txt, VERSION, cmake/, csrc/...)"
        )
        raise InputError(msg)
    digest = inputs_digest(job)

    run_env = build_environment(env, job)
    cmake = process.find_tool("cmake", run_env)
    ninja = process.find_tool("ninja", run_env) if process.has_tool("ninja", run_env) else None
    ccache = process.find_tool("ccache", run_env) if use_ccache(run_env) else None
    if ccache is None:
        print("ccache: not used (not on PATH or BNB_NO_CCACHE=1)", flush=True)

    remove_tree(job.staging_dir)
    staged = job.staging_dir / job.platform.os / job.platform.arch
    staged.mkdir(parents=True)
    started = time.time() - 1  # file times of some file systems are coarse
    target = zig_runtime.target_of(job.cmake_args) if job.toolchain == "zig.cmake" else None
    if target and zig_runtime.first_build(target, run_env):
        print(zig_runtime.notice(target, run_env), flush=True)
    with stable_source_path(job) as source_path:
        built = _build(job, digest, run_env, cmake, ninja, ccache, staged, started, source_path)
    if target:
        zig_runtime.mark_built(target, run_env)
    return built


def _build(job: NativeJob, digest: str, run_env: Mapping[str, str], cmake: str, ninja: Optional[str], ccache: Optional[str],
           staged: Path, started: float, source_path: Path) -> Path:  # fmt: skip
    try:
        _forget_other_configuration(job.build_dir, source_path)
        process.run(configure_args(job, cmake=cmake, ninja=ninja, ccache=ccache, source_path=source_path), env=run_env)
        parallel = resources.parallelism_from_env(run_env)
        print(f"compile parallelism: {parallel} (cpus {resources.available_cpus()}, memory {resources.available_memory_gb():.1f} GB)", flush=True)
        process.run(build_args(job, cmake=cmake, parallel=parallel), env=run_env)
        compilers = compiler_info(job.build_dir)
        library = _produced_library(job, staged, compilers, since=started, source_path=source_path)
        openmp = openmp_report(job)
        if openmp["asked"] and not openmp["found"]:
            print(f"OpenMP: the tree asks for it, and this toolchain has none: {job.library} is built without it", flush=True)
        info = build_info(
            job,
            library_sha256=inputs.file_sha256(library),
            compilers=compilers,
            inputs_digest=digest,
            openmp=openmp,
            compiler_variables=selected_compilers(run_env),
        )
        write_text_atomic(staged / (job.library + BUILD_INFO_SUFFIX), render_build_info(info))
        # The library first, its build-info last: a build-info.json means the library beside it is complete.
        final = job.output_dir / job.library
        move_into_place(library, final, mode=0o755)
        move_into_place(staged / (job.library + BUILD_INFO_SUFFIX), job.output_dir / (job.library + BUILD_INFO_SUFFIX))
    finally:
        remove_tree(job.staging_dir)
    print(f"built {final} ({info['library_sha256']})", flush=True)
    return final


def _forget_other_configuration(build_dir: Path, source_path: Path) -> None:
    """A kept build folder configured for other sources (another job's) is started afresh: CMake
    refuses to configure one folder for two source trees."""
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return
    for line in cache.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            configured = line.split("=", 1)[1].strip()
            if Path(configured) != source_path:
                print(f"the build folder {build_dir} was configured for {configured}; starting it afresh", flush=True)
                remove_tree(build_dir)
            return


@contextlib.contextmanager
def stable_source_path(job: NativeJob) -> Iterator[Path]:
    """The job's sources at a path that is the same in every build of it by this user:
    ``<tmp>/bnb-src-<uid>/<job id>`` (stable_source.py: why, and how builds take turns there)."""
    with stable_source.stable_source_path(job.source, job.job_id) as path:
        yield path


def _produced_library(job: NativeJob, staged: Path, compilers: Mapping[str, Mapping[str, str]], *, since: float = 0.0,
                      source_path: Optional[Path] = None) -> Path:  # fmt: skip
    """The library the build wrote, moved into ``staged``: CMake's output folder when the tree honours
    BNB_OUTPUT_DIR, else wherever it landed in the build or source folder (only files written by this
    build count, so a library left from an earlier build is never taken)."""
    produced = sorted(p.name for p in staged.iterdir() if is_library_file(p.name, job.platform))
    if produced == [job.library]:
        return staged / job.library
    found = _written_since(job, since, source_path or job.source)
    wanted = [p for p in found if p.name == job.library]
    if not produced and wanted:
        newest = max(wanted, key=lambda p: p.stat().st_mtime)
        print(f"found {job.library} at {newest} (the tree's CMake chose where it goes)", flush=True)
        target = staged / job.library
        move_into_place(newest, target, mode=0o755)
        return target
    produced = produced or sorted({p.name for p in found})
    if not produced:
        msg = (
            f"CMake produced no libbitsandbytes_* library for job {job.job_id}: none in its output folder "
            f"({staged}), the build folder or the source folder; check the tree's CMakeLists.txt"
        )
        raise BuildMismatch(msg)
    found_compilers = ", ".join(f"{lang} {c['id']} {c['version']}" for lang, c in sorted(compilers.items()))
    msg = (
        f"the toolkit found does not match the job {job.job_id}: it asks for {job.library}"
        f"{' (toolkit ' + job.toolkit_version + ')' if job.toolkit_version else ''} but the build produced "
        f"{', '.join(produced)} (compilers found: {found_compilers}); put the wanted toolkit first on PATH or set "
        "CUDACXX / CUDAToolkit_ROOT / HIP_PLATFORM accordingly"
    )
    raise BuildMismatch(msg)


def _written_since(job: NativeJob, since: float, source: Path) -> List[Path]:
    """Libraries of the job's platform written into the build or source folder since ``since``."""
    found = []
    for root in (job.build_dir, source):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in ("CMakeFiles", ".git")]
            for name in filenames:
                path = Path(dirpath) / name
                if is_library_file(name, job.platform) and not path.is_symlink() and path.stat().st_mtime >= since:
                    found.append(path)
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    old_umask = os.umask(0o022)
    try:
        return run_step(lambda: build(parse_args(sys.argv[1:] if argv is None else argv), os.environ))
    finally:
        os.umask(old_umask)
