"""The output directory of a host run: checked, written atomically, described by manifest.json.

Every file goes to a temporary name beside its destination (`.<name>.<random>.tmp`, written by
bnb_build.files) and is then `os.replace`d, so a reader (or an interrupted run) sees either the previous complete file or the new
complete one, never a partial one. Leftover temporary files of a killed run are removed by the next
one. manifest.json is written last: when it is there, everything it lists is complete.

build-all output (`publish_build_all`):

    DIR/libs/<os>/<arch>/<library> (+ .build-info.json)   every library that built
    DIR/wheels/*.whl    one wheel per platform that was packed (files of an earlier run are removed)
    DIR/wheels/INCOMPLETE.md   only when wheels were packed while jobs failed (--keep-going): the
                        release steps refuse such a set (bnb_build.release.INCOMPLETE_MARKER)
    DIR/audit.md        the audit report (when wheels were audited)
    DIR/manifest.json   artifacts (path, sha256, size) and every job (status, reason, build-info, digest)
    DIR/failures.md     only when something failed

build-cpu/-cuda/-rocm/-xpu output (`publish_libraries`): `DIR/<os>/<arch>/<library>` and its
`<library>.build-info.json` (docs/contracts.md), the library first, its build-info last.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bnb_build import manifest as manifest_step
from bnb_build.files import copy_atomic, write_text_atomic
from bnb_build.release import INCOMPLETE_MARKER, incomplete_notice

from ..core.errors import PipelineError
from ..core.matrix import Matrix
from ..core.results import JobResult, render_failures

MANIFEST_SCHEMA = manifest_step.MANIFEST_SCHEMA
LIBS_SUBDIR = "libs"
WHEELS_SUBDIR = "wheels"
BUILD_INFO_SUFFIX = ".build-info.json"
_TMP_GLOB = ".*.tmp"


class OutputError(PipelineError):
    """The output directory cannot be used (it is a file, or not writable)."""

    exit_code = 2


# ---- atomic writes ----------------------------------------------------------------------------


def check_out_dir(path: Path, *, option: str = "--out") -> Path:
    """`path` as an absolute directory path; raises OutputError when it names a file."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        msg = f"{option} {path} is a file, not a directory; pass a directory (it is created when missing)"
        raise OutputError(msg)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                msg = f"{option} {path}: {parent} is a file, so the directory cannot be created there"
                raise OutputError(msg)
            break
    return path


def remove_leftovers(root: Path) -> None:
    """Temporary files a killed run left below `root`."""
    if root.is_dir():
        for tmp in root.rglob(_TMP_GLOB):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


def render_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


# ---- wheels and platforms ---------------------------------------------------------------------


def _tag_family(tag: str) -> str:
    """A platform tag without the version it promises: manylinux_2_34_x86_64 -> manylinux_x86_64."""
    return re.sub(r"^(manylinux|macosx)_\d+_\d+_", r"\1_", tag)


def wheel_tag(filename: str) -> str:
    """The platform tag of a wheel file name (name-version-py-abi-platform.whl)."""
    return filename.removesuffix(".whl").rsplit("-", 1)[-1]


def wheel_platform(filename: str, matrix: Matrix) -> str | None:
    """The matrix platform a wheel file is for (a raised manylinux tag still names its platform)."""
    family = _tag_family(wheel_tag(filename))
    return next((pid for pid, p in matrix.platforms.items() if _tag_family(p.plat_tag) == family), None)


def raised_tag(aimed: str, produced: str) -> bool:
    """Whether `produced` is `aimed` with a newer glibc (the wheel step raises the tag of a Linux wheel
    whose libraries need a newer glibc than the aimed tag promises, e.g. when built on this host)."""
    a = re.match(r"^manylinux_(\d+)_(\d+)_(\w+)$", aimed)
    p = re.match(r"^manylinux_(\d+)_(\d+)_(\w+)$", produced)
    return bool(a and p and a.group(3) == p.group(3) and (int(p[1]), int(p[2])) > (int(a[1]), int(a[2])))


# ---- manifest ---------------------------------------------------------------------------------


def job_entry(result: JobResult, *, inputs_digest: str | None = None) -> dict[str, Any]:
    """A job as the manifest step's jobs.json lists it: no durations, no absolute paths, nothing about
    the cache, so two runs of the same inputs (cold or cached, in any folder) agree."""
    entry: dict[str, Any] = {"id": result.job_id, "kind": result.kind, "status": result.status}
    if result.platform:
        entry["platform"] = result.platform
    if result.reason:
        entry["reason"] = result.reason
    if result.artifact is not None and result.status == "built":
        entry["artifact"] = result.artifact.name
    if result.exit_code is not None:
        entry["exit_code"] = result.exit_code
    if result.notes:
        entry["notes"] = list(result.notes)
    digest = result.inputs_digest or inputs_digest
    if digest is not None:
        entry["inputs_digest"] = digest
    return entry


def jobs_document(results: Sequence[JobResult], *, digests: Mapping[str, str], version: str, source_date_epoch: str) -> dict[str, Any]:
    """jobs.json of the manifest step (`python3 -m bnb_build manifest --dist DIR --jobs jobs.json`)."""
    return {
        "version": version,
        "source_date_epoch": source_date_epoch,
        "jobs": [job_entry(r, inputs_digest=digests.get(r.job_id)) for r in results],
    }


# ---- publishing -------------------------------------------------------------------------------


def publish_build_all(
    out_dir: Path,
    *,
    wheels: Iterable[tuple[Path, str]],
    reports: Mapping[str, Path | None],
    results: Sequence[JobResult],
    digests: Mapping[str, str],
    version: str,
    source_date_epoch: str,
) -> Path:
    """Write the build-all outputs into `out_dir` (see the module doc); returns the manifest path.

    `wheels` holds (wheel file, platform id) pairs from the work directories.
    """
    remove_leftovers(out_dir)
    publish_libraries(out_dir / LIBS_SUBDIR, results, replace_all=True)
    wheel_dir = out_dir / WHEELS_SUBDIR
    wheels = list(wheels)
    mark_wheel_set(wheel_dir, results, packed=bool(wheels))
    written: set[str] = set()
    for wheel, _platform in wheels:
        dest = wheel_dir / wheel.name
        copy_atomic(wheel, dest)
        written.add(dest.name)
    if wheel_dir.is_dir():
        for stale in wheel_dir.glob("*.whl"):
            if stale.name not in written:
                stale.unlink()
    for name, report in reports.items():  # tries.md, audit.md
        if report is not None:
            copy_atomic(report, out_dir / name)
        else:
            (out_dir / name).unlink(missing_ok=True)
    failures = out_dir / "failures.md"
    if any(r.failed for r in results):
        write_text_atomic(failures, render_failures(results))
    else:
        failures.unlink(missing_ok=True)
    # The manifest step's own code (bnb_build.manifest), as the Dagger function runs it in a container.
    return manifest_step.write(out_dir, jobs_document(results, digests=digests, version=version, source_date_epoch=source_date_epoch))


def mark_wheel_set(wheel_dir: Path, results: Sequence[JobResult], *, packed: bool) -> None:
    """Write wheel_dir/INCOMPLETE.md, before any wheel is copied, when wheels are `packed` although a
    job of the run failed; remove an earlier one otherwise. bnb_build.release refuses a marked set."""
    marker = wheel_dir / INCOMPLETE_MARKER
    failed = [r.job_id for r in results if r.failed]
    if not (failed and packed):
        marker.unlink(missing_ok=True)
        return
    write_text_atomic(marker, incomplete_notice(failed))


def publish_libraries(out_dir: Path, results: Sequence[JobResult], *, replace_all: bool = False) -> list[Path]:
    """Copy each built library and its build-info into `out_dir/<os>/<arch>/`; return the libraries.

    With `replace_all`, `out_dir` belongs to this run: files of earlier runs are removed.
    """
    remove_leftovers(out_dir)
    written: list[Path] = []
    for r in results:
        if r.kind != "library" or r.status != "built" or r.artifact is None:
            continue
        subdir = r.artifact.parent.relative_to(r.artifact.parent.parent.parent)
        dest = out_dir / subdir / r.artifact.name
        copy_atomic(r.artifact, dest, mode=0o755)
        info = r.artifact.with_name(r.artifact.name + BUILD_INFO_SUFFIX)
        copy_atomic(info, dest.with_name(dest.name + BUILD_INFO_SUFFIX))
        written.append(dest)
    if replace_all and out_dir.is_dir():
        keep = {*written, *(w.with_name(w.name + BUILD_INFO_SUFFIX) for w in written)}
        for old in out_dir.rglob("*"):
            if old.is_file() and old not in keep:
                old.unlink()
    return written


def publish_file(src: Path, dest: Path) -> Path:
    remove_leftovers(dest.parent)
    copy_atomic(src, dest)
    return dest


def publish_wheels(out_dir: Path, wheels: Iterable[tuple[Path, str]], matrix: Matrix) -> list[Path]:
    """Copy wheels into `out_dir`, replacing earlier wheels of the same platforms; return the copies."""
    remove_leftovers(out_dir)
    wheels = list(wheels)
    platforms = {platform for _, platform in wheels}
    names = {wheel.name for wheel, _ in wheels}
    written = []
    for wheel, _ in wheels:
        copy_atomic(wheel, out_dir / wheel.name)
        written.append(out_dir / wheel.name)
    if out_dir.is_dir():
        for old in out_dir.glob("*.whl"):
            if old.name not in names and wheel_platform(old.name, matrix) in platforms:
                old.unlink()
    return written
