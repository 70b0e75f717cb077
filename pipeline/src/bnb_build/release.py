"""Step ``pre-release``: turn a folder of wheels into the rolling pre-release set; helpers shared with ``publish``.

Command line (docs/contracts.md)::

    python3 -m bnb_build pre-release --wheels wheels --out out --commit SHA --repo OWNER/NAME
                                     (--expect expect.json | --expect-platforms P1,P2)
                                     [--tag continuous-release_main] [--server-url https://github.com]

It writes ``out/`` atomically (a reader sees the old folder or the complete new one):

- ``bitsandbytes-1.33.7.preview-py3-none-<tag>.whl``, one per platform: the input wheel with the
  placeholder version in its file name, its ``.dist-info`` folder name and its METADATA, plus
  ``bitsandbytes/_build_info.json`` (real version, commit, platform, original file name), which the
  installed package reports through ``bitsandbytes.build_info()`` and ``bitsandbytes.__version__``;
- ``body.md``: the release text: one install command per platform under the upstream headings, the
  ``--no-deps`` note and the sha256 of every file;
- ``release.json``: what the ``github-release`` step uploads (tag, commit, repository, assets with
  their sha256).

Why ``1.33.7.preview`` in the file name *and* in METADATA
---------------------------------------------------------
The upstream workflow renames its wheels to ``bitsandbytes-1.33.7.preview-...whl`` so that download
links never change, but leaves the real version in METADATA. uv compares the two and refuses the
wheel ("Wheel version does not match filename (0.1.0 != 1.33.7rc0), which indicates a malformed
wheel"), and pip may start doing the same. ``1.33.7.preview`` is a valid PEP 440 version (``preview``
is an accepted spelling of ``rc``; its normal form is ``1.33.7rc0``), so the fix is to use the same
string everywhere. Checked with pip 26.3 and uv 0.13.9 on a wheel of each kind:

======================================  ===========================  ==================================
file name / METADATA / .dist-info        pip install                  uv pip install
======================================  ===========================  ==================================
1.33.7.preview / 0.1.0 / 0.1.0 (upstream) installs 0.1.0, no warning  refused (version mismatch)
1.33.7.preview / 1.33.7.preview / same   installs 1.33.7rc0           installs 1.33.7rc0
1.33.7rc0 / 1.33.7rc0 / 1.33.7rc0        installs 1.33.7rc0           installs 1.33.7rc0
======================================  ===========================  ==================================

The normalised ``1.33.7rc0`` is accepted too, but would change every download link; the spelling
``1.33.7.preview`` keeps upstream's links working and is identical in file name and METADATA even
to a tool that compares strings. Because the version installers see is a placeholder, the real
version and the commit travel inside the package (``_build_info.json``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import audit as audit_step
from .errors import CorruptWheel, InputError, StepError, UsageError, run_step
from .files import remove_tree, write_text_atomic
from .inputs import file_sha256
from .platforms import PLATFORMS, parse_platform_tag

PACKAGE = "bitsandbytes"
PLACEHOLDER_VERSION = "1.33.7.preview"
"""The version of every pre-release wheel, in its file name, .dist-info folder and METADATA."""
BUILD_INFO = "bitsandbytes/_build_info.json"
"""Where the real version and commit go inside a pre-release wheel (read by bitsandbytes.build_info())."""
DEFAULT_TAG = "continuous-release_main"
DEFAULT_SERVER_URL = "https://github.com"
MANIFEST = "release.json"
BODY = "body.md"
INCOMPLETE_MARKER = "INCOMPLETE.md"
"""Written next to wheels packed while jobs failed (``bnb-ci build-all --keep-going``): such a set is
for testing only, and :func:`check_wheel_set` refuses to release it."""


def incomplete_notice(failed: Sequence[str], *, keep_going: bool = True, missing: Sequence[str] = ()) -> str:
    """wheels/INCOMPLETE.md: the wheels beside it come from a run in which `failed` failed, or lack the
    planned libraries `missing` (build-wheels --libs with a folder holding only some); `keep_going`:
    whether --keep-going was given (the notice names it only then). Both executors write it."""
    lines = ["# Incomplete wheel set", ""]
    if failed:
        how = "with --keep-going " if keep_going else ""
        lines.append(f"These wheels were packed {how}while {len(failed)} job(s) failed: {', '.join(failed)}.")
    if missing:
        lines.append(f"They lack {len(missing)} planned library(ies) that the --libs folder did not hold: {', '.join(missing)}.")
    lines.append("They are for testing only: `pre-release` and `publish` refuse this folder.")
    if failed:
        lines.append("Fix the failures (see failures.md next to this folder) and build again to get a releasable set.")
    if missing:
        lines.append("Build the missing libraries (or pass a --libs folder holding every planned one) to get a releasable set.")
    return "\n".join(lines) + "\n"


HEADINGS = (
    ("linux-x86_64", "Linux (x86_64)"),
    ("linux-aarch64", "Linux (aarch64)"),
    ("windows-x64", "Windows (x86_64)"),
    ("windows-arm64", "Windows (arm64)"),
    ("macos-arm64", "macOS 14+ (arm64)"),
)
"""Release-body headings, in upstream's order, per platform id."""

_WHEEL_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class ReleaseError(StepError):
    """The wheel set is not fit for a release (inconsistent names, missing platforms, ...)."""

    exit_code = 9


# ----------------------------------------------------------------------------------------------
# Pure helpers for release notes


def sha256_files(paths: Iterable[Path]) -> Dict[str, str]:
    """``{file name: sha256 hex}`` for ``paths``, sorted by name; two files of one name are an error."""
    result: Dict[str, str] = {}
    for path in sorted(paths, key=lambda p: p.name):
        if path.name in result:
            msg = f"two files named {path.name}; release files need unique names"
            raise ValueError(msg)
        result[path.name] = file_sha256(path)
    return result


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; ``|`` in cells is escaped, every row must have one cell per header."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            msg = f"row {list(row)} has {len(row)} cells, the table has {len(headers)} columns"
            raise ValueError(msg)
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Checked values


def check_commit(commit: str) -> str:
    if not _COMMIT.match(commit):
        msg = f"commit {commit!r} is not a full commit id (40 or 64 lowercase hex digits, as `git rev-parse HEAD` prints)"
        raise UsageError(msg)
    return commit


def check_repo(repo: str) -> str:
    if not _REPO.match(repo):
        msg = f"repository {repo!r} is not OWNER/NAME (e.g. bitsandbytes-foundation/bitsandbytes)"
        raise UsageError(msg)
    return repo


def check_tag(tag: str) -> str:
    if not _TAG.match(tag) or ".." in tag or tag.endswith((".lock", "/", ".")):
        msg = f"tag {tag!r} is not a usable git tag name (letters, digits, '.', '_', '-', '/'; e.g. {DEFAULT_TAG})"
        raise UsageError(msg)
    return tag


def parse_platform_list(text: str) -> List[str]:
    """``linux-x86_64,macos-arm64`` -> platform ids, each checked; duplicates are an error."""
    items = [p.strip() for p in text.split(",")]
    if not all(items):
        msg = f"--expect-platforms {text!r} has an empty element; expected e.g. linux-x86_64,macos-arm64"
        raise UsageError(msg)
    for item in items:
        if item not in PLATFORMS:
            msg = f"--expect-platforms: unknown platform {item!r}; allowed: {', '.join(PLATFORMS)}"
            raise UsageError(msg)
    dups = sorted({p for p in items if items.count(p) > 1})
    if dups:
        msg = f"--expect-platforms names {', '.join(dups)} more than once"
        raise UsageError(msg)
    return items


# ----------------------------------------------------------------------------------------------
# Reading wheels


@dataclass(frozen=True)
class WheelInfo:
    """One wheel, read and checked for internal consistency."""

    path: Path
    name: str  # distribution name as in the file name
    version: str  # as in the file name (equal to METADATA's)
    plat_tag: str
    platform: str  # platform id
    dist_info: str  # the .dist-info folder name


def read_wheel(path: Path) -> WheelInfo:
    """Read ``path`` and check that its name, METADATA, WHEEL tags and .dist-info agree.

    Raises ReleaseError naming the file and the disagreement, CorruptWheel when it is no zip archive.
    """
    m = _WHEEL_NAME.match(path.name)
    if not m:
        msg = f"{path.name} is not a wheel file name (name-version-py3-none-<platform tag>.whl)"
        raise ReleaseError(msg)
    name, version, plat = m.group("name"), m.group("version"), m.group("plat")
    if _normal_name(name) != PACKAGE:
        msg = f"{path.name} is a wheel of {name!r}; only {PACKAGE} wheels are released"
        raise ReleaseError(msg)
    if (m.group("py"), m.group("abi")) != ("py3", "none") or m.group("build"):
        msg = f"{path.name}: expected the tags py3-none-<platform tag> and no build number"
        raise ReleaseError(msg)
    try:
        parsed = parse_platform_tag(plat)
    except UsageError as e:
        msg = f"{path.name}: {e}"
        raise ReleaseError(msg) from None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            dist_infos = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
            if len(dist_infos) != 1:
                msg = f"{path.name} has {len(dist_infos)} .dist-info folders ({', '.join(dist_infos) or 'none'}), expected one"
                raise ReleaseError(msg)
            dist_info = dist_infos[0]
            metadata = _read_member(z, f"{dist_info}/METADATA", path)
            wheel_meta = _read_member(z, f"{dist_info}/WHEEL", path)
    except zipfile.BadZipFile as e:
        msg = f"{path} is not a readable wheel (zip archive): {e}; build or download it again"
        raise CorruptWheel(msg) from None
    meta_name, meta_version = _metadata_field(metadata, "Name"), _metadata_field(metadata, "Version")
    if meta_name is None or _normal_name(meta_name) != PACKAGE:
        msg = f"{path.name}: METADATA names the distribution {meta_name!r}, not {PACKAGE!r}"
        raise ReleaseError(msg)
    if meta_version != version:
        msg = f"{path.name}: METADATA says version {meta_version!r}, the file name says {version!r}; installers such as uv refuse such a wheel"
        raise ReleaseError(msg)
    if dist_info != f"{name}-{version}.dist-info":
        msg = f"{path.name}: .dist-info folder is {dist_info}, expected {name}-{version}.dist-info"
        raise ReleaseError(msg)
    tags = re.findall(r"^Tag: (\S+)$", wheel_meta, re.MULTILINE)
    if tags != [f"py3-none-{plat}"]:
        msg = f"{path.name}: WHEEL metadata lists tags {tags}, the file name says ['py3-none-{plat}']"
        raise ReleaseError(msg)
    return WheelInfo(path, name, version, plat, parsed.platform_id, dist_info)


def _read_member(z: zipfile.ZipFile, member: str, path: Path) -> str:
    try:
        return z.read(member).decode("utf-8")
    except KeyError:
        msg = f"{path.name} has no {member}"
        raise ReleaseError(msg) from None


def _normal_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata_field(metadata: str, field: str) -> Optional[str]:
    header = metadata.split("\n\n", 1)[0]
    m = re.search(rf"^{field}: *(.*?)\s*$", header, re.MULTILINE)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------------------------
# Checking a wheel set (pre-release and publish)


@dataclass(frozen=True)
class Expected:
    """What a wheel set must hold: per platform id, the platform tag (None: any tag of that platform).

    ``audit`` holds the parsed expect.json when the set is also audited.
    """

    plat_tags: Mapping[str, Optional[str]]
    audit: Optional[audit_step.Expectations] = None
    source: str = "--expect-platforms"


def expected_from_platforms(platforms: Sequence[str]) -> Expected:
    return Expected({p: None for p in platforms})


def expected_from_file(path: Path) -> Expected:
    expect = audit_step.load_expectations(path)
    return Expected({p: w.plat_tag for p, w in expect.wheels.items()}, expect, str(path))


def find_wheels(folder: Path) -> List[Path]:
    if not folder.is_dir():
        msg = f"--wheels {folder} is not a folder"
        raise InputError(msg)
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        others = sorted(p.name for p in folder.iterdir())
        msg = f"no wheels (*.whl) in {folder} (it holds: {', '.join(others) or 'nothing'}); build them first (bnb-ci build-wheels)"
        raise InputError(msg)
    return wheels


def check_wheel_set(folder: Path, expected: Expected, env: Mapping[str, str], *, allow_placeholder: bool = False) -> List[WheelInfo]:
    """Read every wheel of ``folder`` and check the set; raise ReleaseError listing every problem.

    Checks: each wheel is consistent (:func:`read_wheel`); one wheel per platform; every expected
    platform present with its expected tag and no other; one version for all; not the placeholder
    version (unless ``allow_placeholder``). With an expect.json, the audit must find no violation.
    A file that is no readable zip archive stops the check first (CorruptWheel, exit code 2).
    """
    marker = folder / INCOMPLETE_MARKER
    if marker.is_file():
        msg = (
            f"the wheels in {folder} come from a run in which jobs failed ({marker} lists them; they were packed with "
            "--keep-going, for testing only); fix the failures and build again: a release needs a run without failures. "
            "Nothing was written or uploaded."
        )
        raise ReleaseError(msg)
    wheels = find_wheels(folder)
    audit_step.check_wheel_archives(wheels)
    problems: List[str] = []
    infos: List[WheelInfo] = []
    for path in wheels:
        try:
            infos.append(read_wheel(path))
        except ReleaseError as e:
            problems.append(str(e))
    by_platform: Dict[str, List[WheelInfo]] = {}
    for info in infos:
        by_platform.setdefault(info.platform, []).append(info)
    for platform, group in sorted(by_platform.items()):
        if len(group) > 1:
            problems.append(f"{len(group)} wheels for {platform} ({', '.join(i.path.name for i in group)}); a release holds exactly one per platform")
        if platform not in expected.plat_tags:
            problems.append(f"{', '.join(i.path.name for i in group)}: no wheel is expected for {platform}; expected platforms ({expected.source}): {', '.join(expected.plat_tags)}")
            continue
        want = expected.plat_tags[platform]
        for info in group:
            if want is not None and info.plat_tag != want:
                problems.append(f"{info.path.name}: platform tag {info.plat_tag}, the plan built {platform} as {want}")
    missing = [p for p in expected.plat_tags if p not in by_platform]
    if missing:
        problems.append(f"no wheel for {', '.join(missing)}, which the plan built ({expected.source}); every platform must be released together")
    versions = sorted({i.version for i in infos})
    if len(versions) > 1:
        problems.append(f"the wheels have different versions ({', '.join(versions)}); release wheels of one build only")
    if not allow_placeholder and PLACEHOLDER_VERSION in versions:
        problems.append(f"wheels with the placeholder version {PLACEHOLDER_VERSION} are pre-release wheels; use the wheels of the build instead")
    if expected.audit is not None and not problems:
        reports, set_problems = audit_step.audit(folder, expected.audit, env)
        problems += [f"audit: {p}" for p in set_problems]
        problems += [f"audit: {r.filename}: {v}" for r in reports for v in r.violations]
    if problems:
        msg = f"the wheels in {folder} cannot be released ({len(problems)} problem(s)); nothing was written or uploaded:\n" + "\n".join(f"  - {p}" for p in problems)
        raise ReleaseError(msg)
    return infos


# ----------------------------------------------------------------------------------------------
# Rewriting a wheel to the placeholder version


def build_info(info: WheelInfo, commit: str) -> Dict[str, str]:
    return {
        "commit": commit,
        "platform": info.platform,
        "placeholder_version": PLACEHOLDER_VERSION,
        "version": info.version,
        "wheel": info.path.name,
    }


def placeholder_name(info: WheelInfo) -> str:
    return f"{info.name}-{PLACEHOLDER_VERSION}-py3-none-{info.plat_tag}.whl"


def rewrite_wheel(info: WheelInfo, dest: Path, commit: str) -> None:
    """Write ``info``'s wheel to ``dest`` with the placeholder version and ``_build_info.json``.

    The output depends only on the input's bytes and ``commit``: entries keep their timestamps
    (the new file takes METADATA's), entries are sorted (``.dist-info`` last, RECORD at the end),
    modes are 0644/0755 and RECORD is recomputed.
    """
    new_dist_info = f"{info.name}-{PLACEHOLDER_VERSION}.dist-info"
    entries: Dict[str, Tuple[bytes, Tuple[int, ...], bool]] = {}
    with zipfile.ZipFile(info.path) as zin:
        for item in zin.infolist():
            if item.is_dir():
                continue
            name = item.filename
            if name == f"{info.dist_info}/RECORD":
                continue
            if name == BUILD_INFO:
                msg = f"{info.path.name} already holds {BUILD_INFO}; pass the wheels of the build, not pre-release wheels"
                raise ReleaseError(msg)
            data = zin.read(item)
            if name.startswith(info.dist_info + "/"):
                name = new_dist_info + name[len(info.dist_info):]
            executable = bool((item.external_attr >> 16) & 0o111)
            entries[name] = (data, tuple(item.date_time), executable)
    meta_name = f"{new_dist_info}/METADATA"
    data, date_time, _ = entries[meta_name]
    entries[meta_name] = (_set_version(data.decode("utf-8"), PLACEHOLDER_VERSION).encode("utf-8"), date_time, False)
    info_json = json.dumps(build_info(info, commit), indent=2, sort_keys=True) + "\n"
    entries[BUILD_INFO] = (info_json.encode("utf-8"), date_time, False)
    write_wheel(entries, dest, f"{new_dist_info}/RECORD")


def _set_version(metadata: str, version: str) -> str:
    header, sep, rest = metadata.partition("\n\n")
    new_header, count = re.subn(r"^Version: *.*$", f"Version: {version}", header, count=1, flags=re.MULTILINE)
    if count != 1:
        msg = "METADATA has no Version field"
        raise ReleaseError(msg)
    return new_header + sep + rest


def write_wheel(entries: Mapping[str, Tuple[bytes, Tuple[int, ...], bool]], dest: Path, record: str) -> None:
    """Write a wheel from ``{name: (data, date_time, executable)}`` plus a computed RECORD."""
    names = sorted(entries, key=lambda n: (n.split("/", 1)[0].endswith(".dist-info"), n))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for name in names:
        digest = base64.urlsafe_b64encode(hashlib.sha256(entries[name][0]).digest()).rstrip(b"=").decode("ascii")
        writer.writerow([name, f"sha256={digest}", len(entries[name][0])])
    writer.writerow([record, "", ""])
    last_time = entries[names[-1]][1] if names else (1980, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name, (data, date_time, executable) in [(n, entries[n]) for n in names] + [(record, (text.getvalue().encode("utf-8"), last_time, False))]:
            item = zipfile.ZipInfo(name, date_time=date_time[:6])  # type: ignore[arg-type]
            item.create_system = 3
            item.external_attr = (0o100755 if executable else 0o100644) << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(item, data, compresslevel=9)


# ----------------------------------------------------------------------------------------------
# The release body


@dataclass(frozen=True)
class Asset:
    name: str
    platform: str
    plat_tag: str
    sha256: str
    size: int
    source_wheel: str


def download_url(server_url: str, repo: str, tag: str, name: str) -> str:
    return f"{server_url.rstrip('/')}/{repo}/releases/download/{tag}/{name}"


def render_body(assets: Sequence[Asset], *, repo: str, tag: str, commit: str, version: str, server_url: str = DEFAULT_SERVER_URL) -> str:
    """The release text: an install command per platform (upstream's headings and order), the
    ``--no-deps`` note, and a sha256 table of every file."""
    by_platform = {a.platform: a for a in assets}
    commit_url = f"{server_url.rstrip('/')}/{repo}/commit/{commit}"
    lines = [
        "# Latest `main` wheels",
        "",
        f"Built from commit [`{commit[:12]}`]({commit_url}), bitsandbytes {version}.",
        "",
        f"These links stay the same for every build of `main`. Installers see the placeholder version "
        f"`{PLACEHOLDER_VERSION}`; the installed package reports the real version and commit:",
        "",
        "```bash",
        'python -c "import bitsandbytes; print(bitsandbytes.__version__, bitsandbytes.build_info())"',
        "```",
        "",
        "Each command also works with uv: `uv pip install --reinstall <url>`.",
    ]
    for platform, heading in HEADINGS:
        asset = by_platform.get(platform)
        if asset is None:
            continue
        url = download_url(server_url, repo, tag, asset.name)
        lines += ["", f"## {heading}", "", "```bash", f"pip install --force-reinstall {url}", "```"]
    lines += [
        "",
        "> [!NOTE]",
        "> If you use a custom build of PyTorch (or of NumPy), add `--no-deps` so that the installer keeps it:",
        "> `pip install --force-reinstall --no-deps <url>`.",
        "",
        "## SHA-256",
        "",
    ]
    rows = [(f"`{a.name}`", f"`{a.sha256}`") for a in sorted(assets, key=lambda a: a.name)]
    return "\n".join(lines) + "\n" + render_table(["file", "sha256"], rows)


# ----------------------------------------------------------------------------------------------
# The step


@dataclass(frozen=True)
class PreReleaseJob:
    wheels: Path
    out: Path
    commit: str
    repo: str
    tag: str
    server_url: str
    expected: Expected


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build pre-release", description="Rename wheels to the stable pre-release version; write body.md and release.json.")
    p.add_argument("--wheels", required=True, type=Path, help="folder with one wheel per platform")
    p.add_argument("--out", required=True, type=Path, help="folder to write (replaced atomically)")
    p.add_argument("--commit", required=True, help="full commit id the wheels were built from")
    p.add_argument("--repo", required=True, help="GitHub repository OWNER/NAME the release belongs to (for the download links)")
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"release tag (default: {DEFAULT_TAG})")
    p.add_argument("--server-url", default=DEFAULT_SERVER_URL, help=f"GitHub server (default: {DEFAULT_SERVER_URL})")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--expect", type=Path, help="expect.json of the plan (the audit step's); the wheels are audited against it")
    group.add_argument("--expect-platforms", help="comma-separated platform ids the set must hold, e.g. linux-x86_64,macos-arm64")
    return p


def parse_args(argv: Sequence[str]) -> PreReleaseJob:
    ns = _parser().parse_args(list(argv))
    expected = expected_from_file(ns.expect) if ns.expect else expected_from_platforms(parse_platform_list(ns.expect_platforms))
    return PreReleaseJob(ns.wheels, ns.out, check_commit(ns.commit), check_repo(ns.repo), check_tag(ns.tag), ns.server_url, expected)


def pre_release(job: PreReleaseJob, env: Mapping[str, str]) -> List[Asset]:
    """Check the wheels, then write the release folder atomically; return its assets."""
    infos = check_wheel_set(job.wheels, job.expected, env)
    _check_out(job.out)
    parent = job.out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{job.out.name}.partial-", dir=str(parent)))
    try:
        assets = []
        for info in sorted(infos, key=lambda i: i.platform):
            dest = staging / placeholder_name(info)
            rewrite_wheel(info, dest, job.commit)
            os.chmod(dest, 0o644)
            assets.append(Asset(dest.name, info.platform, info.plat_tag, file_sha256(dest), dest.stat().st_size, info.path.name))
        version = infos[0].version
        body = render_body(assets, repo=job.repo, tag=job.tag, commit=job.commit, version=version, server_url=job.server_url)
        write_text_atomic(staging / BODY, body)
        manifest = {
            "assets": [a.__dict__ for a in assets],
            "body": BODY,
            "commit": job.commit,
            "placeholder_version": PLACEHOLDER_VERSION,
            "repo": job.repo,
            "server_url": job.server_url,
            "tag": job.tag,
            "title": "Latest main wheels",
            "version": version,
        }
        write_text_atomic(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(staging, 0o755)
        _swap_into_place(staging, job.out)
    finally:
        remove_tree(staging)
    for a in assets:
        print(f"{a.sha256}  {a.name}  (from {a.source_wheel})", flush=True)
    print(f"wrote {job.out}/ ({len(assets)} wheel(s), {BODY}, {MANIFEST})", flush=True)
    return assets


def _check_out(out: Path) -> None:
    """``--out`` may be missing, empty, or an earlier release folder (it holds release.json)."""
    if out.exists() and not out.is_dir():
        msg = f"--out {out} is a file; it must be a folder (it is replaced as a whole)"
        raise UsageError(msg)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        msg = f"--out {out} is not empty and holds no {MANIFEST}, so it is not an earlier release folder; choose an empty or new folder"
        raise UsageError(msg)


def _swap_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=str(out.resolve().parent)))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        remove_tree(old)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_step(lambda: pre_release(parse_args(sys.argv[1:] if argv is None else argv), os.environ))
