"""CI shards: the plan's jobs split into pieces that each fit one hosted runner. Pure.

Glossary
- shard: the container and cross jobs that one CI job builds with one `dagger call` (one of the
  build-<family> functions, with the selection that plans exactly those jobs);
- native row: one native-runner job (Windows GPU libraries), built with `bnb-ci` on a runner of its
  platform after `bnb-ci install-toolkit` installed its toolkit;
- the final CI job then packs, tries, audits and releases every platform's wheel from what the shards
  and native rows built (`build-all --libs`).

Rules, from matrix.toml `[ci]`:
- a shard holds at most one large image (`size_gb >= large_image_gb`): every (family, version, Dagger
  platform) on a large image is a shard of its own; jobs on small images share one shard per family
  and Dagger platform (the zig CPU builds for all five platforms run in one);
- a shard runs on the hosted runner of its Dagger platform (`linux_runners`), so linux/arm64 jobs build
  on arm64 runners, natively;
- it needs its image, the compressed layers the engine keeps beside it (`compressed_layers_share` of
  the image) and `build_headroom_gb` (`disk_gb_needed`); that must fit the larger of the runner's two
  disks once the make-room step ran (`engine_disk_gb` on /mnt, `disk_after_cleanup_gb` on /). A
  shard that does not fit `disk_gb` makes room first (`free_disk`): the engine's state moves to /mnt;
- how many of its jobs run at once: the runner's memory over what one job's compiles take.

Worked example: CUDA 12.8 on linux-aarch64 is one job on a 9 GB image, so one shard:

    >>> from bitsandbytes_ci.core.matrix import load_matrix
    >>> from bitsandbytes_ci.core.plan import Selection, plan_jobs
    >>> matrix = load_matrix()
    >>> [shard] = plan_shards(matrix, plan_jobs(matrix, Selection(backends=("cuda",), versions=("12.8",), platforms=("linux-aarch64",))))
    >>> shard.id, shard.runs_on, shard.call, shard.free_disk, shard.disk_gb_needed
    ('cuda128-linux-aarch64', 'ubuntu-24.04-arm', 'build-cuda --cuda-version=12.8.1 --platform=linux-aarch64 --jobs=1', True, 20)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from .errors import SelectionError
from .matrix import Matrix
from .plan import Job

IN_CONTAINERS = ("container", "cross")
"""The runners whose jobs the Dagger module runs (in Linux containers)."""

VERSION_OPTIONS = {"cuda": "cuda-version", "rocm": "rocm-version", "xpu": "oneapi-version"}
"""The option of `build-<family>` that names a toolkit version (the same in Dagger and `bnb-ci`)."""


class Shard(BaseModel):
    """The container/cross jobs one CI job builds with one `dagger call`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    runs_on: str
    dagger_platform: str
    job_ids: list[str]
    image_gb: float
    disk_gb_needed: int  # image, its compressed layers and the build headroom, rounded up
    free_disk: bool
    jobs_at_once: int
    call: str

    def row(self) -> dict[str, Any]:
        """The shard as one row of the workflow's `build` matrix (`disk-gb`: what the make-room step checks)."""
        return {"shard": self.id, "runs-on": self.runs_on, "free-disk": self.free_disk, "disk-gb": self.disk_gb_needed, "call": self.call}


class NativeRow(BaseModel):
    """One native-runner job: install its toolkit, then build it with `bnb-ci`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    runs_on: str
    install: str
    build: str

    def row(self) -> dict[str, Any]:
        return {"job": self.id, "runs-on": self.runs_on, "install": self.install, "build": self.build}


def plan_shards(matrix: Matrix, jobs: Sequence[Job]) -> list[Shard]:
    """The container and cross jobs of `jobs`, grouped into shards (in plan order)."""
    groups: dict[tuple[str, str | None, str], list[Job]] = {}
    sizes: dict[tuple[str, str | None, str], float] = {}
    for job in jobs:
        if job.runner not in IN_CONTAINERS:
            continue
        size = image_size(matrix, job)
        large = size >= matrix.ci.large_image_gb
        assert job.dagger_platform is not None, job.id
        key = (job.family, job.version if large else None, job.dagger_platform)
        groups.setdefault(key, []).append(job)
        sizes[key] = max(sizes.get(key, 0.0), size)
    return [_shard(matrix, group, sizes[key]) for key, group in groups.items()]


def plan_native_rows(matrix: Matrix, jobs: Sequence[Job]) -> list[NativeRow]:
    """One row per native-runner job of `jobs`."""
    rows = []
    for job in jobs:
        if job.runner != "native-runner":
            continue
        runner = matrix.ci.native_runners.get(job.platform)
        if runner is None:
            msg = f"{job.id} builds on a native runner, and matrix.toml [ci].native_runners names none for {job.platform}"
            raise SelectionError(msg)
        version = f" --{VERSION_OPTIONS[job.family]} {job.version}" if job.version else ""
        rows.append(
            NativeRow(
                id=job.id,
                runs_on=runner,
                # a CPU library (MSVC, a tree written for it) needs no toolkit: the runner's Visual Studio builds it
                install="" if job.version is None else f"bnb-ci install-toolkit --backend {job.family} --version {job.version} --platform {job.platform}",
                build=f"bnb-ci build-{job.family} --platform {job.platform}{version} --out libs",
            )
        )
    return rows


def ci_matrix(matrix: Matrix, jobs: Sequence[Job]) -> dict[str, Any]:
    """What `plan --format ci-matrix` prints: the rows of the workflow's `build` and `build-native` jobs."""
    return {
        "build": {"include": [shard.row() for shard in plan_shards(matrix, jobs)]},
        "build-native": {"include": [row.row() for row in plan_native_rows(matrix, jobs)]},
    }


def image_size(matrix: Matrix, job: Job) -> float:
    """The approximate unpacked size (GB) of the image a container or cross job pulls."""
    assert job.image_gb is not None, job.id  # the matrix loader checks that every container job has an image
    return job.image_gb


def pull_size(jobs: Sequence[Job]) -> float:
    """What the distinct images of `jobs` take on an engine's disk (GB): one copy per image and platform."""
    return sum({(job.image, job.dagger_platform): job.image_gb or 0.0 for job in jobs if job.runner in IN_CONTAINERS and job.image}.values())


def disk_needed(matrix: Matrix, image_gb: float) -> float:
    """The disk (GB) a shard on an image of `image_gb` needs on its engine's disk: the unpacked image,
    the compressed layers the engine keeps beside it, and the build headroom."""
    ci = matrix.ci
    return round(image_gb * (1 + ci.compressed_layers_share) + ci.build_headroom_gb, 2)


def jobs_at_once(n_jobs: int, *, cpus: int, memory_gb: float, compile_memory_gb: float) -> int:
    """How many build jobs run at the same time on a machine with `cpus` and `memory_gb`: each job gets
    at least two CPUs' worth of compiles, and the compiles of all running jobs fit the memory."""
    by_cpus = max(1, cpus // 2)
    by_memory = max(1, int(memory_gb // (2 * compile_memory_gb)))
    return max(1, min(n_jobs, by_cpus, by_memory))


def _shard(matrix: Matrix, jobs: list[Job], size: float) -> Shard:
    ci = matrix.ci
    first = jobs[0]
    needed = disk_needed(matrix, size)
    room = max(ci.engine_disk_gb, ci.disk_after_cleanup_gb)
    if needed > room:
        msg = (
            f"the jobs {', '.join(j.id for j in jobs)} need about {needed:g} GB of disk (image {size:g} GB + its compressed "
            f"layers {size * ci.compressed_layers_share:g} GB + {ci.build_headroom_gb:g} GB headroom), more than a hosted "
            f"runner has once its make-room step ran ({room:g} GB); use a larger runner or split the image"
        )
        raise SelectionError(msg)
    platforms = list(dict.fromkeys(j.platform for j in jobs))
    versions = list(dict.fromkeys(j.version for j in jobs if j.version))
    family = matrix.family(first.family)
    at_once = jobs_at_once(len(jobs), cpus=ci.cpus, memory_gb=ci.memory_gb, compile_memory_gb=family.compile_memory_gb)
    call = [f"build-{first.family}"]
    if len(versions) == 1:
        call.append(f"--{VERSION_OPTIONS[first.family]}={versions[0]}")
    if platforms != family.all_platforms():
        call.append(f"--platform={','.join(platforms)}")
    call.append(f"--jobs={at_once}")
    assert first.dagger_platform is not None
    if len(jobs) == 1:
        shard_id = first.id
    elif all(j.runner == "cross" for j in jobs):
        shard_id = f"{first.family}-cross"
    else:
        shard_id = f"{first.family}-{first.dagger_platform.replace('/', '-')}"
    return Shard(
        id=shard_id,
        runs_on=ci.linux_runners[first.dagger_platform],  # type: ignore[index]
        dagger_platform=first.dagger_platform,
        job_ids=[j.id for j in jobs],
        image_gb=size,
        disk_gb_needed=math.ceil(needed),
        free_disk=needed > ci.disk_gb,
        jobs_at_once=at_once,
        call=" ".join(call),
    )
