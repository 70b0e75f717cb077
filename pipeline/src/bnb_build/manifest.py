"""Step ``manifest``: describe a build-all output folder in ``manifest.json``, the same way everywhere.

Command line (docs/contracts.md; run in the folder holding ``dist/``)::

    python3 -m bnb_build manifest --dist dist --jobs jobs.json

``jobs.json`` is what the executor knows and the folder cannot tell: the version, SOURCE_DATE_EPOCH
and every planned job with its outcome::

    {"version": "0.1.0", "source_date_epoch": "315532800",
     "jobs": [{"id": "cpu-linux-x86_64", "kind": "library", "status": "built", "platform": "linux-x86_64",
               "artifact": "libbitsandbytes_cpu.so", "inputs_digest": "sha256:..."},
              {"id": "cuda128-linux-x86_64", "kind": "library", "status": "skipped", "reason": "..."}, ...]}

Per job only ``id``, ``kind`` and ``status`` are required; ``platform``, ``reason``, ``exit_code``,
``notes``, ``artifact`` and ``inputs_digest`` are copied when given. Everything else comes from
``dist/`` itself: each artifact (``libs/<os>/<arch>/<library>``, ``wheels/*.whl``, ``tries.md``, ``audit.md``) with
its sha256 and size, and per built job the sha256 of its artifact and, for a library, its
build-info.json. The result has sorted keys, no timings and no absolute paths, so the same folder and
the same jobs give the same bytes, whichever executor ran the jobs. It is written last and atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .errors import InputError, StepError, UsageError
from .files import write_text_atomic
from .inputs import file_sha256

MANIFEST_SCHEMA = 2
MANIFEST_NAME = "manifest.json"
BUILD_INFO_SUFFIX = ".build-info.json"
STATUSES = ("built", "skipped", "failed")
KINDS = ("library", "wheel", "try", "audit")
REPORTS = {"try": "tries.md", "audit": "audit.md"}
"""The report each report job writes into dist/ (its artifact)."""
OPTIONAL_KEYS = ("platform", "reason", "exit_code", "notes", "artifact", "inputs_digest")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build manifest", description="Write dist/manifest.json.")
    p.add_argument("--dist", required=True, type=Path, help="the build-all output folder (libs/, wheels/, audit.md)")
    p.add_argument("--jobs", required=True, type=Path, help="jobs.json: version, source_date_epoch and the jobs' outcomes")
    return p


def load_jobs(path: Path) -> Dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--jobs {path} does not exist") from None
    except ValueError as e:
        raise InputError(f"--jobs {path} is not JSON: {e}") from None
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list) or "version" not in document:
        raise UsageError(f"--jobs {path}: expected an object with 'version', 'source_date_epoch' and a 'jobs' list")
    for job in document["jobs"]:
        if not isinstance(job, dict) or not isinstance(job.get("id"), str) or job.get("status") not in STATUSES or job.get("kind") not in KINDS:
            raise UsageError(f"--jobs {path}: every job needs an 'id', a 'kind' ({', '.join(KINDS)}) and a 'status' ({', '.join(STATUSES)}); got {job!r}")
    return document


def _relative_files(root: Path) -> List[str]:
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def _is_temporary(rel: str) -> bool:
    return Path(rel).name.startswith(".")


def artifacts(dist: Path, jobs: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Libraries (with the job that built them), wheels (with their platform) and audit.md."""
    wheel_platform = {j["artifact"]: j.get("platform") for j in jobs if j["kind"] == "wheel" and j.get("artifact")}
    found: List[Dict[str, Any]] = []
    for rel in _relative_files(dist / "libs"):
        if rel.endswith(BUILD_INFO_SUFFIX) or _is_temporary(rel):
            continue
        path = dist / "libs" / rel
        entry = _entry(dist, path)
        info = _build_info(path)
        if info is not None and info.get("job_id"):
            entry["job"] = info["job_id"]
        found.append(entry)
    for rel in _relative_files(dist / "wheels"):
        if rel.endswith(".whl") and "/" not in rel and not _is_temporary(rel):
            entry = _entry(dist, dist / "wheels" / rel)
            if wheel_platform.get(rel):
                entry["platform"] = wheel_platform[rel]
            found.append(entry)
    for report in REPORTS.values():
        if (dist / report).is_file():
            found.append(_entry(dist, dist / report))
    return sorted(found, key=lambda a: a["path"])


def _entry(dist: Path, path: Path) -> Dict[str, Any]:
    return {"path": path.relative_to(dist).as_posix(), "sha256": file_sha256(path), "size": path.stat().st_size}


def _build_info(library: Path) -> Optional[Dict[str, Any]]:
    info = library.with_name(library.name + BUILD_INFO_SUFFIX)
    if not info.is_file():
        return None
    return read_build_info(info)


def read_build_info(path: Path) -> Dict[str, Any]:
    """The content of a ``<library>.build-info.json`` (what ``python3 -m bnb_build native`` writes beside
    the library). InputError naming the file when it is not UTF-8 JSON holding an object: a library
    with a damaged record is not used, it is built again."""
    again = "build the library again (bnb-ci build-<backend> --out DIR writes both files)"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not a build-info file: not UTF-8 text (byte {e.start}: {e.reason}); {again}") from None
    except ValueError as e:
        raise InputError(f"{path} is not a build-info file: not JSON ({e}); {again}") from None
    except OSError as e:
        raise InputError(f"{path} cannot be read: {e.strerror or e}; {again}") from None
    if not isinstance(document, dict):
        raise InputError(f"{path} is not a build-info file: it holds a JSON {type(document).__name__}, not an object; {again}")
    return document


def _artifact_path(dist: Path, job: Mapping[str, Any]) -> Optional[Path]:
    name = job.get("artifact")
    if job["kind"] in REPORTS:
        return dist / REPORTS[job["kind"]]
    if not name:
        return None
    if job["kind"] == "wheel":
        return dist / "wheels" / name
    for rel in _relative_files(dist / "libs"):
        path = dist / "libs" / rel
        if path.name == name:
            info = _build_info(path)
            if info is None or info.get("job_id") in (None, job["id"]):
                return path
    return None


def job_entry(dist: Path, job: Mapping[str, Any]) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"id": job["id"], "kind": job["kind"], "status": job["status"]}
    for key in OPTIONAL_KEYS:
        if job.get(key) not in (None, "", []):
            entry[key] = list(job[key]) if key == "notes" else job[key]
    if job["status"] == "built":
        path = _artifact_path(dist, job)
        if path is None or not path.is_file():
            raise InputError(f"job {job['id']} is built, but its artifact {job.get('artifact') or REPORTS.get(job['kind'])} is not in {dist}")
        entry["artifact"] = path.name
        entry["sha256"] = file_sha256(path)
        if job["kind"] == "library":
            info = _build_info(path)
            if info is not None:
                entry["build_info"] = info
    return entry


def manifest(dist: Path, document: Mapping[str, Any]) -> Dict[str, Any]:
    jobs = list(document["jobs"])
    summary = {status: sum(1 for j in jobs if j["status"] == status) for status in STATUSES}
    return {
        "schema_version": MANIFEST_SCHEMA,
        "version": str(document["version"]),
        "source_date_epoch": str(document.get("source_date_epoch") or ""),
        "ok": summary["failed"] == 0,
        "summary": summary,
        "artifacts": artifacts(dist, jobs),
        "jobs": [job_entry(dist, j) for j in jobs],
        "source": _source(document.get("source")),
    }


def _source(value: Any) -> Dict[str, Any]:
    """jobs.json's ``source`` (commit, dirty) as the manifest records it; unknown without one."""
    if value is None:
        return {"commit": None, "dirty": None}
    if not isinstance(value, dict) or set(value) - {"commit", "dirty"}:
        raise InputError(f'jobs.json: "source" must be an object with "commit" (a hex string or null) and "dirty" (true, false or null), not {value!r}')
    commit, dirty = value.get("commit"), value.get("dirty")
    if commit is not None and not (isinstance(commit, str) and len(commit) in (40, 64) and all(c in "0123456789abcdef" for c in commit)):
        raise InputError(f'jobs.json: "source"."commit" must be a full hex commit id or null, not {commit!r}')
    if dirty is not None and not isinstance(dirty, bool):
        raise InputError(f'jobs.json: "source"."dirty" must be true, false or null, not {dirty!r}')
    return {"commit": commit, "dirty": dirty}


def source_state(root: Path) -> Dict[str, Any]:
    """The commit the tree at ``root`` is checked out at and whether its files differ from it (tracked
    changes or untracked files git does not ignore): ``{"commit": "<sha>", "dirty": false}``; both
    None where ``root`` is not in a git work tree or git is not installed."""
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "-q", "HEAD^{commit}")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=normal", "--", ".")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def render(value: Mapping[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def write(dist: Path, document: Mapping[str, Any]) -> Path:
    """Write ``<dist>/manifest.json`` for ``document`` (the content of jobs.json); return its path."""
    path = dist / MANIFEST_NAME
    write_text_atomic(path, render(manifest(dist, document)))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        ns = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        if not ns.dist.is_dir():
            raise InputError(f"--dist {ns.dist} is not a folder")
        path = write(ns.dist, load_jobs(ns.jobs))
    except StepError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print(f"wrote {path}", flush=True)
    return 0
