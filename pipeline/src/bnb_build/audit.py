"""Step ``audit``: check the wheels against what the plan expects; write a Markdown report.

Command line (docs/contracts.md)::

    python3 -m bnb_build audit --wheels wheels --expect expect.json --report audit.md

``expect.json``::

    {"wheels": {"linux-x86_64": {"plat_tag": "manylinux_2_28_x86_64",
                                 "libraries": {"libbitsandbytes_cpu.so": {"backend": "cpu", "archs": [], "openmp": true},
                                               "libbitsandbytes_cuda130.so": {"backend": "cuda", "archs": ["75", "90"]}}}},
     "exemptions": {"libbitsandbytes_cuda130.so": "why its glibc requirement is accepted"},
     "symbol_parity": true, "runtime_dispatch": true}

A wheel may name its ``cpu_floor`` (``"cpu_floor": "x86-64-v2"`` beside ``plat_tag``: a level of
``cpu_levels`` for the platform's arch). ``runtime_dispatch`` (default false): the tree declares that
its libraries check the CPU at run time before running code above the floor.

``openmp`` (default false): the tree's CMake asks for OpenMP for that library. ``symbol_parity``
(default false): the tree declares that its libraries of one backend and architecture export the
same C functions.

Checks, each failure a *violation*:

- every wheel is a readable zip archive (else the step stops with a usage error naming the file,
  exit code 2, and writes no report);
- the wheels folder holds wheels, exactly one per expected platform and none for other platforms;
- each wheel's platform tag is the expected one and names the wheel's platform;
- the wheel holds exactly the expected ``libbitsandbytes_*`` libraries (grafted ones under
  ``<package>.libs/`` are listed, other native files are violations);
- each library is of the platform's format, and its newest GLIBC_x.y requirement fits the glibc the
  tag promises (an exemption turns this violation into a note with its reason);
- no ELF library has a RUNPATH or RPATH entry other than ``$ORIGIN``-relative ones (an absolute
  path such as ``/usr/local/cuda/lib64`` names a folder of the build machine);
- CUDA libraries hold SASS for every expected arch, HIP libraries code for every expected gfx target;
- Windows libraries are DLLs for the platform's COFF machine that import system DLLs only (the UCRT's
  api sets, KERNEL32...; the VC++ runtime DLLs CPython ships) and export none of the C runtime's
  functions (``binfmt.c_runtime_exports``: a DLL with no export annotations exports what it links
  statically); macOS libraries are dylibs for the platform's CPU that load system libraries only
  (/usr/lib, /System) and need no macOS newer than the tag's (LC_BUILD_VERSION minos). An exemption
  turns a dependency violation into a note; a dylib's C++ exports (a static libc++'s operator
  new/delete) are a note;
- with ``"symbol_parity": true``: the libraries of one backend and one architecture (x86-64:
  linux-x86_64 and windows-x64; arm64: linux-aarch64, windows-arm64 and macos-arm64) export the
  same C symbols, whatever the platform. C symbols are the exported functions whose names are C
  identifiers not starting with ``_`` (``binfmt.is_c_symbol``: no C++ names, none of the
  toolchain's such as ``__cudaRegisterLinkedBinary_*``, ``_init``, ``_end``). Without it the C
  symbols are listed, never compared.

- with a ``cpu_floor``: the ISA report (``isa_report``) of each ELF and PE library: code that runs
  while the library loads (static constructors, ``DT_INIT``, a DLL's entry point and TLS callbacks,
  and the code they reach through direct calls and jumps) and uses an extension above the floor;
  other code above the floor unless ``runtime_dispatch``. Each violation names library, function,
  instruction and extension.
  Without a floor the extensions are listed only.

*Warnings* are listed without failing the step: a library whose tree asks for OpenMP but that links
no OpenMP runtime (an ELF NEEDED, PE import or Mach-O load of ``libgomp*``, ``libomp*``,
``libiomp*`` or ``vcomp*``, or such a library bundled under ``<package>.libs/``).

GLIBCXX/CXXABI requirements, NEEDED entries and the OpenMP runtime are listed. On Linux wheels
``auditwheel show`` runs when auditwheel is on PATH and its output goes into the report. The report
is deterministic and written atomically; the step exits non-zero when there is any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import binfmt, cpu_levels, elf, isa_report, process
from .errors import AuditFailed, CorruptWheel, InputError, StepError, ToolFailed, UsageError, run_step
from .files import write_text_atomic
from .platforms import PLATFORMS, PlatformTag, binary_format, check_platform_tag, get_platform, parse_platform_tag

_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_NATIVE_FILE = re.compile(r"\.(so(\.\d+)*|dll|dylib|pyd)$")
_LIBRARY_FILE = re.compile(r"(^|/)libbitsandbytes_[^/]+$")

ARCHITECTURES = {"x86_64": "x86-64", "x64": "x86-64", "aarch64": "arm64", "arm64": "arm64"}
"""Architecture of a platform's arch, for symbol parity: linux-x86_64 and windows-x64 are both x86-64."""

OPENMP_RUNTIMES = ("libgomp", "libomp", "libiomp", "vcomp")
MSVC_OPENMP_DLLS = ("vcomp140.dll",)
"""MSVC's OpenMP runtime: a Windows library of a tree that asks for OpenMP may import it."""
"""File name prefixes of the OpenMP runtimes: GCC's, LLVM's, Intel's, MSVC's (vcomp140.dll)."""

_TOP_KEYS = ("wheels", "exemptions", "symbol_parity", "runtime_dispatch")
_LIBRARY_KEYS = ("backend", "archs", "openmp")


@dataclass(frozen=True)
class ExpectedLibrary:
    backend: str
    archs: Tuple[str, ...]
    openmp: bool = False  # the tree's CMake asks for OpenMP


@dataclass(frozen=True)
class ExpectedWheel:
    platform: str
    plat_tag: str
    libraries: Mapping[str, ExpectedLibrary]
    cpu_floor: Optional[str] = None  # the oldest CPU the wheel runs on (a level of cpu_levels)


@dataclass(frozen=True)
class Expectations:
    wheels: Mapping[str, ExpectedWheel]
    exemptions: Mapping[str, str]
    symbol_parity: bool = False
    runtime_dispatch: bool = False  # the libraries check the CPU before running code above the floor


@dataclass
class LibraryReport:
    path: str
    backend: str = ""
    glibc: str = "-"
    glibcxx: str = "-"
    cxxabi: str = "-"
    gpu_targets: str = "-"
    needed: str = "-"
    dependencies: Tuple[str, ...] = ()  # NEEDED entries, imported DLLs, loaded dylibs
    openmp: str = "-"
    exports: Tuple[str, ...] = ()
    c_symbols: Tuple[str, ...] = ()
    read: bool = False  # the file could be read (its C symbols are known)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class WheelReport:
    filename: str
    platform: str = "?"
    tag: str = "?"
    violations: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    libraries: List[LibraryReport] = field(default_factory=list)
    isa: List[isa_report.IsaReport] = field(default_factory=list)
    auditwheel: Optional[str] = None

    @property
    def verdict(self) -> str:
        return "FAIL" if self.violations else "PASS"


# ----------------------------------------------------------------------------------------------
# expect.json


def load_expectations(path: Path) -> Expectations:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        msg = f"--expect {path} does not exist"
        raise InputError(msg) from None
    except json.JSONDecodeError as e:
        msg = f"--expect {path} is not valid JSON: {e}"
        raise InputError(msg) from None
    return parse_expectations(raw, str(path))


def parse_expectations(raw: object, where: str = "expect.json") -> Expectations:
    def fail(what: str) -> UsageError:
        return UsageError(f"{where}: {what}")

    unknown = sorted(set(raw) - set(_TOP_KEYS)) if isinstance(raw, dict) else []
    if unknown:
        raise fail(f"unknown keys {unknown}; allowed: {', '.join(_TOP_KEYS)}")
    if not isinstance(raw, dict) or not isinstance(raw.get("wheels"), dict) or not raw["wheels"]:
        raise fail('expected {"wheels": {platform: {"plat_tag": ..., "libraries": {...}}}, "exemptions": {...}, "symbol_parity": false}')
    wheels = {}
    for platform_id, spec in sorted(raw["wheels"].items()):
        platform = get_platform(platform_id)
        if not isinstance(spec, dict) or not isinstance(spec.get("plat_tag"), str) or not isinstance(spec.get("libraries"), dict):
            raise fail(f'wheels.{platform_id} needs "plat_tag" (a string) and "libraries" (an object)')
        check_platform_tag(spec["plat_tag"], platform)
        libraries = {}
        for name, lib in sorted(spec["libraries"].items()):
            where_lib = f"wheels.{platform_id}.libraries.{name}"
            if not isinstance(lib, dict) or not isinstance(lib.get("backend"), str):
                raise fail(f'{where_lib} needs "backend" and optionally "archs" and "openmp"')
            extra = sorted(set(lib) - set(_LIBRARY_KEYS))
            if extra:
                raise fail(f"{where_lib}: unknown keys {extra}; allowed: {', '.join(_LIBRARY_KEYS)}")
            if not isinstance(lib.get("openmp", False), bool):
                raise fail(f'{where_lib}: "openmp" must be true or false, not {lib["openmp"]!r}')
            libraries[name] = ExpectedLibrary(lib["backend"], tuple(str(a) for a in lib.get("archs", [])), lib.get("openmp", False))
        floor = spec.get("cpu_floor")
        if floor is not None:
            try:
                cpu_levels.check_level(platform.arch, floor if isinstance(floor, str) else repr(floor))
            except ValueError as e:
                raise fail(f"wheels.{platform_id}.cpu_floor: {e}") from None
        wheels[platform_id] = ExpectedWheel(platform_id, spec["plat_tag"], libraries, floor)
    exemptions = raw.get("exemptions", {})
    if not isinstance(exemptions, dict) or not all(isinstance(v, str) for v in exemptions.values()):
        raise fail('"exemptions" must map library names to reasons (strings)')
    parity = raw.get("symbol_parity", False)
    if not isinstance(parity, bool):
        raise fail(f'"symbol_parity" must be true or false, not {parity!r}')
    dispatch = raw.get("runtime_dispatch", False)
    if not isinstance(dispatch, bool):
        raise fail(f'"runtime_dispatch" must be true or false, not {dispatch!r}')
    return Expectations(wheels, dict(sorted(exemptions.items())), parity, dispatch)


# ----------------------------------------------------------------------------------------------
# Wheel archives


def archive_problem(path: Path) -> Optional[str]:
    """Why ``path`` is no readable zip archive (every entry read and its CRC checked), or None."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as e:
        return str(e) or type(e).__name__
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    return f"entry {bad} is damaged (CRC mismatch)" if bad is not None else None


def check_wheel_archives(paths: Sequence[Path]) -> None:
    """Raise CorruptWheel naming every file of ``paths`` that is no readable zip archive."""
    problems = [(p, archive_problem(p)) for p in paths]
    bad = [f"{p} ({why})" for p, why in problems if why is not None]
    if bad:
        msg = (
            f"{'this file is' if len(bad) == 1 else 'these files are'} not a readable wheel (zip archive): {'; '.join(bad)}; "
            "build or download it again (a truncated copy or another file named *.whl); nothing was written or uploaded"
        )
        raise CorruptWheel(msg)


# ----------------------------------------------------------------------------------------------
# Checks


def wheel_platform_tags(filename: str) -> Tuple[str, List[PlatformTag]]:
    """The platform tag part of a wheel name and its parsed tags (``a.b`` holds two)."""
    m = _WHEEL_NAME.match(filename)
    if not m:
        msg = f"{filename} is not a wheel file name (name-version-py-abi-platform.whl)"
        raise UsageError(msg)
    plat = m.group("plat")
    return plat, [parse_platform_tag(t) for t in plat.split(".")]


def audit_wheel(path: Path, expect: Expectations) -> WheelReport:
    report = WheelReport(path.name)
    try:
        report.tag, tags = wheel_platform_tags(path.name)
    except UsageError as e:
        report.violations.append(str(e))
        return report
    platforms = sorted({t.platform_id for t in tags})
    if len(platforms) != 1:
        report.violations.append(f"platform tag {report.tag} names several platforms: {', '.join(platforms)}")
        return report
    report.platform = platforms[0]
    expected = expect.wheels.get(report.platform)
    if expected is None:
        report.violations.append(f"no wheel is expected for {report.platform}; expected: {', '.join(expect.wheels)}")
        return report
    if report.tag != expected.plat_tag:
        report.violations.append(f"platform tag is {report.tag}, expected {expected.plat_tag}")
    glibcs = [t.glibc for t in tags if t.glibc is not None]
    promised = min(glibcs) if glibcs else None

    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
        libraries = {n.rsplit("/", 1)[-1]: n for n in names if _LIBRARY_FILE.search(n)}
        bundled = []
        for name in names:
            if _NATIVE_FILE.search(name) and name not in libraries.values():
                if name.split("/", 1)[0].endswith(".libs"):
                    report.notes.append(f"bundled library {name}")
                    bundled.append(name)
                else:
                    report.violations.append(f"unexpected native file {name}")
        for missing in sorted(set(expected.libraries) - set(libraries)):
            report.violations.append(f"expected library {missing} is missing")
        for extra in sorted(set(libraries) - set(expected.libraries)):
            report.violations.append(f"unexpected library {libraries[extra]}")
        for name in sorted(set(libraries) & set(expected.libraries)):
            data = z.read(libraries[name])
            lib = _check_library(libraries[name], data, expected.libraries[name], report, promised, expect.exemptions)
            if lib.read:
                _check_isa(libraries[name], data, expected.cpu_floor, expect.runtime_dispatch, report)
            if lib.read:
                _check_openmp(lib, expected.libraries[name], bundled, report)
            report.libraries.append(lib)
    return report


def _check_library(
    path: str,
    data: bytes,
    expected: ExpectedLibrary,
    report: WheelReport,
    promised: Optional[Tuple[int, int]],
    exemptions: Mapping[str, str],
) -> LibraryReport:
    name = path.rsplit("/", 1)[-1]
    lib = LibraryReport(path, backend=expected.backend)
    platform = PLATFORMS[report.platform]
    fmt = binary_format(data[:64])
    if fmt != platform.binary_format:
        report.violations.append(f"{name} is {fmt or 'not a known'} format, {report.platform} needs {platform.binary_format}")
        return lib
    if fmt != "ELF":
        _check_foreign_library(name, data, fmt, lib, report, exemptions, openmp=expected.openmp)
        return lib
    try:
        info = elf.parse_elf(data, name)
    except StepError as e:
        report.violations.append(str(e))
        return lib
    lib.read = True
    if platform.elf_machine is not None and info.machine != platform.elf_machine:
        report.violations.append(f"{name} is for ELF machine {info.machine}, {report.platform} needs {platform.elf_machine}")

    needs = info.glibc_requirement
    lib.glibc = f"{needs[0]}.{needs[1]}" if needs else "-"
    lib.glibcxx = (info.required_versions("GLIBCXX_") or ["-"])[-1]
    lib.cxxabi = (info.required_versions("CXXABI_") or ["-"])[-1]
    lib.dependencies = tuple(info.needed)
    lib.needed = ", ".join(info.needed) or "-"
    lib.exports = tuple(info.exported)
    lib.c_symbols = tuple(binfmt.c_symbols(info.exported_functions))
    if needs and promised and needs > promised:
        problem = f"{name} requires GLIBC_{lib.glibc}, newer than glibc {promised[0]}.{promised[1]} of {report.tag}"
        if name in exemptions:
            report.notes.append(f"{problem} (exempted: {exemptions[name]})")
        else:
            report.violations.append(problem)
    for kind, entries in (("RUNPATH", info.runpath), ("RPATH", info.rpath)):
        for entry in entries:
            if entry and not _origin_relative(entry):
                where = "an absolute path" if entry.startswith("/") else "a path relative to the working directory"
                report.violations.append(f"{name} has {kind} {entry}, {where}; a wheel's libraries may only name folders relative to $ORIGIN")

    if expected.backend == "cuda":
        found = info.sass_archs
        lib.gpu_targets = " ".join(found) or "none"
        want = [a if a.startswith("sm_") else f"sm_{a}" for a in expected.archs]
        missing = [a for a in want if a not in found]
        if missing:
            report.violations.append(f"{name} has no SASS for {', '.join(missing)} (found: {lib.gpu_targets})")
    elif expected.backend == "hip":
        found = info.gfx_targets
        lib.gpu_targets = " ".join(found) or "none"
        if found == [elf.COMPRESSED_UNKNOWN]:
            report.notes.append(f"{name}: compressed offload bundle, gfx targets not verifiable")
        else:
            base = {t.split(":", 1)[0] for t in found}
            missing = [a for a in expected.archs if a.split(":", 1)[0] not in base]
            if missing:
                report.violations.append(f"{name} has no code for {', '.join(missing)} (found: {lib.gpu_targets})")
    return lib


def _check_isa(path: str, data: bytes, floor: Optional[str], runtime_dispatch: bool, report: WheelReport) -> None:
    """The ISA report of one library (ELF or PE; a Mach-O dylib is listed as not analysed)."""
    name = path.rsplit("/", 1)[-1]
    if binary_format(data[:64]) == "Mach-O":
        report.isa.append(isa_report.IsaReport(name, floor=floor, skipped="Mach-O is not analysed"))
        return
    try:
        isa = isa_report.analyse(data, name, floor)
    except InputError as e:
        report.violations.append(f"{name}: no ISA report: {e}")
        return
    report.isa.append(isa)
    report.violations.extend(isa.violations(runtime_dispatch) if floor else [])


def _origin_relative(entry: str) -> bool:
    return any(entry == o or entry.startswith(o + "/") for o in ("$ORIGIN", "${ORIGIN}"))


def _check_foreign_library(name: str, data: bytes, fmt: str, lib: LibraryReport, report: WheelReport, exemptions: Mapping[str, str],
                           *, openmp: bool = False) -> None:  # fmt: skip
    """PE and Mach-O libraries: architecture, kind, dependencies, exports, minimum macOS (see the module docs)."""
    platform = PLATFORMS[report.platform]
    try:
        if fmt == "PE":
            pe = binfmt.parse_pe(data, name)
            arch, kind_ok, kind = pe.machine, pe.is_dll, "DLL"
            deps = pe.imports
            foreign = [d for d in deps if not binfmt.is_windows_system_dll(d)]
            if openmp:  # MSVC's OpenMP runtime, which the tree asked for, comes with the Visual C++ runtime
                msvc_openmp = [d for d in foreign if d.lower() in MSVC_OPENMP_DLLS]
                foreign = [d for d in foreign if d not in msvc_openmp]
                report.notes += [f"{name} needs {d}, MSVC's OpenMP runtime (the Visual C++ Redistributable; PyTorch ships it)" for d in msvc_openmp]
            lib.exports, minimum = tuple(pe.exported), None
            lib.c_symbols = tuple(binfmt.c_symbols(pe.exported_functions))
            runtime = binfmt.c_runtime_exports(pe.exported)
            if runtime:
                report.violations.append(
                    f"{name} exports C runtime symbols: {', '.join(runtime)} (a DLL with nothing marked for export exports "
                    "what it links statically, and MinGW's CMAKE_WINDOWS_EXPORT_ALL_SYMBOLS exports all of it: build it with MSVC, "
                    "as the plan does for a tree whose CMake sets that unless it asks for cpu-toolchain = \"zig\", or mark the "
                    "library's own functions with __declspec(dllexport) or list them in a .def file)"
                )
        else:
            macho = binfmt.parse_macho(data, name)
            arch, kind_ok, kind = macho.cpu, macho.is_dylib, "dylib"
            deps = macho.dylibs
            foreign = [d for d in deps if not binfmt.is_macos_system_dylib(d)]
            lib.exports, minimum = tuple(macho.exported), macho.min_os
            lib.c_symbols = tuple(binfmt.c_symbols(macho.exported_functions))
            if macho.exported_cxx:
                report.notes.append(f"{name} also exports {len(macho.exported_cxx)} C++ symbol(s), e.g. {macho.exported_cxx[0]} (the static libc++'s operator new/delete)")
    except StepError as e:
        report.violations.append(str(e))
        return
    lib.read = True
    lib.dependencies = tuple(deps)
    lib.needed = ", ".join(deps) or "-"
    if arch != platform.binary_arch or not kind_ok:
        report.violations.append(f"{name} is a {fmt} {'' if kind_ok else 'non-' + kind + ' '}file for {arch}, {report.platform} needs a {kind} for {platform.binary_arch}")
    if foreign:
        problem = f"{name} needs {', '.join(foreign)}, which {report.platform} does not have"
        if name in exemptions:
            report.notes.append(f"{problem} (exempted: {exemptions[name]})")
        else:
            report.violations.append(problem)
    if minimum is not None:
        lib.glibc = f"macOS {minimum[0]}.{minimum[1]}"
        m = re.match(r"^macosx_(\d+)_(\d+)_", report.tag)
        if m and minimum > (int(m.group(1)), int(m.group(2))):
            report.violations.append(f"{name} needs macOS {minimum[0]}.{minimum[1]}, newer than {report.tag} promises")


def openmp_runtime(dependencies: Sequence[str], bundled: Sequence[str]) -> Optional[str]:
    """The OpenMP runtime among a library's dependencies (file names or paths), else one bundled
    in the wheel (``<package>.libs/...``); None when there is neither."""

    def is_openmp(path: str) -> bool:
        return path.replace("\\", "/").rsplit("/", 1)[-1].lower().startswith(OPENMP_RUNTIMES)

    bundled_names = {b.rsplit("/", 1)[-1]: b for b in bundled if is_openmp(b)}
    for dep in dependencies:
        if is_openmp(dep):
            base = dep.rsplit("/", 1)[-1]
            return f"{dep} (bundled as {bundled_names[base]})" if base in bundled_names else dep
    if bundled_names:
        return f"{sorted(bundled_names.values())[0]} (bundled)"
    return None


def _check_openmp(lib: LibraryReport, expected: ExpectedLibrary, bundled: Sequence[str], report: WheelReport) -> None:
    runtime = openmp_runtime(lib.dependencies, bundled)
    lib.openmp = runtime or "-"
    if not expected.openmp:
        return
    if runtime:
        report.notes.append(f"{lib.name}: OpenMP: {runtime}")
    else:
        report.warnings.append(f"OpenMP: the tree asks for it; {lib.name} was built without it")


def architecture(platform_id: str) -> str:
    """The architecture of a platform for symbol parity (``x86-64``, ``arm64``)."""
    arch = PLATFORMS[platform_id].arch
    return ARCHITECTURES.get(arch, arch)


def symbol_parity(reports: Sequence[WheelReport]) -> List[str]:
    """Libraries exporting other C symbols than the others of their backend and architecture.

    In each group the reference is the symbol set most libraries export (on a tie, the first
    library's, in wheel and library order); every library with another set is a violation.
    """
    groups: Dict[Tuple[str, str], List[Tuple[WheelReport, LibraryReport]]] = {}
    for r in reports:
        for lib in r.libraries:
            if lib.read:
                groups.setdefault((lib.backend, architecture(r.platform)), []).append((r, lib))
    problems = []
    for (backend, arch), members in sorted(groups.items()):
        sets = [frozenset(lib.c_symbols) for _, lib in members]
        reference = max(sets, key=lambda s: (sets.count(s), -sets.index(s)))
        ref_wheel, ref_lib = members[sets.index(reference)]
        for (r, lib), symbols in zip(members, sets):
            if symbols == reference:
                continue
            missing, extra = sorted(reference - symbols), sorted(symbols - reference)
            what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                               f"extra {', '.join(extra)}" if extra else "") if part)  # fmt: skip
            problems.append(
                f"symbol parity ({backend}, {arch}): {r.platform} {lib.path} exports other C symbols than "
                f"{ref_wheel.platform} {ref_lib.path} ({what})"
            )
    return problems


def run_auditwheel(report: WheelReport, wheels_dir: Path, env: Mapping[str, str]) -> None:
    if not report.platform.startswith("linux-"):
        return
    if not process.has_tool("auditwheel", env):
        report.auditwheel = "auditwheel was not available (not on PATH); not run."
        return
    argv = [process.find_tool("auditwheel", env), "show", report.filename]
    # auditwheel prints Python sets; a fixed hash seed keeps their order, and so the report, stable.
    run_env = dict(env, PYTHONHASHSEED="0")
    try:
        output = process.run(argv, env=run_env, cwd=wheels_dir, echo=False)
    except ToolFailed as e:
        output = f"{e.output_tail}\n(auditwheel show exited with code {e.returncode})"
    report.auditwheel = output.strip()


def audit(wheels_dir: Path, expect: Expectations, env: Mapping[str, str]) -> Tuple[List[WheelReport], List[str]]:
    """Audit every wheel in ``wheels_dir``; return the per-wheel reports and the set-level violations.

    Raises CorruptWheel, before auditing any, when a wheel is no readable zip archive."""
    if not wheels_dir.is_dir():
        msg = f"--wheels {wheels_dir} is not a folder"
        raise InputError(msg)
    wheels = sorted(wheels_dir.glob("*.whl"))
    if not wheels:
        msg = f"no wheels (*.whl) in {wheels_dir}; run the wheel step first"
        raise InputError(msg)
    check_wheel_archives(wheels)
    reports = []
    for wheel in wheels:
        report = audit_wheel(wheel, expect)
        run_auditwheel(report, wheels_dir, env)
        reports.append(report)
    problems = []
    for platform in expect.wheels:
        count = sum(1 for r in reports if r.platform == platform)
        if count == 0:
            problems.append(f"no wheel for {platform}")
        elif count > 1:
            problems.append(f"{count} wheels for {platform}, expected exactly one")
    if expect.symbol_parity:
        problems += symbol_parity(reports)
    return reports, problems


# ----------------------------------------------------------------------------------------------
# Report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def render_report(reports: Sequence[WheelReport], problems: Sequence[str], expect: Expectations) -> str:
    total = len(problems) + sum(len(r.violations) for r in reports)
    warnings = [(r.filename, w) for r in reports for w in r.warnings]
    counts = _plural(total, "violation") + (f"; {_plural(len(warnings), 'warning')}" if warnings else "")
    lines = ["# Wheel audit", "", f"Result: **{'FAIL' if total else 'PASS'}** ({counts})", ""]
    lines += ["| wheel | platform | tag | verdict |", "|---|---|---|---|"]
    lines += [f"| {_cell(r.filename)} | {r.platform} | {_cell(r.tag)} | {r.verdict} |" for r in reports]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- warning: {wheel}: {w}" for wheel, w in warnings]
    if problems:
        lines += ["", "## Wheel set", ""] + [f"- violation: {p}" for p in problems]
    if expect.exemptions:
        lines += ["", "## Exemptions", ""] + [f"- {name}: {why}" for name, why in expect.exemptions.items()]
    parity = ("symbol_parity: the same as the other libraries of its backend and architecture"
              if expect.symbol_parity else "listed only: expect.json does not declare symbol_parity")  # fmt: skip
    for r in reports:
        lines += ["", f"## {r.filename}", "", f"Verdict: **{r.verdict}**"]
        items = [f"- violation: {v}" for v in r.violations] + [f"- warning: {w}" for w in r.warnings] + [f"- note: {n}" for n in r.notes]
        lines += [""] + items if items else []
        if r.libraries:
            lines += ["", "| library | backend | needs glibc | GLIBCXX | CXXABI | GPU targets | NEEDED | OpenMP | C symbols |",
                      "|---|---|---|---|---|---|---|---|---|"]
            lines += [
                f"| {_cell(l.path)} | {l.backend} | {l.glibc} | {l.glibcxx} | {l.cxxabi} | {_cell(l.gpu_targets)} | {_cell(l.needed)} | {_cell(l.openmp)} | {len(l.c_symbols)} |"
                for l in r.libraries
            ]
            lines += ["", f"C symbols ({parity}):", ""]
            lines += [f"- {l.path}: {', '.join(l.c_symbols) or 'none'}" for l in r.libraries]
        lines += isa_report.render(r.isa, expect.runtime_dispatch, _cell)
        if r.auditwheel is not None:
            lines += ["", "auditwheel show:", "", "```text", r.auditwheel, "```"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build audit", description="Check wheels; write a Markdown report.")
    p.add_argument("--wheels", required=True, type=Path, help="folder with the wheels")
    p.add_argument("--expect", required=True, type=Path, help="expect.json (see the module docs)")
    p.add_argument("--report", required=True, type=Path, help="Markdown report to write")
    return p


def run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Audit; raise AuditFailed (after writing the report) when there is a violation."""
    ns = _parser().parse_args(list(argv))
    expect = load_expectations(ns.expect)
    reports, problems = audit(ns.wheels, expect, env)
    write_text_atomic(ns.report, render_report(reports, problems, expect))
    violations = problems + [f"{r.filename}: {v}" for r in reports for v in r.violations]
    for r in reports:
        for w in r.warnings:
            print(f"warning: {r.filename}: {w}", flush=True)
    print(f"wrote {ns.report}", flush=True)
    if violations:
        msg = f"{len(violations)} violation(s), see {ns.report}:\n" + "\n".join(f"  - {v}" for v in violations)
        raise AuditFailed(msg)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_step(lambda: run(sys.argv[1:] if argv is None else argv, os.environ))
