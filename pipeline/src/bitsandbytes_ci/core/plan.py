"""Matrix -> jobs. Pure: nothing here runs anything, reads the environment or touches files.

Glossary
- matrix: the validated support table (matrix.toml, loaded by `matrix.load_matrix`): platforms,
  toolkit families (cpu, cuda, rocm, xpu) with their versions, GPU arch rules and images.
- job: one unit of work with everything needed to run it: `Job` builds one native library for one
  (family, version, platform); `WheelJob` packs one platform's libraries into a wheel. A job's `id`
  names it everywhere: selection, cache volumes, artefact paths, logs.
- step: the program a job runs, `python3 -m bnb_build <step> ...` (docs/contracts.md). Its argv is
  computed here (`Job.native_argv`, `WheelJob.wheel_argv`, `audit_argv`, `pre_release_argv`,
  `github_release_argv`, `publish_argv`) and is byte-identical on the host and in a container; the
  executor only chooses where to run it.
- artefact: what a job leaves under its output directory: `<out>/<os>/<arch>/<library>` plus
  `<library>.build-info.json` for a build job, a `.whl` for a wheel job.

Worked example: CUDA 12.8 for Linux aarch64.

    >>> from bitsandbytes_ci.core.matrix import load_matrix
    >>> matrix = load_matrix()
    >>> [job] = plan_jobs(matrix, Selection(backends=("cuda",), versions=("12.8",), platforms=("linux-aarch64",)))
    >>> job.id, job.version, job.image, job.runner, job.dagger_platform
    ('cuda128-linux-aarch64', '12.8.1', 'nvidia/cuda:12.8.1-devel-rockylinux8', 'container', 'linux/arm64')
    >>> job.archs
    ['75', '80', '90', '100', '120']
    >>> job.native_argv()[:8]
    ['python3', '-m', 'bnb_build', 'native', '--job-id', 'cuda128-linux-aarch64', '--backend', 'cuda']
    >>> job.cmake_args
    ['-DCOMPUTE_BACKEND=cuda', '-DCMAKE_BUILD_TYPE=Release', '-DCOMPUTE_CAPABILITY=75;80;90;100;120']
    >>> [wheel] = plan_wheels(matrix, [job])
    >>> wheel.id, wheel.plat_tag, wheel.libraries
    ('wheel-linux-aarch64', 'manylinux_2_28_aarch64', ['libbitsandbytes_cuda128.so'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from bnb_build import cpu_levels
from bnb_build import inputs as bnb_inputs

from pydantic import BaseModel, ConfigDict

from . import archs as arch_lists
from .errors import SelectionError, allowed_list, did_you_mean
from .matrix import Backend, Family, Matrix, Runner
from .tree import DEFAULT_TREE, TreeFacts
from .versions import matches, sort_versions

STEP = ["python3", "-m", "bnb_build"]
"""How every step program is started (docs/contracts.md)."""
STEP_PROGRAMS = Path(bnb_inputs.__file__).resolve().parent
"""The step programs installed with this package: part of every job's input digest."""

DEFAULT_TAG = "continuous-release_main"
"""The rolling GitHub pre-release's tag."""
DEFAULT_API_URL = "https://api.github.com"
DEFAULT_REPOSITORY_URL = "https://upload.pypi.org/legacy/"
"""PyPI's upload endpoint."""


class Selection(BaseModel):
    """Which jobs to plan. Empty means everything; values are checked against the matrix by `plan_jobs`.

    backends: family or backend names (cpu, cuda, rocm or hip, xpu). versions: toolkit versions, exact or
    leading parts ("12.8" selects 12.8.1); a version applies to the families that have it, and a family
    named in backends is never dropped (cpu, which has no versions, included). platforms: platform ids.
    archs: an arch list that replaces the matrix's for every selected GPU job (like upstream's
    CUDA_TARGETS), checked against each job's toolkit. An empty or blank value is refused, never read
    as "everything" (`check_selection_values`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backends: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    archs: str | None = None


class Job(BaseModel):
    """One native library for one (family, version, platform)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    family: Literal["cpu", "cuda", "rocm", "xpu"]
    backend: Backend
    version: str | None
    platform: str
    os: str
    arch: str
    image: str | None
    image_pinned: bool
    dagger_platform: str | None
    runner: Runner
    archs: list[str]
    cmake_args: list[str]
    library: str
    sources: list[str]  # patterns that must select files (the tree named them)
    setup: list[str]
    env: dict[str, str]
    optional_sources: list[str] = []  # the pipeline's defaults: copied where the tree has them
    toolchain: str | None = None  # "zig" (runner cross: a toolchain file of the pipeline), "gcc" (OpenMP trees' Linux CPU builds) or "msvc" (Windows CPU builds of trees written for MSVC)
    toolchain_reason: str = ""  # why this toolchain builds the job, where the tree's CMake decided it
    toolchain_file: str | None = None  # runner cross: the pipeline's toolchain file the native step hands CMake (bnb_build/cmake/)
    openmp_wanted: bool = False  # the tree's CMake asks for OpenMP (its CPU library should link it)
    toolkit_components: list[str] = []  # CUDA libraries the tree's CMake links (CUDA::cublas, ...): the toolkit must have them
    vendor: list[str] = []  # libraries the wheel step grafts into the wheel when this library needs them
    image_gb: float | None = None  # approximate unpacked size of `image` (matrix.toml `size_gb`)
    step_python: str = "python3"  # container jobs: the image's Python that runs the step programs
    compile_memory_gb: float = 1.0  # what one compiler process may take (bounds the compile parallelism)

    def step_resources_env(self, concurrent_jobs: int) -> dict[str, str]:
        """What the native step reads to size its compile parallelism (bnb_build.resources): how many
        jobs share the machine and what one compile takes. It never changes the output."""
        return {"BNB_CONCURRENT_JOBS": str(max(1, concurrent_jobs)), "BNB_COMPILE_MEMORY_GB": f"{self.compile_memory_gb:g}"}

    @property
    def output_subdir(self) -> str:
        """Where the library lands below the output directory: `<os>/<arch>`."""
        return f"{self.os}/{self.arch}"

    def native_argv(self, *, source: str = "src", out: str = "out") -> list[str]:
        """The step command line of docs/contracts.md, run in the job's work directory."""
        argv = [*STEP, "native", "--job-id", self.id, "--backend", self.backend]
        if self.version is not None:
            argv += ["--toolkit-version", self.version]
        argv += ["--platform", self.platform, "--library", self.library]
        if self.archs:
            argv += ["--archs", arch_lists.join(self.archs)]
        if self.toolchain_file:
            argv += ["--toolchain", self.toolchain_file]
        return [*argv, "--source", source, "--out", out, "--", *self.cmake_args]

    @property
    def all_sources(self) -> list[str]:
        """Every pattern of the job's subset: the required ones, then the optional ones."""
        return [*self.sources, *self.optional_sources]

    def present_sources(self, root: Path | str) -> list[str]:
        """The patterns of the subset that apply to the tree at `root` (the optional ones where present)."""
        return present_patterns(root, self.sources, self.optional_sources)

    def inputs(self, *, toolkit: str | None = None) -> dict[str, Any]:
        """What decides this job's output besides its source files: the step command (backend, toolkit
        version, archs, CMake arguments), the toolkit actually used (`toolkit`; default the matrix's
        version), the image (with its digest when locked), setup commands and variables, the source
        patterns. Never SOURCE_DATE_EPOCH: a library does not depend on it."""
        return {
            "argv": self.native_argv(),
            "toolkit": toolkit if toolkit is not None else self.version,
            "image": self.image,
            "setup": list(self.setup),
            "env": dict(sorted(self.env.items())),
            "sources": list(self.sources),
            "optional_sources": list(self.optional_sources),
        }

    def input_digest(self, repo_root: Path | str, *, toolkit: str | None = None, steps_dir: Path | str | None = None) -> str:
        """`bnb_build.inputs.job_digest` of the job's source subset, the step programs (`steps_dir`,
        default: the ones installed with this package, whatever tree is built) and `inputs()`.
        Reads the files under `repo_root`; pure given their contents."""
        return bnb_inputs.job_digest(repo_root, self.sources, self.inputs(toolkit=toolkit), steps_dir=steps_dir or STEP_PROGRAMS,
                                     optional_patterns=self.optional_sources)  # fmt: skip


class Dropped(BaseModel):
    """A job the matrix has and the tree's build cannot make: its id and why (capabilities.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    reason: str


class WheelJob(BaseModel):
    """One wheel per platform, holding every library the plan builds for that platform."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    platform: str
    os: str
    arch: str
    plat_tag: str
    image: str | None
    image_pinned: bool
    dagger_platform: str | None
    runner: Runner
    libraries: list[str]
    build_job_ids: list[str]
    sources: list[str]
    optional_sources: list[str]
    package: str = "bitsandbytes"
    vendor: list[str] = []
    cpu_floor: str = ""  # the oldest CPU the wheel runs on (`cpu_floor`)

    def wheel_argv(self, *, libs: str = "libs", source: str = "src", out: str = "out") -> list[str]:
        argv = [*STEP, "wheel", "--platform", self.platform, "--plat-tag", self.plat_tag,
                "--libs", libs, "--source", source, "--out", out]  # fmt: skip
        if self.package != "bitsandbytes":
            argv += ["--package", self.package]
        for library in self.vendor:
            argv += ["--vendor", library]
        return argv

    def inputs(self, *, libraries: Mapping[str, str], source_date_epoch: str, toolkit: str | None = None) -> dict[str, Any]:
        """What decides the wheel besides its source files: the step command, the image, the packing
        tools actually used (`toolkit`, default: those of the image), the digests of the libraries it
        packs (build job id -> digest) and SOURCE_DATE_EPOCH (the zip entries' time)."""
        return {
            "argv": self.wheel_argv(),
            "image": self.image,
            "toolkit": toolkit,
            "libraries": dict(sorted(libraries.items())),
            "source_date_epoch": str(source_date_epoch),
            "sources": [*self.sources, *self.optional_sources],
        }

    def input_digest(self, repo_root: Path | str, *, libraries: Mapping[str, str], source_date_epoch: str,
                     toolkit: str | None = None, steps_dir: Path | str | None = None) -> str:  # fmt: skip
        """`bnb_build.inputs.job_digest` of the wheel's sources (optional ones where present), the step
        programs (as `Job.input_digest`) and `inputs()`. Reads the files under `repo_root`; pure given
        their contents."""
        extra = self.inputs(libraries=libraries, source_date_epoch=source_date_epoch, toolkit=toolkit)
        return bnb_inputs.job_digest(repo_root, self.sources, extra, steps_dir=steps_dir or STEP_PROGRAMS,
                                     optional_patterns=self.optional_sources)  # fmt: skip


def present_patterns(root: Path | str, required: Sequence[str], optional: Sequence[str]) -> list[str]:
    """`required`, then the `optional` patterns that select something under `root` (a folder pattern
    may select nothing: it stays)."""
    return [*required, *(p for p in optional if p.endswith("/**") or (Path(root) / p).is_file())]


def manifest_argv(*, dist: str = "dist", jobs: str = "jobs.json") -> list[str]:
    """The manifest step's command line: `dist/manifest.json` from the output folder and `jobs` (the
    executor's outcome of every job); both executors run it, so their manifests are written alike."""
    return [*STEP, "manifest", "--dist", dist, "--jobs", jobs]


TRY_SCRIPT_DIR = "src"
"""Where the try step finds the tree's script: its path below the tree's root, inside this folder."""
WINE_PYTHON_DIR = "wine-python"
"""Where the try step finds the Windows CPython it runs win_amd64 wheels with under Wine."""


def try_argv(*, script: str | None, wine_python: bool = False, checks: Sequence[str] = (), wheels: str = "wheels",
             report: str = "tries.md") -> list[str]:  # fmt: skip
    """The try step's command line: every wheel in `wheels` installed into a clean environment and
    `script` (a path below the tree's root, None: an import check) run with it, also at its CPU floor;
    `checks` from `try_checks`; tries.md (+ tries.json)."""
    argv = [*STEP, "try-wheels", "--wheels", wheels, "--report", report]
    if script:
        argv += ["--script", f"{TRY_SCRIPT_DIR}/{script}"]
    if wine_python:
        argv += ["--wine-python", WINE_PYTHON_DIR]
    return argv + list(checks)


TRY_BACKEND = "cpu"
"""The backend a try machine runs (it has no GPU): a try without script must find its library loaded."""


def try_checks(matrix: Matrix, platforms: Sequence[str], tree: TreeFacts = DEFAULT_TREE) -> list[str]:
    """The try step's checks for wheels of `platforms`: each one's CPU floor (`--floor`), the library of
    TRY_BACKEND a try without script must find loaded (`--expect-library`), the tree's
    runtime-libraries, which must not be loaded twice (`--runtime-library`), and its try-index-url
    (`--index-url`)."""
    family = next(f for _, f in matrix.families() if f.backend == TRY_BACKEND)
    checks: list[str] = []
    for platform in (p for p in matrix.platforms if p in platforms):
        checks += ["--floor", f"{platform}={cpu_floor(matrix, platform, tree)}"]
        for version in family.versions_on(platform):
            checks += ["--expect-library", f"{platform}={matrix.library_name(family, version, platform)}"]
    for library in tree.config.runtime_libraries:
        checks += ["--runtime-library", library]
    if tree.config.try_index_url:  # where the wheels' run-time dependencies come from
        checks += ["--index-url", tree.config.try_index_url]
    return checks


def version_argv(*, source: str = "src", package: str = "bitsandbytes") -> list[str]:
    """The version step's command line: prints the tree's version (its files, else its PEP 517 backend)."""
    return [*STEP, "version", "--source", source, "--package", package]


def audit_argv(*, wheels: str = "wheels", expect: str = "expect.json", report: str = "audit.md") -> list[str]:
    """The audit step's command line; `expect` is the JSON of `expectations()`."""
    return [*STEP, "audit", "--wheels", wheels, "--expect", expect, "--report", report]


def pre_release_argv(*, commit: str, repo: str, tag: str = DEFAULT_TAG, wheels: str = "wheels", out: str = "out",
                     expect: str = "expect.json") -> list[str]:  # fmt: skip
    """The pre-release step's command line: renames the wheels for the rolling pre-release `tag` of `repo`
    (OWNER/NAME) at `commit` into `out` (+ body.md, release.json), checked against `expect` (the JSON of
    `expectations()`). It needs no secret."""
    return [*STEP, "pre-release", "--wheels", wheels, "--out", out, "--commit", commit, "--repo", repo, "--tag", tag, "--expect", expect]


def github_release_argv(*, release_dir: str = "out", api_url: str = DEFAULT_API_URL) -> list[str]:
    """The github-release step's command line: replaces the GitHub release with `release_dir` (what
    pre-release wrote); the token comes from the environment (GITHUB_TOKEN), never from the command line."""
    return [*STEP, "github-release", "--release-dir", release_dir, "--api-url", api_url]


def publish_argv(*, repository_url: str = DEFAULT_REPOSITORY_URL, trusted_publishing: bool = False, oidc_url: str | None = None,
                 wheels: str = "wheels", expect: str = "expect.json") -> list[str]:  # fmt: skip
    """The publish step's command line (it always skips files the index already has); credentials come
    from the environment (PYPI_TOKEN, or with `trusted_publishing` the OIDC request variables of a
    GitHub Actions job), never from the command line."""
    argv = [*STEP, "publish", "--wheels", wheels, "--expect", expect, "--repository-url", repository_url]
    if trusted_publishing:
        argv.append("--trusted-publishing")
    if oidc_url:
        argv += ["--oidc-url", oidc_url]
    return argv


def job_id(family: Family, version: str | None, platform: str) -> str:
    """The one place job ids come from: `<variant>-<platform>`, e.g. cuda130-linux-x86_64, cpu-macos-arm64."""
    return f"{family.variant_for(version)}-{platform}"


def wheel_id(platform: str) -> str:
    return f"wheel-{platform}"


def cpu_floor(matrix: Matrix, platform: str, tree: TreeFacts = DEFAULT_TREE) -> str:
    """The oldest CPU `platform`'s wheels claim to run on: the tree's `cpu-floor` for it, else the
    matrix's. A level of bnb_build.cpu_levels; a tree naming an unknown platform or a level that is
    not one of the platform's arch is refused (SelectionError, naming what is allowed)."""
    for named, level in tree.config.cpu_floor.items():
        if named not in matrix.platforms:
            msg = f"cpu-floor names platform {named!r}{did_you_mean(named, list(matrix.platforms))}; allowed: {allowed_list(matrix.platforms)}"
            raise SelectionError(msg)
        try:
            cpu_levels.check_level(matrix.platforms[named].arch, level)
        except ValueError as e:
            msg = f"cpu-floor of {named}: {e}"
            raise SelectionError(msg) from None
    return tree.config.cpu_floor.get(platform, matrix.platforms[platform].cpu_floor)


# ---- planning ------------------------------------------------------------------------------------


def plan_jobs(matrix: Matrix, selection: Selection | None = None, tree: TreeFacts = DEFAULT_TREE) -> list[Job]:
    """The build jobs for `selection`, ordered by platform (matrix order), family, then version; `tree`:
    what is known of the tree being built (its source subsets, whether it uses OpenMP, ...)."""
    selection = selection or Selection()
    candidates = _candidates(matrix, selection)
    dropped = {job_id(family, version, platform): reason for name, family, version, platform in candidates
               if (reason := drop_reason(family, version, tree)) is not None}  # fmt: skip
    jobs = [
        _job(matrix, name, family, version, platform, tree)
        for name, family, version, platform in candidates
        if job_id(family, version, platform) not in dropped
    ]
    if not jobs:
        msg = f"the selection {_describe(selection)} matches no job; `bnb-ci plan` lists every job"
        if dropped:
            reasons = sorted(set(dropped.values()))
            msg = f"the selection {_describe(selection)} matches only jobs the tree cannot build: {'; '.join(reasons)}"
        raise SelectionError(msg)
    if selection.archs is not None:
        jobs = _override_archs(matrix, jobs, selection.archs)
    return jobs


def dropped_jobs(matrix: Matrix, selection: Selection | None = None, tree: TreeFacts = DEFAULT_TREE) -> list[Dropped]:
    """The jobs of `selection` that `plan_jobs` leaves out because the tree's build cannot make them
    (a COMPUTE_BACKEND its CMake does not know, a CUDA version its CMake refuses), each with why."""
    return [Dropped(id=job_id(family, version, platform), reason=reason) for _, family, version, platform in _candidates(matrix, selection or Selection())
            if (reason := drop_reason(family, version, tree)) is not None]  # fmt: skip


def drop_reason(family: Family, version: str | None, tree: TreeFacts) -> str | None:
    """Why the tree cannot build `family` at `version` (None: it can), from what its CMake says."""
    caps = tree.capabilities
    refusal = caps.backend_refusal(family.backend)
    if refusal is not None:
        return refusal
    if family.backend == "cuda" and version is not None and (limit := caps.cuda_refusal(version)) is not None:
        return f"its CMake refuses CUDA {version} ({limit.where}: \"{limit.message}\")"
    return None


def _candidates(matrix: Matrix, selection: Selection) -> list[tuple[str, Family, str | None, str]]:
    """Every (family name, family, version, platform) the matrix has for `selection`."""
    check_selection_values(selection)
    families = _selected_families(matrix, selection)
    platforms = _selected_platforms(matrix, selection)
    _check_versions(families, selection)
    return [
        (name, family, version, platform)
        for platform in platforms
        for name, family in families
        for version in family.versions_on(platform)
        if _version_selected(name, family, version, selection)
    ]


WHEEL_CMAKE_SOURCES = ("CMakeLists.txt",)
WHEEL_CMAKE_OPTIONAL = ("cmake/**", "csrc/**", "include/**")
"""What a wheel job also gets when the tree's PEP 517 backend runs CMake itself (capabilities.py)."""


def plan_wheels(matrix: Matrix, jobs: Sequence[Job], tree: TreeFacts = DEFAULT_TREE) -> list[WheelJob]:
    """One wheel job per platform that `jobs` build for, in matrix platform order."""
    sources = list(tree.config.sources.wheel or matrix.wheel.sources)
    optional = [] if tree.config.sources.wheel else list(matrix.wheel.optional_sources)
    if not tree.config.sources.wheel and tree.capabilities.wheel_runs_cmake:
        # its setup.py always runs CMake: without the CMake sources the wheel build stops
        sources += [p for p in WHEEL_CMAKE_SOURCES if p not in sources]
        optional += [p for p in WHEEL_CMAKE_OPTIONAL if p not in optional]
    wheels = []
    for platform_id, platform in matrix.platforms.items():
        built = [job for job in jobs if job.platform == platform_id]
        if not built:
            continue
        # Packing is pure Python, so every platform's wheel is packed in the wheel image (a Linux platform
        # on its own architecture; the libraries of native runners arrive as a Directory).
        image, pinned = matrix.pinned(matrix.wheel.image)
        wheels.append(
            WheelJob(
                id=wheel_id(platform_id),
                platform=platform_id,
                os=platform.os,
                arch=platform.arch,
                plat_tag=platform.plat_tag,
                image=image,
                image_pinned=pinned,
                # a Linux platform's own; else where its cross jobs ran (any Linux platform would do)
                dagger_platform=platform.dagger_platform or next((job.dagger_platform for job in built if job.dagger_platform), None),
                runner=platform.runner,
                libraries=[job.library for job in built],
                build_job_ids=[job.id for job in built],
                sources=[p.replace("{package}", tree.package) for p in sources],
                optional_sources=[p.replace("{package}", tree.package) for p in optional],
                package=tree.package,
                vendor=sorted({lib for job in built for lib in job.vendor}),
                cpu_floor=cpu_floor(matrix, platform_id, tree),
            )
        )
    return wheels


def expectations(matrix: Matrix, jobs: Sequence[Job], tree: TreeFacts = DEFAULT_TREE) -> dict[str, Any]:
    """What the audit step checks: per wheel its platform tag and libraries (and whether the tree's
    CMake asks for OpenMP); whether libraries of one backend and architecture must export the same C
    symbols (the tree declares it); exemptions with reasons; per wheel its CPU floor, and whether the
    tree's libraries dispatch at run time (the ISA report's failures, bnb_build.isa_report)."""
    wheels: dict[str, Any] = {}
    exemptions: dict[str, str] = {}
    for wheel in plan_wheels(matrix, jobs, tree):
        libraries = {}
        for job in jobs:
            if job.platform != wheel.platform:
                continue
            libraries[job.library] = {"backend": job.backend, "archs": list(job.archs)}
            if job.openmp_wanted:
                libraries[job.library]["openmp"] = True
            reason = matrix.family(job.family).audit_exemption
            if reason:
                exemptions[job.library] = reason
        wheels[wheel.platform] = {"plat_tag": wheel.plat_tag, "libraries": libraries, "cpu_floor": wheel.cpu_floor}
    return {"wheels": wheels, "exemptions": dict(sorted(exemptions.items())), "symbol_parity": tree.config.symbol_parity,
            "runtime_dispatch": tree.config.runtime_dispatch}  # fmt: skip


# ---- helpers -------------------------------------------------------------------------------------


def _job(matrix: Matrix, name: str, family: Family, version: str | None, platform_id: str, tree: TreeFacts) -> Job:
    platform = matrix.platforms[platform_id]
    archs = list(family.archs_for(platform_id, version))
    cmake_args = _cmake_args(matrix, family, platform_id, archs)
    if tree.config.strip != "debug":  # project.cmake's default keeps the symbol table
        cmake_args.append(f"-DBNB_PIPELINE_STRIP={tree.config.strip}")
    openmp_build = _openmp_build(family, platform_id, platform.runner, tree)
    msvc_reason = _msvc_reason(name, platform.os, tree)
    cross = None if openmp_build or msvc_reason else matrix.cross_toolchain(family, platform_id)
    toolchain_file = None
    if cross is not None:  # a Linux container on any host's architecture, or the host with the tool
        image, pinned = matrix.pinned(cross.image)
        image_gb: float | None = cross.image_size_gb
        runner, dagger_platform = "cross", cross.dagger_platform
        toolchain_file = cross.toolchain_file
        cmake_args.append(f"-D{cross.target_define}={cross.targets[platform_id]}")
    else:
        template = family.image_for(platform_id, version) if platform.runner == "container" else None
        image, pinned = matrix.pinned(template) if template else (None, False)
        image_gb = family.image_size_for(platform_id, version) if template else None
        runner, dagger_platform = platform.runner, platform.dagger_platform
    named = tree.config.sources
    return Job(
        id=job_id(family, version, platform_id),
        family=name,  # type: ignore[arg-type]
        backend=family.backend,
        version=version,
        platform=platform_id,
        os=platform.os,
        arch=platform.arch,
        image=image,
        image_pinned=pinned,
        dagger_platform=dagger_platform,
        runner=runner,  # type: ignore[arg-type]
        archs=archs,
        cmake_args=cmake_args,
        library=matrix.library_name(family, version, platform_id),
        sources=[*(named.common or ()), *(getattr(named, name) or (family.sources if named.common else ()))],
        optional_sources=[] if named.common else [*matrix.sources.common, *family.sources],
        setup=list(family.setup) if image and cross is None else [],
        env=dict(family.env) if image and cross is None else {},
        toolchain=family.toolchain if cross is not None else family.openmp_toolchain if openmp_build else "msvc" if msvc_reason else None,
        toolchain_reason=_toolchain_reason(name, platform.os, tree, msvc_reason, openmp_build),
        toolchain_file=toolchain_file,
        image_gb=image_gb,
        step_python=family.step_python if image and cross is None else "python3",
        compile_memory_gb=family.compile_memory_gb,
        openmp_wanted=tree.uses_openmp and name == "cpu",
        toolkit_components=list(tree.cuda_components) if family.backend == "cuda" else [],
        # what a run-time dependency provides (the tree's runtime-libraries) is left to it, never vendored
        vendor=[v for v in family.vendor if v not in tree.config.runtime_libraries] if openmp_build else [],
    )


def _openmp_build(family: Family, platform_id: str, runner: str, tree: TreeFacts) -> bool:
    """Whether this family builds for `platform_id` with its OpenMP toolchain (gcc in its image): the
    tree asks for it (cpu-toolchain = "gcc"), or uses OpenMP and leaves the choice to the pipeline."""
    if family.openmp_toolchain is None or runner != "container" or family.image_for(platform_id, None) is None:
        return False
    choice = tree.config.cpu_toolchain
    return choice == "gcc" or (choice == "auto" and tree.uses_openmp)


def _msvc_reason(name: str, os: str, tree: TreeFacts) -> str | None:
    """Why a Windows CPU library of this tree is built with MSVC on a Windows runner (None: zig builds
    it): the tree's CMake was written for MSVC there (capabilities.py), and the tree did not ask for zig."""
    if name != "cpu" or os != "windows" or tree.config.cpu_toolchain == "zig":
        return None
    return tree.capabilities.msvc_reason()


def _toolchain_reason(name: str, os: str, tree: TreeFacts, msvc_reason: str | None, openmp_build: bool) -> str:
    if msvc_reason:
        return f"MSVC on a Windows runner, as the tree's CMake expects: {msvc_reason}"
    if openmp_build:
        return "gcc in the manylinux image: the tree asks for OpenMP" if tree.config.cpu_toolchain != "gcc" else "gcc: the tree asks for it (cpu-toolchain)"
    if name == "cpu" and os == "windows":
        return "zig: the tree asks for it (cpu-toolchain)" if tree.config.cpu_toolchain == "zig" else "zig: the tree's CMake builds with MinGW-style clang as it is"
    return ""


def _cmake_args(matrix: Matrix, family: Family, platform_id: str, archs: list[str]) -> list[str]:
    args = [f"-DCOMPUTE_BACKEND={family.backend}", f"-DCMAKE_BUILD_TYPE={family.build_type}"]
    if family.arch_define and archs:
        args.append(f"-D{family.arch_define}={arch_lists.join(archs)}")
    args += [f"-D{key}={value}" for key, value in sorted(family.cmake_defines.items())]
    target = matrix.platforms[platform_id].deployment_target
    if target:
        args.append(f"-DCMAKE_OSX_DEPLOYMENT_TARGET={target}")
    return args


def _override_archs(matrix: Matrix, jobs: list[Job], text: str) -> list[Job]:
    """Replace the arch lists of the GPU jobs: CUDA entries ("75;90") go to CUDA jobs, gfx entries
    ("gfx90a") to ROCm jobs, so one list can narrow both; a job with no entry of its kind keeps its own."""
    try:
        by_backend = arch_lists.split_by_backend(text)
    except ValueError as e:
        raise SelectionError(f"--archs: {e}") from None
    targeted = [job for job in jobs if job.backend in by_backend and matrix.family(job.family).arch_define]
    if not targeted:
        msg = (
            f"--archs {text!r} names {' and '.join(sorted(by_backend))} archs, and the selection has no such job; "
            "select one with --backend cuda or rocm"
        )
        raise SelectionError(msg)
    result = []
    for job in jobs:
        family = matrix.family(job.family)
        if job not in targeted or job.version is None:
            result.append(job)
            continue
        try:
            archs = list(family.check_archs(job.version, arch_lists.parse_arch_list(by_backend[job.backend], job.backend)))
        except ValueError as e:
            msg = f"--archs for {job.id}: {e}"
            raise SelectionError(msg) from None
        cmake_args = _cmake_args(matrix, family, job.platform, archs)
        result.append(job.model_copy(update={"archs": archs, "cmake_args": cmake_args}))
    return result


def check_selection_values(selection: Selection) -> None:
    """Refuse an empty or blank value (SelectionError): an unset variable in `--cuda-version "$V"` must
    not widen the selection to every version (an empty archs list likewise)."""
    for field, values in (("backend", selection.backends), ("version", selection.versions), ("platform", selection.platforms)):
        for value in values:
            if not value.strip():
                msg = (
                    f"{field} {value!r} is empty: name a {field} (`bnb-ci plan` lists them), or leave the option out "
                    f"to select every {field}; an unset variable gives an empty value"
                )
                raise SelectionError(msg)
    if selection.archs is not None and not selection.archs.strip():
        msg = f"archs {selection.archs!r} is empty: name GPU archs, e.g. \"75;90\" or \"gfx942\", or leave the option out to keep the matrix's lists"
        raise SelectionError(msg)


def _named(name: str, family: Family, selection: Selection) -> bool:
    """Whether the selection names this family explicitly (by family or backend name)."""
    return name in selection.backends or family.backend in selection.backends


def _version_selected(name: str, family: Family, version: str | None, selection: Selection) -> bool:
    """Whether `version` of `family` is selected. A requested version applies to the families that have
    it; a family none of them applies to stays whole when the selection names it (`--backend cpu --backend
    cuda --version 13.0.2` keeps cpu) and drops out when it does not (`--version 13.0.2` alone is cuda's)."""
    if not selection.versions:
        return True
    applying = [wanted for wanted in selection.versions if any(matches(known, wanted) for known in family.all_versions())]
    if applying:
        return version is not None and any(matches(version, wanted) for wanted in applying)
    return _named(name, family, selection)


def _selected_families(matrix: Matrix, selection: Selection) -> list[tuple[str, Family]]:
    families = matrix.families()
    if not selection.backends:
        return families
    names = {name: name for name, _ in families} | {family.backend: name for name, family in families}
    for wanted in selection.backends:
        if wanted not in names:
            allowed = [name if family.backend == name else f"{name} ({family.backend})" for name, family in families]
            msg = f"unknown backend {wanted!r}{did_you_mean(wanted, list(names))}; allowed: {allowed_list(allowed)}"
            raise SelectionError(msg)
    chosen = {names[wanted] for wanted in selection.backends}
    return [(name, family) for name, family in families if name in chosen]


def _selected_platforms(matrix: Matrix, selection: Selection) -> list[str]:
    allowed = list(matrix.platforms)
    for wanted in selection.platforms:
        if wanted not in matrix.platforms:
            msg = f"unknown platform {wanted!r}{did_you_mean(wanted, allowed)}; allowed: {allowed_list(allowed)}"
            raise SelectionError(msg)
    return [p for p in allowed if not selection.platforms or p in selection.platforms]


def _check_versions(families: list[tuple[str, Family]], selection: Selection) -> None:
    known = sort_versions({v for _, family in families for v in family.all_versions()})
    for wanted in selection.versions:
        if not any(matches(version, wanted) for version in known):
            names = "/".join(name for name, _ in families)
            msg = f"version {wanted!r} is not in the support matrix for {names}; allowed: {allowed_list(known) or '(none: cpu has no versions)'}"
            raise SelectionError(msg)


def _describe(selection: Selection) -> str:
    parts = [f"{key}={','.join(value)}" for key, value in (
        ("backend", selection.backends), ("version", selection.versions), ("platform", selection.platforms)
    ) if value]  # fmt: skip
    return " ".join(parts) or "(everything)"
