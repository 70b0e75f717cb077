"""Step ``audit``: check the wheels against what the plan expects; write a Markdown report.

Command line (docs/contracts.md)::

    python3 -m bnb_build audit --wheels wheels --expect expect.json --report audit.md

``expect.json``::

    {"wheels": {"linux-x86_64": {"plat_tag": "manylinux_2_28_x86_64",
                                 "libraries": {"libbitsandbytes_cpu.so": {"backend": "cpu", "archs": []},
                                               "libbitsandbytes_cuda130.so": {"backend": "cuda", "archs": ["75", "90"]}}}},
     "exemptions": {"libbitsandbytes_cuda130.so": "why its glibc requirement is accepted"}}

Checks, each failure a *violation*:

- the wheels folder holds wheels, exactly one per expected platform and none for other platforms;
- each wheel's platform tag is the expected one and names the wheel's platform;
- the wheel holds exactly the expected ``libbitsandbytes_*`` libraries (grafted ones under
  ``<package>.libs/`` are listed, other native files are violations);
- each library is of the platform's format, and its newest GLIBC_x.y requirement fits the glibc the
  tag promises (an exemption turns this violation into a note with its reason);
- CUDA libraries hold SASS for every expected arch, HIP libraries code for every expected gfx target;
- Windows libraries are DLLs for the platform's COFF machine that import system DLLs only (the UCRT's
  api sets, KERNEL32...; the VC++ runtime DLLs CPython ships); macOS libraries are dylibs for the
  platform's CPU that load system libraries only (/usr/lib, /System) and need no macOS newer than the
  tag's (LC_BUILD_VERSION minos). An exemption turns a dependency violation into a note;
- every library exports the same C symbols as the Linux x86_64 CPU library when the audited wheels
  hold that one (the C ABI of csrc/bitsandbytes.h, whatever the platform or backend).

GLIBCXX/CXXABI requirements and NEEDED entries are listed. On Linux wheels ``auditwheel show`` runs
when auditwheel is on PATH and its output goes into the report. The report is deterministic and
written atomically; the step exits non-zero when there is any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from . import binfmt, elf, process
from .errors import AuditFailed, InputError, StepError, ToolFailed, UsageError, run_step
from .files import write_text_atomic
from .platforms import PLATFORMS, PlatformTag, binary_format, check_platform_tag, get_platform, parse_platform_tag

_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_NATIVE_FILE = re.compile(r"\.(so(\.\d+)*|dll|dylib|pyd)$")
_LIBRARY_FILE = re.compile(r"(^|/)libbitsandbytes_[^/]+$")


@dataclass(frozen=True)
class ExpectedLibrary:
    backend: str
    archs: Tuple[str, ...]


@dataclass(frozen=True)
class ExpectedWheel:
    platform: str
    plat_tag: str
    libraries: Mapping[str, ExpectedLibrary]


@dataclass(frozen=True)
class Expectations:
    wheels: Mapping[str, ExpectedWheel]
    exemptions: Mapping[str, str]


@dataclass
class LibraryReport:
    path: str
    backend: str = ""
    glibc: str = "-"
    glibcxx: str = "-"
    cxxabi: str = "-"
    gpu_targets: str = "-"
    needed: str = "-"
    exports: Tuple[str, ...] = ()


@dataclass
class WheelReport:
    filename: str
    platform: str = "?"
    tag: str = "?"
    violations: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    libraries: List[LibraryReport] = field(default_factory=list)
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

    unknown = sorted(set(raw) - {"wheels", "exemptions"}) if isinstance(raw, dict) else []
    if unknown:
        raise fail(f"unknown keys {unknown}; allowed: wheels, exemptions")
    if not isinstance(raw, dict) or not isinstance(raw.get("wheels"), dict) or not raw["wheels"]:
        raise fail('expected {"wheels": {platform: {"plat_tag": ..., "libraries": {...}}}, "exemptions": {...}}')
    wheels = {}
    for platform_id, spec in sorted(raw["wheels"].items()):
        platform = get_platform(platform_id)
        if not isinstance(spec, dict) or not isinstance(spec.get("plat_tag"), str) or not isinstance(spec.get("libraries"), dict):
            raise fail(f'wheels.{platform_id} needs "plat_tag" (a string) and "libraries" (an object)')
        check_platform_tag(spec["plat_tag"], platform)
        libraries = {}
        for name, lib in sorted(spec["libraries"].items()):
            if not isinstance(lib, dict) or not isinstance(lib.get("backend"), str):
                raise fail(f'wheels.{platform_id}.libraries.{name} needs "backend" and optionally "archs"')
            libraries[name] = ExpectedLibrary(lib["backend"], tuple(str(a) for a in lib.get("archs", [])))
        wheels[platform_id] = ExpectedWheel(platform_id, spec["plat_tag"], libraries)
    exemptions = raw.get("exemptions", {})
    if not isinstance(exemptions, dict) or not all(isinstance(v, str) for v in exemptions.values()):
        raise fail('"exemptions" must map library names to reasons (strings)')
    return Expectations(wheels, dict(sorted(exemptions.items())))


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
        for name in names:
            if _NATIVE_FILE.search(name) and name not in libraries.values():
                if name.split("/", 1)[0].endswith(".libs"):
                    report.notes.append(f"bundled library {name}")
                else:
                    report.violations.append(f"unexpected native file {name}")
        for missing in sorted(set(expected.libraries) - set(libraries)):
            report.violations.append(f"expected library {missing} is missing")
        for extra in sorted(set(libraries) - set(expected.libraries)):
            report.violations.append(f"unexpected library {libraries[extra]}")
        for name in sorted(set(libraries) & set(expected.libraries)):
            data = z.read(libraries[name])
            report.libraries.append(
                _check_library(libraries[name], data, expected.libraries[name], report, promised, expect.exemptions)
            )
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
        _check_foreign_library(name, data, fmt, lib, report, exemptions)
        return lib
    try:
        info = elf.parse_elf(data, name)
    except StepError as e:
        report.violations.append(str(e))
        return lib
    if platform.elf_machine is not None and info.machine != platform.elf_machine:
        report.violations.append(f"{name} is for ELF machine {info.machine}, {report.platform} needs {platform.elf_machine}")

    needs = info.glibc_requirement
    lib.glibc = f"{needs[0]}.{needs[1]}" if needs else "-"
    lib.glibcxx = (info.required_versions("GLIBCXX_") or ["-"])[-1]
    lib.cxxabi = (info.required_versions("CXXABI_") or ["-"])[-1]
    lib.needed = ", ".join(info.needed) or "-"
    lib.exports = tuple(info.exported)
    if needs and promised and needs > promised:
        problem = f"{name} requires GLIBC_{lib.glibc}, newer than glibc {promised[0]}.{promised[1]} of {report.tag}"
        if name in exemptions:
            report.notes.append(f"{problem} (exempted: {exemptions[name]})")
        else:
            report.violations.append(problem)

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


def _check_foreign_library(name: str, data: bytes, fmt: str, lib: LibraryReport, report: WheelReport, exemptions: Mapping[str, str]) -> None:
    """PE and Mach-O libraries: architecture, kind, dependencies, minimum macOS (see the module docs)."""
    platform = PLATFORMS[report.platform]
    try:
        if fmt == "PE":
            pe = binfmt.parse_pe(data, name)
            arch, kind_ok, kind = pe.machine, pe.is_dll, "DLL"
            deps = pe.imports
            foreign = [d for d in deps if not binfmt.is_windows_system_dll(d)]
            lib.exports, minimum = tuple(pe.exported), None
        else:
            macho = binfmt.parse_macho(data, name)
            arch, kind_ok, kind = macho.cpu, macho.is_dylib, "dylib"
            deps = macho.dylibs
            foreign = [d for d in deps if not binfmt.is_macos_system_dylib(d)]
            lib.exports, minimum = tuple(macho.exported), macho.min_os
            if macho.exported_cxx:
                report.notes.append(f"{name} also exports {len(macho.exported_cxx)} C++ symbol(s), e.g. {macho.exported_cxx[0]} (the static libc++'s operator new/delete)")
    except StepError as e:
        report.violations.append(str(e))
        return
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


REFERENCE = ("linux-x86_64", "libbitsandbytes_cpu.so")
"""The library whose exported symbols every other library must match (when the audit sees it)."""


def compare_exports(reports: Sequence[WheelReport]) -> List[str]:
    """Libraries exporting other C symbols than the Linux x86_64 CPU library (when it was audited)."""
    reference = next((l.exports for r in reports if r.platform == REFERENCE[0] for l in r.libraries
                      if l.path.rsplit("/", 1)[-1] == REFERENCE[1]), None)  # fmt: skip
    if reference is None:
        return []
    problems = []
    for r in reports:
        for lib in r.libraries:
            missing, extra = sorted(set(reference) - set(lib.exports)), sorted(set(lib.exports) - set(reference))
            if missing or extra:
                what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                   f"extra {', '.join(extra)}" if extra else "") if part)  # fmt: skip
                problems.append(f"{r.filename}: {lib.path} exports other C symbols than {REFERENCE[1]} of {REFERENCE[0]} ({what})")
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
    """Audit every wheel in ``wheels_dir``; return the per-wheel reports and the set-level violations."""
    if not wheels_dir.is_dir():
        msg = f"--wheels {wheels_dir} is not a folder"
        raise InputError(msg)
    wheels = sorted(wheels_dir.glob("*.whl"))
    if not wheels:
        msg = f"no wheels (*.whl) in {wheels_dir}; run the wheel step first"
        raise InputError(msg)
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
    problems += compare_exports(reports)
    return reports, problems


# ----------------------------------------------------------------------------------------------
# Report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_report(reports: Sequence[WheelReport], problems: Sequence[str], expect: Expectations) -> str:
    total = len(problems) + sum(len(r.violations) for r in reports)
    lines = ["# Wheel audit", "", f"Result: **{'FAIL' if total else 'PASS'}** ({total} violation{'s' if total != 1 else ''})", ""]
    lines += ["| wheel | platform | tag | verdict |", "|---|---|---|---|"]
    lines += [f"| {_cell(r.filename)} | {r.platform} | {_cell(r.tag)} | {r.verdict} |" for r in reports]
    if problems:
        lines += ["", "## Wheel set", ""] + [f"- violation: {p}" for p in problems]
    if expect.exemptions:
        lines += ["", "## Exemptions", ""] + [f"- {name}: {why}" for name, why in expect.exemptions.items()]
    for r in reports:
        lines += ["", f"## {r.filename}", "", f"Verdict: **{r.verdict}**"]
        items = [f"- violation: {v}" for v in r.violations] + [f"- note: {n}" for n in r.notes]
        lines += [""] + items if items else []
        if r.libraries:
            lines += ["", "| library | backend | needs glibc | GLIBCXX | CXXABI | GPU targets | NEEDED | exports |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [
                f"| {_cell(l.path)} | {l.backend} | {l.glibc} | {l.glibcxx} | {l.cxxabi} | {_cell(l.gpu_targets)} | {_cell(l.needed)} | {len(l.exports)} |"
                for l in r.libraries
            ]
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
    print(f"wrote {ns.report}", flush=True)
    if violations:
        msg = f"{len(violations)} violation(s), see {ns.report}:\n" + "\n".join(f"  - {v}" for v in violations)
        raise AuditFailed(msg)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_step(lambda: run(sys.argv[1:] if argv is None else argv, os.environ))
