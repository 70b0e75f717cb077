"""The output directory of a host run: checked, written atomically, described by manifest.json.

Checked before any job runs (`check_out_dir`): `--out` must not be the source tree, a folder that
holds it, the file system root or the home folder; build-all's `--out` must be missing, empty or an
earlier build-all output (it holds our manifest.json), because build-all replaces it; and it must be
writable (a file is created there and removed). Each refusal is an OutputError (exit code 2) naming
the path and why.

Every file goes to a temporary name beside its destination (`.<name>.<random>.tmp`, written by
bnb_build.files) and is then `os.replace`d, so a reader (or an interrupted run) sees either the previous complete file or the new
complete one, never a partial one. Leftover temporary files of a killed run (only names this module
writes, only where it writes them) are removed by the next one. manifest.json is written last: when
it is there, everything it lists is complete.

build-all assembles its whole output in a staging folder first (`.bnb-staging-<random>` inside
`--out`, or beside it when `--out` does not exist yet) and switches it into place only when it is
complete (`switch_into_place`); a failed write removes the staging folder and leaves the previous
output whole (OutputError naming the path and the OS error). The files of the previous output are
those its manifest lists (`earlier_output_files`: the artifacts, each library's build-info, and the
reports, summary, failures and manifest themselves); any other file in `--out` (one the user put
there) is carried over into the new output, never deleted.

build-all output (`publish_build_all`):

    DIR/libs/<os>/<arch>/<library> (+ .build-info.json)   every library that built
    DIR/wheels/*.whl    one wheel per platform that was packed
    DIR/wheels/INCOMPLETE.md   only when wheels were packed while jobs failed (--keep-going): the
                        release steps refuse such a set (bnb_build.release.INCOMPLETE_MARKER)
    DIR/audit.md        the audit report (when wheels were audited)
    DIR/manifest.json   artifacts (path, sha256, size) and every job (status, reason, build-info, digest)
    DIR/failures.md     only when something failed (written only with --keep-going: a failed run
                        without it keeps the previous output, verbs.build_all)
    DIR/summary.md      the run's summary (verbs.write_summary, written into the staging folder too)

build-cpu/-cuda/-rocm/-xpu output (`publish_libraries`): `DIR/<os>/<arch>/<library>` and its
`<library>.build-info.json` (docs/contracts.md), the library first, its build-info last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


MANIFEST_NAME = manifest_step.MANIFEST_NAME
OWN_FILES = (MANIFEST_NAME, "summary.md", "failures.md", "audit.md", "tries.md", f"{WHEELS_SUBDIR}/{INCOMPLETE_MARKER}")
"""Files of a build-all output besides the artifacts its manifest lists (and each library's build-info)."""
OWN_TOP_LEVEL = (MANIFEST_NAME, LIBS_SUBDIR, WHEELS_SUBDIR, "audit.md", "tries.md", "failures.md", "summary.md")
"""What build-all writes at the top of --out, in the order the old entries leave (manifest first)."""
STAGING_PREFIX = ".bnb-staging-"
PREVIOUS_PREFIX = ".bnb-previous-"


class OutputError(PipelineError):
    """The output directory cannot be used (a file, the source tree, not ours, not writable), or
    writing it failed (the previous output is kept)."""

    exit_code = 2


# ---- checks before any job runs ---------------------------------------------------------------


def _same_or_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(path: Path, *, option: str = "--out", source: Path | None = None, home: Path | None = None, replaced: bool = False) -> Path:
    """`path` as an absolute directory path, checked before any job runs (see the module doc):
    OutputError when it names a file, the file system root, the home folder, the `source` tree or a
    folder holding it, when it is `replaced` (build-all) and is a non-empty folder that is not an
    earlier output of ours, or when nothing can be written there."""
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
    real = Path(os.path.realpath(path))
    if real == Path(real.anchor):
        msg = f"{option} {path} is the root of the file system; pass a folder of its own for the outputs, e.g. {option} dist"
        raise OutputError(msg)
    if home is not None and real == Path(os.path.realpath(home)):
        msg = f"{option} {path} is the home folder; pass a folder of its own for the outputs, e.g. {option} {path / 'dist'}"
        raise OutputError(msg)
    if source is not None:
        tree = Path(os.path.realpath(source))
        if _same_or_inside(tree, real):
            what = "is the source tree" if real == tree else f"holds the source tree {tree}"
            msg = f"{option} {path} {what}; the outputs would mix with (and replace) its files; pass a folder of its own, e.g. {option} {tree / 'dist'}"
            raise OutputError(msg)
    if replaced and path.is_dir() and not is_empty_output(path) and earlier_output_files(path) is None:
        msg = (
            f"{option} {path} is not empty and holds no {MANIFEST_NAME} of an earlier build-all, so it is not an earlier output; "
            "build-all replaces its output folder whole: choose an empty or new folder"
        )
        raise OutputError(msg)
    check_writable(path, option=option)
    return path


def check_writable(path: Path, *, option: str = "--out") -> None:
    """Create and remove a file in `path` (or, while it does not exist, a folder in its nearest
    existing parent); OutputError naming the folder and the OS error when that fails."""
    target = path
    while not target.exists():
        target = target.parent
    try:
        if target == path:
            fd, probe = tempfile.mkstemp(prefix=".bnb-probe-", dir=target)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".bnb-probe-", dir=target))
    except OSError as e:
        msg = f"{option} {path}: cannot write in {target}: {e.strerror or e}; pass a writable folder"
        raise OutputError(msg) from None


@contextlib.contextmanager
def writing(out_dir: Path) -> Iterator[None]:
    """An OSError while writing outputs (a full disk, a folder made read-only meanwhile) becomes an
    OutputError naming `out_dir` and the OS error; each file already written is complete (atomic writes)."""
    try:
        yield
    except OSError as e:
        msg = f"writing the outputs into {out_dir} failed: {e}; files written before are complete, the others keep their previous content"
        raise OutputError(msg) from None


# ---- atomic writes ----------------------------------------------------------------------------

_OWN_TMP = re.compile(r"^\.(libbitsandbytes_.*|.*\.whl|.*\.md|.*\.json)\.[A-Za-z0-9_]{8}\.tmp$")
"""Temporary names bnb_build.files gives the files this module writes (`.<name>.<8 random>.tmp`)."""


def remove_leftovers(folder: Path, *, below: bool = False) -> None:
    """Temporary files of ours that a killed run left in `folder` (with `below`, in its sub-folders too)."""
    if not folder.is_dir():
        return
    for tmp in folder.rglob(".*.tmp") if below else folder.glob(".*.tmp"):
        if _OWN_TMP.match(tmp.name) and tmp.is_file() and not tmp.is_symlink():
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


def jobs_document(results: Sequence[JobResult], *, digests: Mapping[str, str], version: str, source_date_epoch: str,
                  source: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """jobs.json of the manifest step (`python3 -m bnb_build manifest --dist DIR --jobs jobs.json`);
    `source`: the tree's commit and whether it was dirty (`bnb_build.manifest.source_state`)."""
    document = {
        "version": version,
        "source_date_epoch": source_date_epoch,
        "jobs": [job_entry(r, inputs_digest=digests.get(r.job_id)) for r in results],
    }
    if source is not None:
        document["source"] = dict(source)
    return document


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
    extra: Callable[[Path], object] | None = None,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write the build-all outputs (see the module doc) into a staging folder, let `extra` add files
    to it (summary.md), and switch it into place at `out_dir`; returns the manifest path there.

    `wheels` holds (wheel file, platform id) pairs from the work directories. A failed write raises
    OutputError and leaves the previous output whole."""
    recover(out_dir)
    stage = staging_dir(out_dir)
    try:
        write_build_all(stage, wheels=wheels, reports=reports, results=results, digests=digests, version=version, source_date_epoch=source_date_epoch,
                        source=source)  # fmt: skip
        if extra is not None:
            extra(stage)
        carry_over(out_dir, stage)
        switch_into_place(stage, out_dir)
    except OSError as e:
        msg = f"writing the outputs into {out_dir} failed: {e}; the previous output there is kept whole (nothing of this run was switched in)"
        raise OutputError(msg) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def write_build_all(
    folder: Path,
    *,
    wheels: Iterable[tuple[Path, str]],
    reports: Mapping[str, Path | None],
    results: Sequence[JobResult],
    digests: Mapping[str, str],
    version: str,
    source_date_epoch: str,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """The build-all files written into the (new, empty) `folder`, the manifest last; its path."""
    publish_libraries(folder / LIBS_SUBDIR, results)
    wheel_dir = folder / WHEELS_SUBDIR
    wheels = list(wheels)
    mark_wheel_set(wheel_dir, results, packed=bool(wheels))
    for wheel, _platform in wheels:
        copy_atomic(wheel, wheel_dir / wheel.name)
    for name, report in reports.items():  # tries.md, audit.md
        if report is not None:
            copy_atomic(report, folder / name)
    if any(r.failed for r in results):
        write_text_atomic(folder / "failures.md", render_failures(results))
    # The manifest step's own code (bnb_build.manifest), as the Dagger function runs it in a container.
    return manifest_step.write(folder, jobs_document(results, digests=digests, version=version, source_date_epoch=source_date_epoch, source=source))


# ---- replacing an earlier output whole ---------------------------------------------------------


def earlier_output_files(out_dir: Path) -> set[str] | None:
    """The files (relative paths) an earlier build-all wrote into `out_dir`, from its manifest; None
    when `out_dir` holds no readable manifest of ours (it is not an earlier output)."""
    try:
        document = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("artifacts"), list) or "schema_version" not in document:
        return None
    files: set[str] = set(OWN_FILES)
    for artifact in document["artifacts"]:
        path = artifact.get("path") if isinstance(artifact, dict) else None
        if isinstance(path, str):
            files.add(path)
            if path.startswith(LIBS_SUBDIR + "/"):
                files.add(path + BUILD_INFO_SUFFIX)
    return files


def _ours(name: str) -> bool:
    return name.startswith((STAGING_PREFIX, PREVIOUS_PREFIX, ".bnb-probe-"))


def is_empty_output(out_dir: Path) -> bool:
    return not any(not _ours(p.name) for p in out_dir.iterdir())


def staging_dir(out_dir: Path) -> Path:
    """A new, empty folder for the next output: inside `out_dir` when it exists (the same file system,
    whatever its parent allows), else beside it."""
    if out_dir.is_dir():
        parent, prefix = out_dir, STAGING_PREFIX
    else:
        parent, prefix = out_dir.parent, f".{out_dir.name}{STAGING_PREFIX}"
        parent.mkdir(parents=True, exist_ok=True)
    while True:  # not tempfile.mkdtemp: its mode 0700 would become the output folder's; this one follows the umask
        stage = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            stage.mkdir()
            return stage
        except FileExistsError:
            continue


def carry_over(out_dir: Path, stage: Path) -> list[str]:
    """Copy into `stage` every file below `out_dir`'s libs/ and wheels/ that the earlier output did
    not write (put there by someone else), so switching does not lose it; our own temporary leftovers
    stay behind. Returns what was carried."""
    if not out_dir.is_dir():
        return []
    earlier = earlier_output_files(out_dir) or set()
    carried = []
    for top in (LIBS_SUBDIR, WHEELS_SUBDIR):
        root = out_dir / top
        if not root.is_dir() or root.is_symlink():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(out_dir).as_posix()
            if path.is_dir() or rel in earlier or _OWN_TMP.match(path.name):
                continue
            dest = stage / rel
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest, follow_symlinks=False)
            carried.append(rel)
    return carried


def switch_into_place(stage: Path, out_dir: Path) -> None:
    """Make the complete `stage` the output at `out_dir`. A missing `out_dir`: one rename. Otherwise
    the earlier output's entries (OWN_TOP_LEVEL, manifest first) move aside, the new ones move in
    (manifest last), and the earlier ones are removed; a failure moves everything back."""
    if not out_dir.exists():
        os.rename(stage, out_dir)
        return
    previous = Path(tempfile.mkdtemp(prefix=PREVIOUS_PREFIX, dir=out_dir))
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in OWN_TOP_LEVEL:
            if os.path.lexists(out_dir / name):
                os.rename(out_dir / name, previous / name)
                moved_out.append(name)
        for name in reversed(OWN_TOP_LEVEL):
            if os.path.lexists(stage / name):
                os.rename(stage / name, out_dir / name)
                moved_in.append(name)
    except OSError:
        for name in reversed(moved_in):
            os.rename(out_dir / name, stage / name)
        for name in reversed(moved_out):
            os.rename(previous / name, out_dir / name)
        shutil.rmtree(previous, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def recover(out_dir: Path) -> None:
    """Undo what a run killed while switching left: an earlier output moved aside with no manifest in
    place is moved back; staging folders are removed."""
    if out_dir.is_dir():
        for previous in sorted(out_dir.glob(PREVIOUS_PREFIX + "*")):
            if not (out_dir / MANIFEST_NAME).exists() and previous.is_dir():
                for entry in previous.iterdir():
                    if not os.path.lexists(out_dir / entry.name):
                        os.rename(entry, out_dir / entry.name)
            shutil.rmtree(previous, ignore_errors=True)
        for stage in out_dir.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(stage, ignore_errors=True)
    if out_dir.parent.is_dir():
        for stage in out_dir.parent.glob(f".{out_dir.name}{STAGING_PREFIX}*"):
            shutil.rmtree(stage, ignore_errors=True)


def mark_wheel_set(wheel_dir: Path, results: Sequence[JobResult], *, packed: bool, keep_going: bool = True, missing: Sequence[str] = ()) -> None:
    """Write wheel_dir/INCOMPLETE.md, before any wheel is copied, when wheels are `packed` although a
    job of the run failed; remove an earlier one otherwise. bnb_build.release refuses a marked set."""
    marker = wheel_dir / INCOMPLETE_MARKER
    failed = [r.job_id for r in results if r.failed]
    if not ((failed or missing) and packed):  # missing: planned libraries a --libs folder lacked
        marker.unlink(missing_ok=True)
        return
    write_text_atomic(marker, incomplete_notice(failed, keep_going=keep_going, missing=missing))


def publish_libraries(out_dir: Path, results: Sequence[JobResult]) -> list[Path]:
    """Copy each built library and its build-info into `out_dir/<os>/<arch>/`; return the libraries.
    Nothing else in `out_dir` is touched but our own temporary leftovers (build-all writes into a
    new staging folder, see the module doc)."""
    remove_leftovers(out_dir, below=True)
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
