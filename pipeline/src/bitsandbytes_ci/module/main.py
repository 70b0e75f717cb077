"""The Dagger module of the pipeline: thin adapters from the plan to containers.

Every function plans its jobs with plan.py (the same selection options as `bnb-ci`), hands each job
to a stage recipe in `stages/` and returns what the steps produced as a Directory or File. Jobs run
here in Linux containers: runner "container" (Linux libraries in their toolkit's image) and runner
"cross" (libraries of any platform built by a cross toolchain, e.g. the zig CPU builds for Windows and
macOS). Jobs with runner "native-runner" (Windows CUDA/ROCm/XPU) are built on runners of their
platform with `bnb-ci`; their libraries come back through build-wheels' `libs` Directory. Naming a
platform whose selected jobs all need a native runner is an error that says so.

Failures: build-all runs every job to the end and always assembles its result (libs/, wheels/,
tries.md, audit.md, manifest.json, summary.md, failures.md). A Dagger function either returns a value or fails, and when it
fails the CLI exports nothing, so it cannot "write, then fail". Hence: by default build-all (and every
build-* function) fails after all jobs ran, with failures.md as the error message; with
`--keep-going` it returns the Directory even when jobs failed, so `export` writes failures.md next to
whatever did build; the caller (CI) then fails when dist/failures.md exists. A function that can
return failures (`--keep-going`) is cached for the session only, so a persistent engine never serves a
failed result again in a later session; that policy covers the call, not its execs, so a try or audit
that reports a failure is run once more under a new key before it counts (stages/tries.py).
A step that fails or is killed (exit codes 128-191 raise even with expect=ANY) in any container,
setup included, becomes a row of failures.md, never an exception that would hide the other results.
docs/engine-rules.md lists the engine's rules this module relies on, with their sources.

Concurrency: `--jobs N` build jobs at a time (0, the default: as many as the engine's CPUs and memory
allow, shards.jobs_at_once); each job sizes its compile parallelism to its share of the engine
(bnb_build.resources).

CI: `plan --format ci-matrix` splits the jobs into shards that each fit one hosted runner
(shards.py); each shard is one call of a build-<family> function, and `build-all --libs DIR` then packs,
tries and audits every platform's wheel from what the shards and the native runners built.

ccache: each build job mounts its own cache volume `bnb-ccache-<job id>`, which persists on the
engine (a developer's machine keeps it until pruned). Ephemeral CI engines start empty, so the build
functions take an optional `--ccache` Directory (a snapshot from an earlier run, one folder per job
id) that seeds each new volume; when it is given, the result carries an updated snapshot in ccache/,
which CI moves back into its cache before uploading the rest.
"""

import uuid
from dataclasses import replace
from typing import Annotated

import dagger
from bnb_build.errors import UsageError
from bnb_build.inputs import DEFAULT_SOURCE_DATE_EPOCH, check_source_date_epoch
from bnb_build.resources import available_cpus, available_memory_gb
from dagger import DefaultPath, Doc, Ignore, Name, function, object_type

from ..core.listing import render_plan
from ..core.matrix import Matrix, load_matrix
from ..core.plan import DEFAULT_REPOSITORY_URL, DEFAULT_TAG, Job, Selection, dropped_jobs, expectations, plan_jobs, plan_wheels
from ..core.shards import IN_CONTAINERS, jobs_at_once
from ..core.tree import (
    CMAKE_SOURCES,
    DEFAULT_PACKAGE,
    DEFAULT_TREE,
    PYPROJECT,
    TreeConfig,
    TreeError,
    TreeFacts,
    patterns_error,
    tree_config_from_text,
    tree_from_texts,
    wanted_files,
)
from .stages import fanout, images, packaging, release, tries
from .stages.common import SOURCE_IGNORE, load_step_programs
from .stages.fanout import BuildFailed

Source = Annotated[
    dagger.Directory,
    DefaultPath("/"),
    Ignore(SOURCE_IGNORE),
    Doc("the repository; each job copies only the files its plan entry names"),
]
Platforms = Annotated[
    list[str] | None,
    Doc("platform ids, e.g. linux-aarch64 (default: the cross jobs and the container jobs of the engine's own platform, none emulated)"),
]
Archs = Annotated[str, Doc('GPU arch list replacing the matrix\'s, e.g. "75;90" or "gfx942" (checked against the toolkit)')]
Backends = Annotated[list[str] | None, Doc("cpu, cuda, rocm (hip), xpu (default: all)")]
Versions = Annotated[list[str] | None, Doc("toolkit versions, exact or leading part, e.g. 12.8 (default: all)")]
Ccache = Annotated[
    dagger.Directory | None,
    Doc("ccache snapshot from an earlier result (its ccache/ folder): seeds new per-job cache volumes; the result then carries ccache/"),
]
KeepGoing = Annotated[bool, Doc("return the result even when jobs failed (failures.md lists them) instead of failing")]
SourceDateEpoch = Annotated[str, Doc(f"SOURCE_DATE_EPOCH of the wheels (default {DEFAULT_SOURCE_DATE_EPOCH}, as bnb-ci's; e.g. the commit time)")]
Jobs = Annotated[int, Doc("how many build jobs run at the same time (0: as many as the engine's CPUs and memory allow)")]
Libs = Annotated[
    dagger.Directory | None,
    Doc("libraries built earlier (<os>/<arch>/<library> + build-info.json, e.g. the CI shards' and native runners'): build nothing, pack these"),
]


EVERY_IMAGE_TREE = replace(DEFAULT_TREE, config=TreeConfig(cpu_toolchain="gcc"))
"""A tree whose plan uses the images the default plan does not (the CPU images of OpenMP trees)."""


def _select(backends: list[str] | None = None, versions: list[str] | None = None, platforms: list[str] | None = None, archs: str = "") -> Selection:
    return Selection(backends=tuple(backends or ()), versions=tuple(versions or ()), platforms=tuple(platforms or ()), archs=archs or None)


async def _engine_platform() -> str:
    """The engine's own platform, e.g. linux/arm64 (a variant such as /v8 dropped)."""
    return "/".join(str(await dagger.dag.default_platform()).split("/")[:2])


async def _container_jobs(selection: Selection, tree: TreeFacts) -> tuple[Matrix, list[Job]]:
    """The selected jobs that build in Linux containers (own image or cross toolchain); naming a platform
    whose selected jobs all need a native runner is an error.

    With no --platform, only the jobs that run without emulation: the cross jobs (on the engine's own
    platform, whatever their target) and the container jobs of the engine's platform. A job of another
    architecture (e.g. the linux/arm64 CUDA builds on an amd64 laptop: hours under QEMU, with known
    compiler crashes) runs only when its platform is named; CI names it on its native runners."""
    matrix = load_matrix()
    jobs = plan_jobs(matrix, selection, tree)
    container_jobs = [job for job in jobs if job.runner in IN_CONTAINERS]
    elsewhere = sorted({job.platform for job in jobs} - {job.platform for job in container_jobs})
    if selection.platforms and elsewhere:
        msg = f"{', '.join(elsewhere)} build(s) on native runners, not in containers: run `bnb-ci` there"
        raise ValueError(msg)
    if not container_jobs:
        msg = "the selection has no Linux container job; `dagger call plan` lists the jobs and their runners"
        raise ValueError(msg)
    if selection.platforms:
        return matrix, container_jobs
    engine = await _engine_platform()
    native = [job for job in container_jobs if job.runner == "cross" or job.dagger_platform == engine]
    if not native:
        emulated = sorted({job.platform for job in container_jobs})
        msg = (f"the selection has no job that builds on the engine's platform {engine} without emulation; "
               f"name --platform ({', '.join(emulated)}) to build under emulation")  # fmt: skip
        raise ValueError(msg)
    return matrix, native


def _epoch(value: str) -> str:
    """A SOURCE_DATE_EPOCH option: whole seconds since 1970-01-01 UTC that a zip entry can hold (as bnb-ci's)."""
    try:
        return check_source_date_epoch(value)
    except UsageError as e:
        raise ValueError(str(e)) from None


def _limit(jobs: int, planned: list[Job]) -> int:
    """--jobs, or (0) as many build jobs as the engine's CPUs and memory allow."""
    if jobs < 0:
        msg = f"--jobs {jobs} is not allowed: give a positive number, or 0 for as many as the engine's CPUs and memory allow"
        raise ValueError(msg)
    if jobs:
        return jobs
    compile_memory = max((job.compile_memory_gb for job in planned), default=1.0)
    return jobs_at_once(len(planned), cpus=available_cpus(), memory_gb=available_memory_gb(), compile_memory_gb=compile_memory)


def _python_image(matrix: Matrix) -> str:
    return matrix.pinned(matrix.wheel.image)[0]


async def _prepare(source: dagger.Directory) -> TreeFacts:
    """What every function that runs a step needs first: the step programs (content-hashed, see
    stages/common.py) and the tree's facts."""
    await load_step_programs()
    return await _tree(source)


async def _tree(source: dagger.Directory) -> TreeFacts:
    """What the plan needs to know of the tree in `source` (tree.py): the same texts the host reads.
    A folder with no CMakeLists.txt or no package, or a source pattern that selects nothing, is refused."""

    async def text(path: str) -> str | None:
        return await source.file(path).contents() if await source.exists(path) else None

    if not await source.exists("CMakeLists.txt"):
        msg = "the source is not a tree the pipeline can build: it has no CMakeLists.txt (the native library's build)"
        raise TreeError(msg)
    package = tree_config_from_text(await text(PYPROJECT)).package or DEFAULT_PACKAGE
    texts = {path: found for path in wanted_files(package) if (found := await text(path)) is not None}
    cmake_files: list[str] = []
    for pattern in CMAKE_SOURCES:  # the CMake files: "CMakeLists.txt", "cmake/**", ... as globs of CMake file names
        folder = pattern.removesuffix("**")
        cmake_files += [pattern] if folder == pattern else [*await source.glob(f"{folder}**/*.cmake"), *await source.glob(f"{folder}**/CMakeLists.txt")]
    for path in cmake_files:
        texts.setdefault(path, await text(path) or "")
    facts = tree_from_texts(texts)
    if f"{facts.package}/__init__.py" not in texts:
        msg = f"the source has no Python package {facts.package!r} (no {facts.package}/__init__.py); name it with `package = \"...\"` under [tool.bitsandbytes-ci]"
        raise TreeError(msg)
    missing = [p for p in facts.config.sources.named() if not await source.glob(p)]
    if missing:
        raise TreeError(patterns_error(missing, "the source"))
    return facts


async def _version(source: dagger.Directory, tree: TreeFacts, python_image: str) -> str:
    """The tree's version: what its files state, else what its PEP 517 backend says (a step)."""
    return tree.version or (await packaging.version(python_image, source, tree.package).stdout()).strip().splitlines()[-1]


async def _libraries(selection: Selection, source: dagger.Directory, ccache: dagger.Directory | None, jobs: int) -> dagger.Directory:
    matrix, planned = await _container_jobs(selection, await _prepare(source))
    outcome = await fanout.build_libraries(planned, source, python_image=_python_image(matrix), seed=ccache, limit=_limit(jobs, planned))
    if outcome.failures:
        raise BuildFailed(fanout.failures_md(outcome.failures))
    return fanout.libraries_result(outcome, planned)


@object_type
class BitsandbytesCi:
    """Build, pack, try, audit and release bitsandbytes from the support matrix, one container per job."""

    @function
    async def plan(self, source: Source, backend: Backends = None, version: Versions = None, platform: Platforms = None, archs: Archs = "",
                   format_: Annotated[str, Name("format"), Doc("table, json (every job), markdown (the support matrix) or ci-matrix (the CI shards)")] = "table") -> str:  # fmt: skip
        """List the jobs the matrix yields for a selection and the tree in `source` (every platform, with its runner and image)."""
        matrix, tree = load_matrix(), await _tree(source)
        jobs = plan_jobs(matrix, _select(backend, version, platform, archs), tree)
        return render_plan(format_, matrix, jobs, plan_wheels(matrix, jobs, tree), dropped_jobs(matrix, _select(backend, version, platform, archs), tree))

    @function
    async def build_cpu(self, source: Source, platform: Platforms = None, ccache: Ccache = None, jobs: Jobs = 0) -> dagger.Directory:
        """Build the CPU library per platform with the zig cross toolchain: <os>/<arch>/libbitsandbytes_cpu.so/.dll/.dylib (+ build-info.json)."""
        return await _libraries(_select(["cpu"], platforms=platform), source, ccache, jobs)

    @function
    async def build_cuda(self, source: Source, cuda_version: Annotated[str | None, Doc("e.g. 12.8 (default: all; an empty value is refused)")] = None,
                         platform: Platforms = None, archs: Archs = "", ccache: Ccache = None, jobs: Jobs = 0) -> dagger.Directory:  # fmt: skip
        """Build the CUDA libraries: <os>/<arch>/libbitsandbytes_cuda<MM>.so (+ build-info.json)."""
        return await _libraries(_select(["cuda"], [cuda_version] if cuda_version is not None else None, platform, archs), source, ccache, jobs)

    @function
    async def build_rocm(self, source: Source, rocm_version: Annotated[str | None, Doc("e.g. 7.0 (default: all; an empty value is refused)")] = None,
                         platform: Platforms = None, archs: Archs = "", ccache: Ccache = None, jobs: Jobs = 0) -> dagger.Directory:  # fmt: skip
        """Build the ROCm libraries: <os>/<arch>/libbitsandbytes_rocm<MM>.so (+ build-info.json)."""
        return await _libraries(_select(["rocm"], [rocm_version] if rocm_version is not None else None, platform, archs), source, ccache, jobs)

    @function
    async def build_xpu(self, source: Source, oneapi_version: Annotated[str | None, Doc("e.g. 2025 (default: all; an empty value is refused)")] = None,
                        platform: Platforms = None, ccache: Ccache = None, jobs: Jobs = 0) -> dagger.Directory:  # fmt: skip
        """Build the Intel XPU (SYCL) libraries: <os>/<arch>/libbitsandbytes_xpu<YEAR>.so (+ build-info.json)."""
        return await _libraries(_select(["xpu"], [oneapi_version] if oneapi_version is not None else None, platform), source, ccache, jobs)

    @function
    async def build_wheels(self, libs: Annotated[dagger.Directory, Doc("built libraries: <os>/<arch>/libbitsandbytes_*")],
                           source: Source, platform: Platforms = None,
                           source_date_epoch: SourceDateEpoch = DEFAULT_SOURCE_DATE_EPOCH) -> dagger.Directory:  # fmt: skip
        """Pack one wheel per platform from built libraries (py3-none-<platform tag>); `libs` may hold the
        libraries of native runners too (e.g. Windows CUDA DLLs built with `bnb-ci build-cuda`)."""
        matrix, tree = load_matrix(), await _prepare(source)
        wheels = plan_wheels(matrix, plan_jobs(matrix, _select(platforms=platform), tree), tree)
        outcome = fanout.Outcome()
        await fanout.build_wheels(wheels, source, libs, outcome, source_date_epoch=_epoch(source_date_epoch))
        if outcome.failures:
            raise BuildFailed(fanout.failures_md(outcome.failures))
        return fanout.merge(outcome.outputs, [w.id for w in wheels])

    @function(cache="session")  # pyright: ignore[reportCallIssue]  # cache= is missing from the SDK's overloads
    async def test_wheels(self, wheels: Annotated[dagger.Directory, Doc("folder of .whl files")], source: Source,
                          keep_going: KeepGoing = False) -> dagger.File:  # fmt: skip
        """Install each wheel into a clean environment of its platform (linux/arm64 through the engine's
        emulation, Windows x64 under Wine) and run the tree's try-script; returns tries.md."""
        names = [name for name in await wheels.glob("*.whl") if "/" not in name]
        if not names:
            msg = "--wheels holds no wheel (*.whl); build them first (dagger call build-all, or build-wheels)"
            raise ValueError(msg)
        tree = await _prepare(source)
        run = await tries.run(load_matrix(), source, wheels, names, script=tree.config.try_script, tree=tree)
        if run.exit_code != 0 and not keep_going:
            raise BuildFailed(run.report)
        return dagger.dag.directory().with_new_file("tries.md", run.report).file("tries.md")

    @function(cache="session")  # pyright: ignore[reportCallIssue]  # cache= is missing from the SDK's overloads
    async def audit_wheels(self, wheels: Annotated[dagger.Directory, Doc("folder of .whl files")], source: Source,
                           platform: Platforms = None, archs: Archs = "", keep_going: KeepGoing = False) -> dagger.File:  # fmt: skip
        """Check wheels against the plan (platform tag, libraries, arch lists); returns audit.md."""
        tree = await _prepare(source)
        matrix, jobs = await _container_jobs(_select(platforms=platform, archs=archs), tree)
        audit = await fanout.run_audit(_python_image(matrix), source, wheels, expectations(matrix, jobs, tree))
        if audit.exit_code != 0 and not keep_going:
            raise BuildFailed(await audit.report.contents())
        return audit.report

    @function(cache="session")  # pyright: ignore[reportCallIssue]  # cache= is missing from the SDK's overloads
    async def build_all(self, source: Source, platform: Platforms = None, backend: Backends = None, version: Versions = None,
                        archs: Archs = "", ccache: Ccache = None, keep_going: KeepGoing = False,
                        source_date_epoch: SourceDateEpoch = DEFAULT_SOURCE_DATE_EPOCH, jobs: Jobs = 0, libs: Libs = None) -> dagger.Directory:  # fmt: skip
        """Every Linux library, then the wheels, then their tries and audit: libs/, wheels/, tries.md,
        audit.md, manifest.json, summary.md, failures.md when something failed (see the module's notes on
        failures and --keep-going). With --libs, nothing is built: every planned library of every
        platform (native runners' too) is taken from there, as the final CI job does."""
        selection, tree = _select(backend, version, platform, archs), await _prepare(source)
        if libs is None:
            matrix, planned = await _container_jobs(selection, tree)
        else:
            matrix = load_matrix()
            planned = plan_jobs(matrix, selection, tree)
        image = _python_image(matrix)
        settings = fanout.Settings(python_image=image, version=await _version(source, tree, image), source_date_epoch=_epoch(source_date_epoch),
                                   tree=tree, limit=_limit(jobs, planned), seed=ccache)  # fmt: skip
        result, failures = await fanout.build_all(matrix, planned, plan_wheels(matrix, planned, tree), source, settings, libs=libs)
        if failures and not keep_going:
            raise BuildFailed(fanout.failures_md(failures))
        return result

    @function(cache="never")  # pyright: ignore[reportCallIssue]  # cache= is missing from the SDK's overloads
    async def verify_reproducible(self, source: Source, platform: Platforms = None, backend: Backends = None,
                                  version: Versions = None, archs: Archs = "",
                                  source_date_epoch: SourceDateEpoch = DEFAULT_SOURCE_DATE_EPOCH,
                                  keep_going: Annotated[bool, Doc("return the report even when artifacts differ")] = False,
                                  jobs: Jobs = 0) -> str:  # fmt: skip
        """Build the selection twice (as build-all) and compare every artifact's digest: libraries, wheels,
        audit.md, manifest.json. The second build bypasses the engine's cache for every step (a cache-buster
        variable) and runs without ccache. Returns the report; fails when an artifact differs."""
        tree = await _prepare(source)
        matrix, planned = await _container_jobs(_select(backend, version, platform, archs), tree)
        image = _python_image(matrix)
        settings = fanout.Settings(python_image=image, version=await _version(source, tree, image), source_date_epoch=_epoch(source_date_epoch),
                                   tree=tree, limit=_limit(jobs, planned))  # fmt: skip
        builds = []
        for fresh in (None, fanout.fresh_env(uuid.uuid4().hex)):
            result, failures = await fanout.build_all(matrix, planned, plan_wheels(matrix, planned, tree), source, replace(settings, fresh=fresh))
            if failures:
                raise BuildFailed(fanout.failures_md(failures))
            builds.append(await fanout.file_digests(result))
        report, same = fanout.reproducibility_report(builds[0], builds[1])
        if not same and not keep_going:
            raise BuildFailed(report)
        return report

    @function(cache="never")  # pyright: ignore[reportCallIssue]  # cache= is missing from the SDK's overloads
    async def lock_images(self) -> dagger.File:
        """Resolve every image's digest through the engine; returns images.lock.toml to commit
        (pipeline/src/bitsandbytes_ci/core/images.lock.toml)."""
        matrix = load_matrix()
        # every image the matrix can use: the OpenMP trees' CPU images too
        jobs = [*plan_jobs(matrix), *plan_jobs(matrix, tree=EVERY_IMAGE_TREE)]
        return images.as_file(await images.lock_file([*jobs, *plan_wheels(matrix, jobs)]))

    @function(cache="never")  # pyright: ignore[reportCallIssue]  # cache= is missing from the SDK's overloads
    async def pre_release(self, wheels: Annotated[dagger.Directory, Doc("folder of .whl files (the wheels/ of build-all)")],
                          token: Annotated[dagger.Secret, Doc("GitHub token with contents: write (GITHUB_TOKEN)")],
                          repository: Annotated[str, Doc("OWNER/NAME of the GitHub repository")],
                          commit: Annotated[str, Doc("full commit id the wheels were built from")], source: Source,
                          tag: Annotated[str, Doc("the rolling pre-release's tag")] = DEFAULT_TAG, platform: Platforms = None,
                          backend: Backends = None, version: Versions = None, archs: Archs = "") -> dagger.Directory:  # fmt: skip
        """Replace the rolling GitHub pre-release with the wheels (steps `pre-release`, then `github-release`),
        checked against the selection's plan (every platform's wheel with all its libraries, native
        runners' too); returns what was published: renamed wheels, body.md, release.json."""
        matrix, tree = load_matrix(), await _prepare(source)
        jobs = plan_jobs(matrix, _select(backend, version, platform, archs), tree)
        out = release.pre_release(_python_image(matrix), source, wheels, expectations(matrix, jobs, tree),
                                  token=token, repository=repository, commit=commit, tag=tag)  # fmt: skip
        return await out.sync()

    @function(cache="never")  # pyright: ignore[reportCallIssue]  # cache= is missing from the SDK's overloads
    async def publish(self, wheels: Annotated[dagger.Directory, Doc("folder of .whl files (the wheels/ of build-all)")], source: Source,
                      token: Annotated[dagger.Secret | None, Doc("package index API token (PYPI_TOKEN)")] = None,
                      oidc_request_url: Annotated[dagger.Secret | None, Doc("trusted publishing: $ACTIONS_ID_TOKEN_REQUEST_URL")] = None,
                      oidc_request_token: Annotated[dagger.Secret | None, Doc("trusted publishing: $ACTIONS_ID_TOKEN_REQUEST_TOKEN")] = None,
                      repository_url: Annotated[str, Doc("upload endpoint of the index")] = DEFAULT_REPOSITORY_URL,
                      platform: Platforms = None, backend: Backends = None, version: Versions = None, archs: Archs = "") -> str:  # fmt: skip
        """Upload the wheels to the package index (step `bnb_build publish`, files already there are skipped),
        checked against the selection's plan (every platform's wheel with all its libraries); by API token,
        or by trusted publishing when the OIDC secrets are given."""
        matrix, tree = load_matrix(), await _prepare(source)
        jobs = plan_jobs(matrix, _select(backend, version, platform, archs), tree)
        ctr = release.publish(_python_image(matrix), source, wheels, expectations(matrix, jobs, tree), repository_url=repository_url,
                              token=token, oidc_request_url=oidc_request_url, oidc_request_token=oidc_request_token)  # fmt: skip
        return await ctr.stdout()
