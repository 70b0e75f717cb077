"""Step ``wheel``: pack the native libraries of one platform into a wheel.

Command line (docs/contracts.md; run in the work directory with relative paths)::

    python3 -m bnb_build wheel --platform P --plat-tag TAG --libs libs --source src --out out

What it does, in order:

1. takes every ``libs/<os>/<arch>/libbitsandbytes_*`` of the platform and checks that each is a
   library of the platform's format and architecture (ELF for Linux with the right machine, a PE DLL
   for Windows with the right COFF machine, a Mach-O dylib for macOS with the right CPU type);
2. chooses the platform tag: the aimed ``--plat-tag``, except that on Linux a library needing a
   newer glibc (its GLIBC_x.y symbol versions) raises the tag to ``manylinux_<x>_<y>_<arch>``; the
   reason is printed. The tag never claims an older glibc than the libraries need;
3. copies ``--source`` (read-only) to a staging folder inside ``--out``, puts the libraries into
   ``bitsandbytes/`` and calls the project's PEP 517 backend (``[build-system] build-backend`` of
   ``pyproject.toml``, which must be installed for this Python) with ``BNB_SKIP_CMAKE=1`` and the
   config setting ``wheel.tags=py3-none-<tag>``;
4. rewrites the wheel so that it is reproducible byte for byte: entries sorted (``.dist-info`` last,
   ``RECORD`` at the very end), timestamps from ``SOURCE_DATE_EPOCH`` (or a fixed default), modes
   0644/0755, a recomputed ``RECORD``; then moves it into ``--out``.
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
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import binfmt, elf, process
from .errors import InputError, WheelError, run_step
from .files import remove_tree
from .platforms import (
    Platform,
    PlatformTag,
    binary_format,
    check_platform_tag,
    get_platform,
    is_library_file,
    manylinux_tag,
)

PACKAGE_DIR = "bitsandbytes"
# Not copied from --source into the staging folder.
IGNORED_SOURCE_NAMES = (".git", "__pycache__", "*.pyc")

# The PEP 517 hook, run by the Python of this step in the staging folder.
BUILD_HOOK = """\
import importlib, json, sys
name, wheel_dir, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
module, _, attrs = name.partition(":")
backend = importlib.import_module(module)
for attr in filter(None, attrs.split(".")):
    backend = getattr(backend, attr)
print("wheel built:", backend.build_wheel(wheel_dir, config))
"""


@dataclass(frozen=True)
class WheelJob:
    platform: Platform
    plat_tag: PlatformTag  # the aimed tag
    libs: Path
    source: Path
    out: Path

    @property
    def libs_dir(self) -> Path:
        return self.libs / self.platform.os / self.platform.arch


# ----------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build wheel", description="Pack one platform's libraries into a wheel.")
    p.add_argument("--platform", required=True, help="platform id, e.g. linux-x86_64")
    p.add_argument("--plat-tag", required=True, help="aimed wheel platform tag, e.g. manylinux_2_28_x86_64")
    p.add_argument("--libs", required=True, type=Path, help="folder with <os>/<arch>/libbitsandbytes_*")
    p.add_argument("--source", required=True, type=Path, help="wheel sources (pyproject.toml, bitsandbytes/...)")
    p.add_argument("--out", required=True, type=Path, help="folder the wheel is written to")
    return p


def parse_args(argv: Sequence[str]) -> WheelJob:
    ns = _parser().parse_args(list(argv))
    platform = get_platform(ns.platform)
    return WheelJob(platform, check_platform_tag(ns.plat_tag, platform), ns.libs, ns.source, ns.out)


# ----------------------------------------------------------------------------------------------
# Libraries and the platform tag


def find_libraries(job: WheelJob) -> List[Path]:
    """The platform's libraries in ``libs/<os>/<arch>``, each checked to be of the platform's format."""
    folder = job.libs_dir
    found = sorted(p for p in folder.glob("libbitsandbytes_*") if p.is_file() and is_library_file(p.name, job.platform)) if folder.is_dir() else []
    if not found:
        present = sorted(p.relative_to(job.libs).as_posix() for p in job.libs.rglob("*") if p.is_file()) if job.libs.is_dir() else []
        msg = (
            f"no libraries for {job.platform.id} in {folder} (expected libbitsandbytes_*{job.platform.library_suffix}); "
            f"files under {job.libs}: {', '.join(present) or 'none'}"
        )
        raise InputError(msg)
    for lib in found:
        check_library_format(lib, job.platform)
    return found


def check_library_format(path: Path, platform: Platform) -> None:
    with open(path, "rb") as f:
        head = f.read(64)
    fmt = binary_format(head)
    if fmt != platform.binary_format:
        msg = f"{path} is {'a ' + fmt if fmt else 'not a'} library, but {platform.id} needs {platform.binary_format}"
        raise WheelError(msg)
    if fmt == "ELF" and platform.elf_machine is not None:
        machine = int.from_bytes(head[18:20], "little")
        if machine != platform.elf_machine:
            msg = f"{path} is an ELF library for machine {machine}, but {platform.id} needs machine {platform.elf_machine}"
            raise WheelError(msg)
    elif fmt in ("PE", "Mach-O") and platform.binary_arch is not None:
        try:
            info = binfmt.read_pe(path) if fmt == "PE" else binfmt.read_macho(path)
        except InputError as e:
            raise WheelError(str(e)) from None
        arch = info.machine if isinstance(info, binfmt.PeInfo) else info.cpu
        kind = info.is_dll if isinstance(info, binfmt.PeInfo) else info.is_dylib
        if arch != platform.binary_arch or not kind:
            what = "DLL" if fmt == "PE" else "dylib"
            msg = f"{path} is a {fmt} {'' if kind else 'non-' + what + ' '}file for {arch}, but {platform.id} needs a {what} for {platform.binary_arch}"
            raise WheelError(msg)


def choose_tag(aimed: PlatformTag, platform: Platform, glibc_needs: Mapping[str, Optional[Tuple[int, int]]]) -> Tuple[str, Optional[str]]:
    """The tag to use and, when it differs from the aimed one, why.

    ``glibc_needs`` maps each library name to the newest GLIBC version it requires (None: none).
    """
    if aimed.glibc is None:
        return aimed.tag, None
    needed = [(v, name) for name, v in glibc_needs.items() if v is not None]
    if not needed:
        return aimed.tag, None
    version, library = max(needed)
    if version <= aimed.glibc:
        return aimed.tag, None
    tag = manylinux_tag(version, platform)
    reason = (
        f"platform tag raised from {aimed.tag} to {tag}: {library} requires GLIBC_{version[0]}.{version[1]} "
        f"(glibc {aimed.glibc[0]}.{aimed.glibc[1]} promised by {aimed.tag}); build in an image with an older glibc "
        "to keep the aimed tag"
    )
    return tag, reason


def glibc_needs(libraries: Sequence[Path]) -> Dict[str, Optional[Tuple[int, int]]]:
    return {lib.name: elf.read_elf(lib).glibc_requirement for lib in libraries}


# ----------------------------------------------------------------------------------------------
# The PEP 517 backend


def backend_name(source: Path) -> str:
    """``[build-system] build-backend`` of ``<source>/pyproject.toml`` (read without a TOML parser)."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        msg = f"no pyproject.toml in --source {source}: the wheel sources need the project's pyproject.toml"
        raise InputError(msg)
    table = re.search(r"^\[build-system\]\s*$(.*?)(?=^\[|\Z)", pyproject.read_text(), re.MULTILINE | re.DOTALL)
    m = re.search(r"""^build-backend\s*=\s*["']([^"']+)["']""", table.group(1) if table else "", re.MULTILINE)
    if not m:
        msg = f"{pyproject} names no [build-system] build-backend"
        raise InputError(msg)
    return m.group(1)


def backend_command(python: str, backend: str, wheel_dir: Path, tag: str) -> List[str]:
    config = {"wheel.tags": f"py3-none-{tag}"}
    return [python, "-c", BUILD_HOOK, backend, str(wheel_dir), json.dumps(config, sort_keys=True)]


def backend_environment(env: Mapping[str, str]) -> Dict[str, str]:
    result = process.reproducible_env(env)
    result["BNB_SKIP_CMAKE"] = "1"
    return result


# ----------------------------------------------------------------------------------------------
# Reproducible zip


def zip_date_time(epoch: int) -> Tuple[int, int, int, int, int, int]:
    return time.gmtime(max(epoch, 315532800))[:6]  # zip cannot hold times before 1980


def normalise_wheel(src: Path, dest: Path, epoch: int) -> None:
    """Rewrite the wheel ``src`` to ``dest``: sorted entries, fixed times and modes, new RECORD."""
    with zipfile.ZipFile(src) as zin:
        entries = {}
        for info in zin.infolist():
            if info.is_dir():
                continue
            executable = bool((info.external_attr >> 16) & 0o111)
            entries[info.filename] = (zin.read(info), executable)
    record = next((n for n in entries if re.match(r"^[^/]+\.dist-info/RECORD$", n)), None)
    if record is None:
        msg = f"{src.name} has no .dist-info/RECORD; the build backend did not write a valid wheel"
        raise WheelError(msg)
    del entries[record]
    names = sorted(entries, key=lambda n: (_in_dist_info(n), n))

    record_text = io.StringIO()
    writer = csv.writer(record_text, lineterminator="\n")
    for name in names:
        data = entries[name][0]
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([record, "", ""])
    entries[record] = (record_text.getvalue().encode("utf-8"), False)

    date_time = zip_date_time(epoch)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name in names + [record]:
            data, executable = entries[name]
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.create_system = 3  # Unix, whatever the host
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, data, compresslevel=9)


def _in_dist_info(name: str) -> bool:
    return name.split("/", 1)[0].endswith(".dist-info")


def check_built_tag(wheel: Path, tag: str) -> None:
    """The backend must have used the tag: in the file name and in the WHEEL metadata."""
    if not wheel.name.endswith(f"-py3-none-{tag}.whl"):
        msg = f"the build backend wrote {wheel.name}, not a py3-none-{tag} wheel: does it honour wheel.tags?"
        raise WheelError(msg)
    with zipfile.ZipFile(wheel) as z:
        meta = next((n for n in z.namelist() if n.endswith(".dist-info/WHEEL")), None)
        tags = re.findall(r"^Tag: (\S+)$", z.read(meta).decode("utf-8"), re.MULTILINE) if meta else []
    if tags != [f"py3-none-{tag}"]:
        msg = f"{wheel.name}: WHEEL metadata lists tags {tags}, expected ['py3-none-{tag}']"
        raise WheelError(msg)


# ----------------------------------------------------------------------------------------------
# Running it


def build(job: WheelJob, env: Mapping[str, str]) -> Path:
    """Build the wheel of ``job``; return its path in ``--out``."""
    libraries = find_libraries(job)
    tag, reason = choose_tag(job.plat_tag, job.platform, glibc_needs(libraries) if job.platform.binary_format == "ELF" else {})
    if reason:
        print(reason, flush=True)
    backend = backend_name(job.source)
    run_env = backend_environment(env)

    job.out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-wheel-", dir=str(job.out)))
    try:
        source = staging / "src"
        shutil.copytree(job.source, source, ignore=shutil.ignore_patterns(*IGNORED_SOURCE_NAMES))
        _make_writable(source)
        package = source / PACKAGE_DIR
        package.mkdir(exist_ok=True)
        for stale in sorted(package.glob("libbitsandbytes_*")):
            print(f"removing {stale.name} from the copied sources (the wheel gets the libraries of --libs)")
            stale.unlink()
        for lib in libraries:
            shutil.copyfile(lib, package / lib.name)
            os.chmod(package / lib.name, 0o755)
            print(f"packing {lib.relative_to(job.libs).as_posix()}", flush=True)

        built_dir = staging / "dist"
        built_dir.mkdir()
        process.run(backend_command(process.python_executable(), backend, built_dir.resolve(), tag), env=run_env, cwd=source)
        built = sorted(built_dir.glob("*.whl"))
        if len(built) != 1:
            msg = f"the build backend {backend} wrote {len(built)} wheels to {built_dir}, expected one"
            raise WheelError(msg)
        check_built_tag(built[0], tag)
        normalised = staging / built[0].name
        normalise_wheel(built[0], normalised, int(run_env["SOURCE_DATE_EPOCH"]))
        final = job.out / built[0].name
        os.chmod(normalised, 0o644)
        os.replace(normalised, final)
    finally:
        remove_tree(staging)
    print(f"wrote {final} ({_sha256(final)})", flush=True)
    return final


def _make_writable(root: Path) -> None:
    """The sources may be read-only (a container mount); the copy must not be."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, os.stat(path).st_mode | 0o200)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_step(lambda: build(parse_args(sys.argv[1:] if argv is None else argv), os.environ))
