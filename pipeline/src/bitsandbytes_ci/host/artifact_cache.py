"""The host executor's artifact cache: a job whose output for the same input digest exists is not run.

Layout, below the cache root (`--cache-dir`, default the user's cache folder, local.default_cache_dir):

    artifacts/<hex digest>/                  one entry per input digest (content-addressed)
        <the job's output files>             e.g. linux/x86_64/libbitsandbytes_cpu.so (+ build-info)
        bnb-cache-entry.json                 the completion marker: digest and sha256 of every file;
                                             its modification time is the entry's last use

An entry is assembled in a temporary folder beside it (`artifacts/.tmp-<hex>-<random>/`), its
marker written last, then renamed into place in one step, so an entry is complete or absent. On reuse
every file is checked against the marker (the same set of files, the same sha256); an entry without a
marker (a killed run), with a missing, extra or changed file, or with an unreadable marker is removed
and the job runs again. Leftover temporary folders are removed by the next run.

The keys (the input digests, `bnb_build.inputs.job_digest` through `plan.Job.input_digest` and
`plan.WheelJob.input_digest`) hold the job's source subset, the step programs that run, the plan's
command line, image and setup, and, instead of the matrix's toolkit version, the toolkit this host
actually uses (`host_toolkit`): the compiler found, its version, the variables set for it. A wheel's
key holds the sha256 of the libraries it packs and SOURCE_DATE_EPOCH; the audit's the sha256 of the
wheels, the expectations and the auditwheel version. Below the artifact cache, ccache (on by default
in the native step) saves the compiles of a job that does run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bnb_build import inputs

ARTIFACTS_SUBDIR = "artifacts"
MARKER = "bnb-cache-entry.json"
MARKER_SCHEMA = 1


def entry_path(cache_dir: Path, digest: str) -> Path:
    """`<cache>/artifacts/<hex>` for `sha256:<hex>`."""
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        msg = f"not an input digest: {digest!r}"
        raise ValueError(msg)
    return Path(cache_dir) / ARTIFACTS_SUBDIR / hexdigest


def _files(root: Path) -> list[str]:
    return [rel for rel in inputs.all_files(root) if rel != MARKER]


def check_entry(entry: Path, digest: str) -> str | None:
    """Why the entry cannot be used (None when it is complete and every file matches its marker)."""
    marker = entry / MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "incomplete (no completion marker)"
    except (OSError, ValueError) as e:
        return f"unreadable completion marker ({e})"
    if not isinstance(recorded, dict) or recorded.get("digest") != digest or not isinstance(recorded.get("files"), dict):
        return "completion marker of another digest or schema"
    expected: Mapping[str, str] = recorded["files"]
    present = _files(entry)
    if sorted(expected) != present:
        missing = sorted(set(expected) - set(present))
        extra = sorted(set(present) - set(expected))
        return f"files differ from the marker (missing: {', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'})"
    for rel, sha in sorted(expected.items()):
        if inputs.file_sha256(entry / rel) != sha:
            return f"{rel} does not match its sha256"
    _VERIFIED.update({str(entry / rel): sha for rel, sha in expected.items()})
    return None


_VERIFIED: dict[str, str] = {}
"""sha256 of the files of entries checked by this process (entries are never changed once complete)."""


def file_sha256(path: Path) -> str:
    """The sha256 of `path`: the one `check_entry` just verified for a file of a cache entry, else computed."""
    known = _VERIFIED.get(str(path))
    return known if known is not None else inputs.file_sha256(path)


def lookup(cache_dir: Path, digest: str) -> tuple[Path | None, str | None]:
    """(the verified entry, None) on a hit; (None, why it was discarded) for a bad entry, which is
    removed; (None, None) when there is none."""
    entry = entry_path(cache_dir, digest)
    if not entry.exists():
        return None, None
    problem = check_entry(entry, digest)
    if problem is None:
        try:  # the marker's time is the entry's last use (cache_usage.prune removes the least recently used)
            os.utime(entry / MARKER)
        except OSError:  # a read-only cache
            pass
        return entry, None
    shutil.rmtree(entry, ignore_errors=True)
    if entry.exists() and not entry.is_dir():
        entry.unlink()
    return None, problem


def tree_files(tree: Path) -> dict[str, Path]:
    """Every file below `tree`, by its relative path (what `store` takes)."""
    return {rel: tree / rel for rel in inputs.all_files(tree)}


def store(cache_dir: Path, digest: str, sources: Mapping[str, Path]) -> Path:
    """Copy `sources` (relative path in the entry -> file) into the entry of `digest`, atomically;
    return the entry. When a complete entry already exists (another run stored it first) it is kept."""
    entry = entry_path(cache_dir, digest)
    entry.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name[:16]}-", dir=entry.parent))
    try:
        files: dict[str, str] = {}
        for rel, src in sorted(sources.items()):
            if rel == MARKER:
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            shutil.copymode(src, dest)
            files[rel] = inputs.file_sha256(dest)
        marker = {"schema_version": MARKER_SCHEMA, "digest": digest, "files": files}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if entry.exists():
            if check_entry(entry, digest) is None:
                return entry
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:  # another run renamed its complete entry into place meanwhile
            if check_entry(entry, digest) is not None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


STALE_TMP_S = 24 * 3600
"""A temporary entry older than this was left by a killed run (a live one stores within seconds)."""


def remove_leftovers(cache_dir: Path, *, older_than_s: float = STALE_TMP_S) -> None:
    """Temporary entries of runs that were killed while storing."""
    root = Path(cache_dir) / ARTIFACTS_SUBDIR
    now = time.time()
    if root.is_dir():
        for tmp in root.glob(".tmp-*"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                continue


# ---- what the host's toolchains add to a key ------------------------------------------------------


TOOL_VERSIONS_FILE = "tool-versions.json"
"""`<cache root>/tool-versions.json`: `<tool> --version` answers of earlier runs, each with the identity
of the file that answered (resolved path, size, modification and change times, inode); reused only
while that identity is unchanged, so a replaced or updated tool is asked again."""

_TOOL_VERSIONS: dict[str, str] = {}
_TOOL_VERSIONS_LOCK = threading.Lock()


def _probe_version(path: str) -> str:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def tool_version(path: str | None) -> str:
    """The first line of `<tool> --version` ("" when it cannot run); once per tool and process."""
    if not path:
        return ""
    with _TOOL_VERSIONS_LOCK:
        if path in _TOOL_VERSIONS:
            return _TOOL_VERSIONS[path]
    version = _probe_version(path)
    with _TOOL_VERSIONS_LOCK:
        return _TOOL_VERSIONS.setdefault(path, version)


def tool_identity(path: str) -> list[Any] | None:
    """What identifies the file a tool path runs (None when it does not exist)."""
    try:
        resolved = os.path.realpath(path)
        st = os.stat(resolved)
    except OSError:
        return None
    return [resolved, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def prime_tool_versions(cache_dir: Path, paths: Sequence[str | None]) -> None:
    """Fill `tool_version`'s answers for `paths`: from `<cache>/tool-versions.json` where the tool's file
    is unchanged (`tool_identity`), the others asked at the same time and recorded there."""
    wanted = [p for p in dict.fromkeys(paths) if p and p not in _TOOL_VERSIONS]
    if not wanted:
        return
    record = Path(cache_dir) / TOOL_VERSIONS_FILE
    try:
        stored = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            stored = {}
    except (OSError, ValueError):
        stored = {}
    identities = {p: tool_identity(p) for p in wanted}
    todo = []
    for p in wanted:
        known = stored.get(p)
        if identities[p] is not None and isinstance(known, dict) and known.get("identity") == identities[p] and isinstance(known.get("version"), str):
            with _TOOL_VERSIONS_LOCK:
                _TOOL_VERSIONS.setdefault(p, known["version"])
        else:
            todo.append(p)
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
        found = dict(zip(todo, pool.map(tool_version, todo)))
    for p in todo:
        if identities[p] is not None and identities[p] == tool_identity(p):
            stored[p] = {"identity": identities[p], "version": found[p]}
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, record)
    except OSError:  # a read-only cache: the answers stay in this process
        pass


def host_toolkit(toolchain: str, changes: Mapping[str, str], *, cxx: str | None, cmake: str | None) -> str:
    """The toolkit of a build job on this host, for its key: the toolchain line of the decision
    (e.g. "nvcc 13.0.88 at /usr/local/cuda"), the variables set for the job, and the versions of the
    C++ compiler and CMake."""
    return json.dumps(
        {"toolchain": toolchain, "changes": dict(sorted(changes.items())), "cxx": tool_version(cxx), "cmake": tool_version(cmake)},
        sort_keys=True,
    )


def _distribution_version(name: str) -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return ""
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def python_toolkit(*names: str) -> str:
    """The Python tools of a wheel or audit job, for its key: the interpreter and the packages' versions."""
    return json.dumps({"python": sys.version.split()[0], **{n: _distribution_version(n) for n in names}}, sort_keys=True)


def audit_digest(expect: Mapping[str, Any], wheels: Sequence[tuple[str, str]], *, steps_dir: Path) -> str:
    """The audit job's key: the expectations, the wheels (file name, sha256), the step programs and
    the audit tools."""
    extra = {
        "expect": expect,
        "wheels": sorted(wheels),
        "steps": inputs.step_files(steps_dir),
        "toolkit": python_toolkit("auditwheel", "lief", "iced-x86", "capstone"),
    }
    return inputs.digest(steps_dir, [], extra)


def try_digest(wheels: Sequence[tuple[str, str]], script: tuple[str, str] | None, *, wine_python: str | None, steps_dir: Path,
               checks: Sequence[str] = (), environments: Sequence[Any] | None = None) -> str:  # fmt: skip
    """The try job's key: the wheels (file name, sha256), the script (path, sha256), the Windows Python
    used under Wine (its folder), the checks (CPU floors, expected and run-time libraries), the step
    programs and this interpreter; with `environments`, the kept environments the wheels are tried in
    (bnb_build.try_envs.environment_state: their facts and resolved distributions)."""
    extra = {
        "wheels": sorted(wheels),
        "script": list(script) if script else None,
        "wine_python": wine_python,
        "checks": list(checks),
        "steps": inputs.step_files(steps_dir),
        "toolkit": python_toolkit("pip"),
    }
    if environments is not None:
        extra["environments"] = list(environments)
    return inputs.digest(steps_dir, [], extra)
