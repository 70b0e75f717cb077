"""Step ``try-wheels``: install each wheel into a clean environment of its platform and run a script,
also on the oldest CPU the wheel claims to run on.

Command line (docs/contracts.md; run in the work directory with relative paths)::

    python3 -m bnb_build try-wheels --wheels wheels --report tries.md [--script try.py]
        [--wine-python DIR] [--pip-arg ARG ...] [--floor PLATFORM=LEVEL ...]
        [--expect-library PLATFORM=FILE ...] [--runtime-library SONAME ...]
        [--index-url URL] [--env-cache DIR]

``--index-url``: where the wheels' run-time dependencies come from (a tree's ``try-index-url``).
``--env-cache DIR``: the venv tries reuse one kept environment per platform and dependency set below
DIR, verified before each use, the wheel installed fresh into it (try_envs.py); without it, each try
makes a new virtualenv.

Per wheel, by its platform tag:

- **venv**: the wheel is for this machine's platform (Linux x86_64 or aarch64): a new virtualenv of
  the interpreter running this step, ``pip install <wheel>`` (its dependencies from the index, or as
  ``--pip-arg`` says), then ``<venv python> <script>`` in an empty folder, so the package comes from
  the wheel and never from a source tree;
- **wine**: a Windows x64 wheel where ``wine`` runs and ``--wine-python`` names a Windows CPython
  folder (python.exe; an embeddable distribution works): the wheel and its dependencies' win_amd64
  wheels (``pip download``) are unpacked into a folder that interpreter imports from, then
  ``wine python.exe <script>``;
- otherwise it is **not tried**, with the reason (macOS: no way to run Mach-O code on Linux; an
  aarch64 wheel on an x86_64 machine: Dagger tries it in a linux/arm64 container).

Modes: every wheel is tried **plain** (as above). A wheel whose platform has a ``--floor`` (a level of
:mod:`bnb_build.cpu_levels`) is tried again **at its floor**: the same virtualenv's Python run by
``qemu-<arch>-static -cpu <model>`` (Debian's qemu-user-static), a CPU of that level, so code above
the floor that runs (a static constructor built with ``-mavx512f``, say) dies with SIGILL here and not
on a user's machine. A level QEMU cannot emulate (x86-64-v4: QEMU 7.2's TCG has no AVX-512) and a
Windows wheel (Wine runs it on this machine's CPU) are not tried at the floor: the audit's static ISA
report is their gate.

Each run goes through a small runner: it runs the script (``--script``; by default an import of the
wheel's top-level package that must then find a native library of the package mapped into the
process: the ``--expect-library`` files of the wheel's platform, else any ``lib*`` of the package),
then checks that each ``--runtime-library`` (a library the wheel's run-time dependencies provide, e.g.
``libgomp.so.1`` from torch) is loaded at most once, counting copies vendored under another name.

A run killed by a signal is reported by the signal's name (``SIGILL: illegal instruction``). Under
QEMU the emulator writes the guest's core file; ``gdb`` (where installed) reads the faulting address
from it, and the report names the library, the offset and what
``bnb_build.isa_report.describe_code_address`` says of the code there. The console, tries.md and
tries.json show the script's output and this verdict; pip's output only when pip failed.

The report is Markdown with one row per wheel and mode; ``tries.json`` beside it holds the same for
programs. Exit status: 0 when no tried wheel failed, 8 (AuditFailed) otherwise; a wheel that was not
tried is no failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import cpu_levels, try_envs
from .errors import AuditFailed, InputError, UsageError, run_step
from .files import write_text_atomic
from .platforms import get_platform, parse_platform_tag

TAIL_LINES = 25
TIMEOUT_S = 900
FAULT_MARK = "bnb-try:"
"""Lines the runner prints for the step (they never become a try's detail)."""

PLAIN = "plain"

# The runner: run in the wheel's environment as ``python runner.py spec.json``. Standard library only
# (it runs under any CPython 3.8+ the wheel is for, Windows ones under Wine included).
RUNNER = r"""
import ctypes, importlib, json, os, re, runpy, sys

MARK = "bnb-try:"
NATIVE = re.compile(r"^lib.*(\.so(\.[0-9]+)*|\.dll|\.dylib)$")


def mapped_files():
    # Every file mapped into this process (Linux: /proc/self/maps; Windows, Wine included: its modules), or None.
    if sys.platform == "win32":
        return windows_modules()
    try:
        with open("/proc/self/maps") as f:
            fields = [line.split(None, 5) for line in f.read().splitlines()]
    except OSError:
        return None
    return sorted({os.path.realpath(f[5]) for f in fields if len(f) == 6 and f[5].startswith("/")})


def windows_modules():
    from ctypes import wintypes
    kernel32, psapi = ctypes.WinDLL("kernel32"), ctypes.WinDLL("psapi")
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    psapi.EnumProcessModules.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.HMODULE), wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
    kernel32.GetModuleFileNameW.argtypes = [wintypes.HMODULE, wintypes.LPWSTR, wintypes.DWORD]
    modules, needed = (wintypes.HMODULE * 4096)(), wintypes.DWORD()
    if not psapi.EnumProcessModules(kernel32.GetCurrentProcess(), modules, ctypes.sizeof(modules), ctypes.byref(needed)):
        return None
    name, found = ctypes.create_unicode_buffer(32768), set()
    for handle in modules[: needed.value // ctypes.sizeof(wintypes.HMODULE)]:
        if kernel32.GetModuleFileNameW(handle, name, len(name)):
            found.add(os.path.realpath(name.value))
    return sorted(found)


def _within(path, root):
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # another drive
        return False


def check_native(package, expected):
    # The package's native library must be loaded: the expected files, else any lib* of the package.
    module = importlib.import_module(package)
    where = os.path.realpath(module.__file__)
    roots = [os.path.realpath(r) for r in [sys.prefix, *os.environ.get("PYTHONPATH", "").split(os.pathsep)] if r]
    if not any(_within(where, root) for root in roots):
        sys.exit(f"{package} was imported from {where}, not from the installed wheel")
    folder = os.path.dirname(where)
    held = sorted(n for n in os.listdir(folder) if NATIVE.match(n))
    loaded = mapped_files()
    if loaded is None:
        sys.exit(f"imported {package}, but this system does not tell which libraries a process has loaded")
    mine = sorted(os.path.basename(f) for f in loaded if os.path.dirname(f) == folder and NATIVE.match(os.path.basename(f)))
    wanted = list(expected) or held
    hits = [n for n in mine if n in wanted]
    version = getattr(module, "__version__", "(no __version__)")
    if not hits:
        sys.exit(f"imported {package} {version}, but no native library of it was loaded: expected {' or '.join(wanted) or 'a lib* file'}"
                 f" (the wheel holds {', '.join(held) or 'none'}); its loader may have fallen back to a stand-in")
    print(f"imported {package} {version} from the installed wheel; loaded {', '.join(hits)}")


def check_runtime(names):
    loaded = mapped_files() or []
    for name in names:
        stem, dot, rest = name.partition(".")
        pattern = re.compile("^" + re.escape(stem) + "(-[0-9a-f]{8,})?" + re.escape(dot + rest) + r"(\.[0-9]+)*$")
        copies = [f for f in loaded if pattern.match(os.path.basename(f))]
        if len(copies) > 1:
            print(f"{name} is loaded {len(copies)} times: {', '.join(copies)}; a run-time dependency provides it, so the wheel must not bring its own")
            sys.exit(1)
        print(f"{MARK} {name} loaded {'once: ' + copies[0] if copies else 'not at all'}")


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if spec["script"]:
        sys.argv = [spec["script"]]
        sys.path[0] = os.path.dirname(spec["script"])  # as `python script` has it
        try:
            runpy.run_path(spec["script"], run_name="__main__")
        except SystemExit as e:
            if e.code not in (0, None):
                raise
    else:
        check_native(spec["package"], spec["expect"])
    sys.stdout.flush()
    check_runtime(spec["runtime"])


main()
"""


@dataclass
class Try:
    """What happened to one wheel in one mode (plain, or at its CPU floor)."""

    wheel: str
    platform: str
    how: str  # "venv", "wine", "qemu-x86_64-static -cpu Nehalem-v1" or "-"
    status: str  # "passed", "failed" or "not tried"
    detail: str = ""
    output: List[str] = field(default_factory=list)
    mode: str = PLAIN  # "plain" or "floor <level>"
    seconds: Optional[float] = None  # how long the script ran (None: not run)


@dataclass(frozen=True)
class Checks:
    """What every try checks besides the script's exit status (from the command line)."""

    floors: Mapping[str, str] = field(default_factory=dict)  # platform id -> CPU level
    expect: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)  # platform id -> native libraries
    runtime: Tuple[str, ...] = ()  # sonames a run-time dependency provides


# ----------------------------------------------------------------------------------------------
# Pure parts


def wheel_platform(name: str) -> str:
    """The platform id of a wheel file name (its last platform tag decides)."""
    if not name.endswith(".whl") or name.count("-") < 4:
        msg = f"{name!r} is not a wheel file name (name-version-python-abi-platform.whl)"
        raise UsageError(msg)
    tags = name[: -len(".whl")].rsplit("-", 1)[1].split(".")
    return parse_platform_tag(tags[-1]).platform_id


def machine_platform(system: str, machine: str) -> Optional[str]:
    """The platform id of the machine running this step, or None when no wheel can be for it."""
    machine = machine.lower()
    if system == "Linux" and machine in ("x86_64", "amd64"):
        return "linux-x86_64"
    if system == "Linux" and machine in ("aarch64", "arm64"):
        return "linux-aarch64"
    if system == "Windows" and machine in ("amd64", "x86_64"):
        return "windows-x64"
    if system == "Windows" and machine == "arm64":
        return "windows-arm64"
    if system == "Darwin" and machine == "arm64":
        return "macos-arm64"
    return None


def how_to_try(platform_id: str, *, here: Optional[str], wine: Optional[str], wine_python: Optional[Path]) -> tuple:
    """("venv" | "wine" | None, reason when None)."""
    if platform_id == here:
        return "venv", ""
    if platform_id == "windows-x64" and here == "linux-x86_64":
        if wine is None:
            return None, "wine is not installed here (apt-get install wine64)"
        if wine_python is None:
            return None, "no Windows Python for Wine: pass --wine-python DIR (a folder holding python.exe)"
        return "wine", ""
    if platform_id.startswith("macos-"):
        return None, "macOS: nothing runs Mach-O code on Linux (a macOS machine can try it)"
    if platform_id.startswith("windows-"):
        return None, f"{platform_id}: needs a Windows machine of that architecture (Wine runs x64 code only)"
    return None, f"{platform_id} wheel on a {here or 'different'} machine; it is tried in a container of its platform"


def floor_emulator(platform_id: str, level: str, how: Optional[str], env: Mapping[str, str]) -> tuple:
    """(argv prefix running a program on a CPU of `level`, reason when None) for a wheel tried `how`."""
    if how is None:
        return None, "the wheel is not tried on this machine"
    if how == "wine":
        return None, "Wine runs the DLL on this machine's CPU, so the floor is checked by the audit's static ISA report"
    arch = get_platform(platform_id).arch
    model = cpu_levels.QEMU_CPU[level]
    if model is None:
        return None, f"QEMU 7.2's TCG cannot emulate {level} (no AVX-512), so this floor is checked by the audit's static ISA report only"
    binary = cpu_levels.QEMU_BINARY[arch]
    qemu = shutil.which(binary, path=env.get("PATH", os.defpath))
    if qemu is None:
        return None, f"{binary} is not installed here (apt-get install qemu-user-static)"
    return [qemu, "-cpu", model], ""


def exit_cause(code: int) -> str:
    """Why a program exited with `code`: a signal's name and meaning, else the exit status."""
    if code < 0:
        try:
            sig = signal.Signals(-code)
        except ValueError:
            return f"killed by signal {-code}"
        text = signal.strsignal(sig) or sig.name
        return f"{sig.name}: {text[0].lower()}{text[1:]}"
    if code in NTSTATUS:
        return NTSTATUS[code]
    return f"exited with {code}"


NTSTATUS = {
    0xC000001D: "STATUS_ILLEGAL_INSTRUCTION: illegal instruction",
    0xC0000005: "STATUS_ACCESS_VIOLATION: segmentation fault",
    0xC0000096: "STATUS_PRIVILEGED_INSTRUCTION: privileged instruction",
}
"""Exit codes of Windows processes killed by an exception (as Wine reports them)."""


def render_report(tries: Sequence[Try]) -> str:
    failed = [t for t in tries if t.status == "failed"]
    tried = [t for t in tries if t.status != "not tried"]
    verdict = "FAIL" if failed else "PASS" if tried else "NOTHING TRIED"
    lines = [
        "# Wheel tries",
        "",
        f"Result: **{verdict}**: {len(tried)} tried ({len(failed)} failed), {len(tries) - len(tried)} not tried.",
        "",
        "A wheel is tried plain and, where its platform has a CPU floor, again at the floor (QEMU with a CPU model of that level).",
        "How long each try took is in tries.json only: this report is an output, the same for the same wheels.",
        "",
        "| wheel | platform | mode | how | result | detail |",
        "|---|---|---|---|---|---|",
    ]
    for t in tries:
        detail = t.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {t.wheel} | {t.platform} | {t.mode} | {t.how} | {t.status} | {detail} |")
    for t in failed:
        lines += ["", f"## {t.wheel} ({t.mode})", "", t.detail]
        if t.output:
            lines += ["", "```text", *t.output[-TAIL_LINES:], "```"]
    return "\n".join(lines) + "\n"


def report_json(tries: Sequence[Try]) -> str:
    rows = [{"wheel": t.wheel, "platform": t.platform, "mode": t.mode, "how": t.how, "status": t.status, "detail": t.detail,
             "seconds": t.seconds, "output": t.output[-TAIL_LINES:] if t.status == "failed" else []} for t in tries]  # fmt: skip
    return json.dumps({"tries": rows}, indent=2, sort_keys=True) + "\n"


def try_from_json(row: Mapping[str, object]) -> Try:
    """A row of tries.json back as a Try."""
    return Try(str(row["wheel"]), str(row["platform"]), str(row["how"]), str(row["status"]), str(row.get("detail", "")),
               [str(line) for line in row.get("output", []) or []], mode=str(row.get("mode", PLAIN)),  # type: ignore[union-attr]
               seconds=row.get("seconds"))  # type: ignore[arg-type]  # fmt: skip


def top_level_package(wheel: Path) -> str:
    """The wheel's importable top-level package (from top_level.txt, else its first package folder)."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for name in names:
            if name.endswith(".dist-info/top_level.txt"):
                first = z.read(name).decode("utf-8").split()
                if first:
                    return first[0]
        for name in names:
            head = name.split("/", 1)[0]
            if name.endswith("/__init__.py") and name.count("/") == 1 and not head.endswith((".dist-info", ".data")):
                return head
    msg = f"{wheel.name} holds no top-level package to import"
    raise InputError(msg)


def requirements_of(wheel: Path) -> List[str]:
    """The unconditional Requires-Dist entries of the wheel's METADATA (markers are left out)."""
    with zipfile.ZipFile(wheel) as z:
        [metadata] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        text = z.read(metadata).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:") and ";" not in line]


def parse_checks(floors: Sequence[str], expect: Sequence[str], runtime: Sequence[str]) -> Checks:
    """The checks of the command line; UsageError naming a bad value and what is allowed."""
    found_floors: Dict[str, str] = {}
    for item in floors:
        platform_id, level = _pair("--floor", item, "PLATFORM=LEVEL, e.g. linux-x86_64=x86-64-v2")
        try:
            cpu_levels.check_level(get_platform(platform_id).arch, level)
        except ValueError as e:
            msg = f"--floor {item}: {e}"
            raise UsageError(msg) from None
        found_floors[platform_id] = level
    found_expect: Dict[str, Tuple[str, ...]] = {}
    for item in expect:
        platform_id, name = _pair("--expect-library", item, "PLATFORM=FILE, e.g. linux-x86_64=libbitsandbytes_cpu.so")
        if "/" in name or "\\" in name or not name.startswith("lib"):
            msg = f"--expect-library {item}: {name!r} is not a library file name (lib*.so, lib*.dll, lib*.dylib)"
            raise UsageError(msg)
        found_expect[platform_id] = (*found_expect.get(platform_id, ()), name)
    for name in runtime:
        if not re.match(r"^lib[A-Za-z0-9_+-]*\.(so(\.[0-9]+)*|dll|dylib)$", name):
            msg = f"--runtime-library {name!r} is not a library soname such as libgomp.so.1"
            raise UsageError(msg)
    return Checks(found_floors, found_expect, tuple(dict.fromkeys(runtime)))


def _pair(option: str, item: str, form: str) -> Tuple[str, str]:
    platform_id, sep, value = item.partition("=")
    if not sep or not value:
        msg = f"{option} {item!r} is not {form}"
        raise UsageError(msg)
    get_platform(platform_id)  # UsageError listing the platform ids
    return platform_id, value


# ----------------------------------------------------------------------------------------------
# Crashes


def core_pc(core: Path) -> Optional[int]:
    """The faulting thread's program counter from an x86-64 or AArch64 ELF core file (NT_PRSTATUS)."""
    data = core.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    machine = struct.unpack_from("<H", data, 18)[0]
    pc_at = {62: 112 + 16 * 8, 183: 112 + 32 * 8}.get(machine)  # pr_reg: rip is user_regs[16]; pc is regs[32]
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 32)[0], *struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type != 4 or pc_at is None:  # PT_NOTE
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", data, at)
            desc = at + 12 + (namesz + 3) // 4 * 4
            if n_type == 1 and descsz >= pc_at + 8:  # NT_PRSTATUS
                return int(struct.unpack_from("<Q", data, desc + pc_at)[0])
            at = desc + (descsz + 3) // 4 * 4
    return None


def _text_address(library: Path) -> Optional[int]:
    """The address of `library`'s .text section in the file (ELF64 little-endian), or None."""
    try:
        data = library.read_bytes()
        shoff = struct.unpack_from("<Q", data, 40)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
        names_at = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 24)[0]
        for i in range(shnum):
            name, _, _, addr = struct.unpack_from("<IIQQ", data, shoff + i * shentsize)
            if data[names_at + name : data.index(b"\0", names_at + name)] == b".text":
                return int(addr)
    except (OSError, struct.error, ValueError):
        return None
    return None


def locate_fault(core: Path, python: Path, cwd: Path, env: Mapping[str, str]) -> Optional[Tuple[Path, int]]:
    """(library, offset of the faulting instruction in it) from a QEMU guest core, read with gdb."""
    pc = core_pc(core)
    gdb = shutil.which("gdb", path=env.get("PATH", os.defpath))
    if pc is None or gdb is None:
        return None
    argv = [gdb, "-batch", "-nx", "-ex", "set sysroot /", "-ex", "info sharedlibrary", str(python.resolve()), str(core)]
    try:
        out = subprocess.run(argv, cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        m = re.match(r"^(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+\S+(?: \(\*\))?\s+(/.*|\./.*|[^\s].*)$", line.strip())
        if not m:
            continue
        start, end, path = int(m.group(1), 16), int(m.group(2), 16), Path(m.group(3).strip())
        if start <= pc < end:
            path = path if path.is_absolute() else cwd / path
            text = _text_address(path)
            if text is None:
                return None
            return path, pc - (start - text)
    return None


def describe_fault(library: Path, offset: int, floor: Optional[str]) -> str:
    """What the ISA report says of the code at `offset` of `library` (``lib.so+0x107a in <function>:
    <instruction> (<extension>) ...``), or just ``lib.so+0x107a`` when it cannot tell."""
    where = f"{library.name}+{offset:#x}"
    try:
        from .isa_report import describe_code_address

        said = describe_code_address(library, offset, floor)
    except Exception:  # noqa: BLE001  (a missing or failing description leaves the location)
        return where
    return said if said.startswith(where) else f"{where}: {said}" if said else where


# ----------------------------------------------------------------------------------------------
# Running


def _limit_core(size: int):
    def apply() -> None:
        import resource

        try:
            hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
            resource.setrlimit(resource.RLIMIT_CORE, (size if hard == resource.RLIM_INFINITY else min(size, hard), hard))
        except (ValueError, OSError):
            pass

    return apply if os.name == "posix" else None


QEMU_NOISE = re.compile(r"^qemu-\S+: warning: TCG doesn't support requested feature")


def _run(argv: Sequence[object], *, env: Mapping[str, str], cwd: Path, echo: bool = True, cores: bool = False) -> tuple:
    """(exit code, output lines, seconds); the output is echoed to the console when `echo`."""
    print(f"+ {' '.join(str(a) for a in argv)}", flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run([str(a) for a in argv], cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT_S, check=False,
                              preexec_fn=_limit_core(1 << 40 if cores else 0))  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124, [f"timed out after {TIMEOUT_S} s"], round(time.monotonic() - start, 2)
    seconds = round(time.monotonic() - start, 2)
    lines = [line for line in proc.stdout.decode("utf-8", errors="replace").splitlines() if not QEMU_NOISE.match(line)]
    if echo:
        for line in lines:
            print(f"  {line}", flush=True)
    return proc.returncode, lines, seconds


def _runner(scratch: Path, script: Optional[Path], package: str, expect: Sequence[str], runtime: Sequence[str]) -> List[str]:
    """The runner's file arguments (written into `scratch`)."""
    (scratch / "runner.py").write_text(RUNNER, encoding="utf-8")
    spec = {"script": str(script.resolve()) if script else None, "package": package, "expect": list(expect), "runtime": list(runtime)}
    (scratch / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    return [str(scratch / "runner.py"), str(scratch / "spec.json")]


def _outcome(wheel: Path, platform_id: str, how: str, code: int, out: List[str], seconds: float, *, mode: str = PLAIN,
             fault: str = "") -> Try:  # fmt: skip
    """The try of a script that exited with `code`: its last line when it passed."""
    said = [line for line in out if not line.startswith(FAULT_MARK)]
    if code == 0:
        return Try(wheel.name, platform_id, how, "passed", said[-1] if said else "", out, mode, seconds)
    where = " under Wine" if how == "wine" else ""
    detail = f"the script was killed{where}: {exit_cause(code)}" if code < 0 or code in NTSTATUS else f"the script exited with {code}{where}"
    if fault:
        detail += f" at {fault}"
    elif code > 0 and said:
        detail += f": {said[-1]}"
    return Try(wheel.name, platform_id, how, "failed", detail, out, mode, seconds)


def _kept_env_python(wheel: Path, pip_args: Sequence[str], env: Mapping[str, str], scratch: Path) -> Path:
    """The python of the verified (or newly made) environment of the wheel's dependency set below
    $BNB_TRY_ENV_CACHE, with the wheel installed fresh into it."""
    def run(argv: Sequence[object]) -> tuple:
        code, out, _ = _run(argv, env=env, cwd=scratch, echo=False)
        return code, out

    python, how = try_envs.prepare(Path(env[try_envs.CACHE_ENV]), try_envs.run_time_requirements(wheel), pip_args, run)
    print(f"try environment {python.parent.parent}: {how}", flush=True)
    try_envs.install_wheel(python, wheel, pip_args, run)
    return python


def try_in_venv(wheel: Path, script: Optional[Path], pip_args: Sequence[str], env: Mapping[str, str],
                checks: Checks = Checks()) -> List[Try]:  # fmt: skip
    """The plain try and, where the platform has a floor, the try at the floor (one virtualenv)."""
    platform_id = wheel_platform(wheel.name)
    floor = checks.floors.get(platform_id)
    mode = f"floor {floor}" if floor else ""
    with tempfile.TemporaryDirectory(prefix="bnb-try-") as tmp:
        scratch = Path(tmp)
        if env.get(try_envs.CACHE_ENV):  # a kept environment of the wheel's dependency set (try_envs.py)
            try:
                python = _kept_env_python(wheel, pip_args, env, scratch)
            except try_envs.TryEnvError as e:
                return _both(Try(wheel.name, platform_id, "venv", "failed", str(e), e.output), mode)
        else:
            venv = scratch / "venv"
            code, out, _ = _run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=scratch, echo=False)
            if code != 0:
                return _both(Try(wheel.name, platform_id, "venv", "failed", "creating the virtualenv failed", out), mode)
            python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
            code, pip_out, _ = _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *pip_args, str(wheel.resolve())],
                                    env=env, cwd=scratch, echo=False)  # fmt: skip
            if code != 0:
                for line in pip_out:
                    print(f"  {line}", flush=True)
                return _both(Try(wheel.name, platform_id, "venv", "failed", f"pip install exited with {code}", pip_out), mode)
        runner = _runner(scratch, script, top_level_package(wheel), checks.expect.get(platform_id, ()), checks.runtime)
        tries = [_run_once(wheel, platform_id, "venv", [python, *runner], scratch / "run", env)]
        if floor:
            emulator, reason = floor_emulator(platform_id, floor, "venv", env)
            if emulator is None:
                tries.append(Try(wheel.name, platform_id, "-", "not tried", reason, mode=mode))
            else:
                how = f"{Path(emulator[0]).name} -cpu {emulator[2]}"
                tries.append(_run_once(wheel, platform_id, how, [*emulator, python, *runner], scratch / "floor", env, floor=floor, python=python))
    return tries


def _both(failed: Try, mode: str) -> List[Try]:
    """A failure before anything ran, and the floor row it leaves untried."""
    rows = [failed]
    if mode:
        rows.append(Try(failed.wheel, failed.platform, "-", "not tried", "the wheel did not install", mode=mode))
    return rows


def _run_once(wheel: Path, platform_id: str, how: str, argv: Sequence[object], run_dir: Path, env: Mapping[str, str], *,
              floor: Optional[str] = None, python: Optional[Path] = None) -> Try:  # fmt: skip
    mode = f"floor {floor}" if floor else PLAIN
    print(f"try {wheel.name} ({mode}):", flush=True)
    run_dir.mkdir()
    code, out, seconds = _run(argv, env=env, cwd=run_dir, cores=floor is not None)
    fault = ""
    if code < 0 and floor is not None and python is not None:
        cores = sorted(run_dir.glob("qemu_*.core"), key=lambda p: p.stat().st_mtime)
        located = locate_fault(cores[-1], python, run_dir, env) if cores else None
        if located is not None:
            fault = describe_fault(located[0], located[1], floor)
    result = _outcome(wheel, platform_id, how, code, out, seconds, mode=mode, fault=fault)
    print(f"{'passed' if result.status == 'passed' else 'FAILED'} {wheel.name} ({mode}) in {seconds:.1f} s: {result.detail}", flush=True)
    return result


def _unpack(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(into)


def try_under_wine(wheel: Path, script: Optional[Path], wine: str, wine_python: Path, pip_args: Sequence[str],
                   env: Mapping[str, str], checks: Checks = Checks()) -> Try:  # fmt: skip
    platform_id = wheel_platform(wheel.name)
    with tempfile.TemporaryDirectory(prefix="bnb-try-wine-") as tmp:
        scratch = Path(tmp)
        python_dir = scratch / "python"
        shutil.copytree(wine_python, python_dir)
        site = scratch / "site"
        site.mkdir()
        _unpack(wheel, site)
        requirements = requirements_of(wheel)
        if requirements:
            code, out, _ = _run(
                [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--only-binary=:all:", "--platform",
                 "win_amd64", "--python-version", _python_version(python_dir), "-d", str(scratch / "deps"), *pip_args, *requirements],
                env=env, cwd=scratch, echo=False,
            )  # fmt: skip
            if code != 0:
                return Try(wheel.name, platform_id, "wine", "failed", f"pip download of {', '.join(requirements)} exited with {code}", out)
            for dep in sorted((scratch / "deps").glob("*.whl")):
                _unpack(dep, site)
        # An embeddable CPython reads its search path from pythonXY._pth and ignores PYTHONPATH.
        for pth in python_dir.glob("python*._pth"):
            pth.write_text(pth.read_text(encoding="utf-8").rstrip("\n") + "\nZ:" + str(site).replace("/", "\\") + "\n", encoding="utf-8")
        run_env = {**env, "WINEDEBUG": "-all", "PYTHONPATH": "Z:" + str(site).replace("/", "\\")}
        runner = _runner(scratch, script, top_level_package(wheel), checks.expect.get(platform_id, ()), checks.runtime)
        # The embeddable Python has no sys.prefix holding the package: the runner's check compares
        # against the folder it imports from.
        return _run_once(wheel, platform_id, "wine", [wine, python_dir / "python.exe", *runner], scratch / "run", run_env)


def _python_version(python_dir: Path) -> str:
    """The X.Y of a Windows CPython folder, from its pythonXY.dll."""
    for dll in sorted(python_dir.glob("python3*.dll")):
        digits = dll.stem[len("python") :]
        if digits.isdigit() and len(digits) >= 2:
            return f"{digits[0]}.{digits[1:]}"
    msg = f"--wine-python {python_dir} holds no python3XY.dll: is it a Windows CPython folder?"
    raise InputError(msg)


def try_wheels(wheels_dir: Path, *, script: Optional[Path], wine_python: Optional[Path], pip_args: Sequence[str],
               env: Mapping[str, str], checks: Checks = Checks()) -> List[Try]:  # fmt: skip
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    if not wheels:
        msg = f"no wheels (*.whl) in {wheels_dir}"
        raise InputError(msg)
    from .audit import check_wheel_archives

    check_wheel_archives(wheels)  # CorruptWheel (exit 2) naming each file that is no readable zip archive
    if script is not None and not script.is_file():
        msg = f"--script {script} does not exist"
        raise InputError(msg)
    if wine_python is not None and not (wine_python / "python.exe").is_file():
        msg = f"--wine-python {wine_python} holds no python.exe"
        raise InputError(msg)
    here = machine_platform(host_platform.system(), host_platform.machine())
    wine = find_wine(env)
    tries: List[Try] = []
    for wheel in wheels:
        platform_id = wheel_platform(wheel.name)
        how, reason = how_to_try(platform_id, here=here, wine=wine, wine_python=wine_python)
        print(f"try {wheel.name}: {how or 'not tried: ' + reason}", flush=True)
        if how == "venv":
            tries += try_in_venv(wheel, script, pip_args, env, checks)
            continue
        if how == "wine":
            assert wine is not None and wine_python is not None
            tries.append(try_under_wine(wheel, script, wine, wine_python, pip_args, env, checks))
        else:
            tries.append(Try(wheel.name, platform_id, "-", "not tried", reason))
        floor = checks.floors.get(platform_id)
        if floor:
            tries.append(Try(wheel.name, platform_id, "-", "not tried", floor_emulator(platform_id, floor, how, env)[1], mode=f"floor {floor}"))
    return tries


WINE_DIRS = ("/usr/lib/wine",)
"""Where Debian's wine64 package puts the wine64 loader (it is not on PATH there)."""


def find_wine(env: Mapping[str, str]) -> Optional[str]:
    """The Wine loader: $BNB_WINE, else wine64 or wine on PATH or in WINE_DIRS."""
    if env.get("BNB_WINE"):
        return env["BNB_WINE"]
    path = os.pathsep.join([env.get("PATH", os.defpath), *WINE_DIRS])
    return shutil.which("wine64", path=path) or shutil.which("wine", path=path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build try-wheels", description="Install each wheel into a clean environment and run a script.")
    p.add_argument("--wheels", required=True, type=Path, help="folder of .whl files")
    p.add_argument("--report", required=True, type=Path, help="Markdown report to write (tries.json is written beside it)")
    p.add_argument("--script", type=Path, help="Python script run with the wheel installed (default: import its top-level package and find its native library loaded)")
    p.add_argument("--wine-python", type=Path, help="a Windows CPython folder (python.exe) to try win_amd64 wheels under Wine")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG", help="extra argument for pip (e.g. --find-links=DIR); repeat")
    p.add_argument("--index-url", metavar="URL", help="the index the wheels' run-time dependencies come from (pip --index-url)")
    p.add_argument("--env-cache", type=Path, metavar="DIR", help="keep one environment per platform and dependency set in DIR, verified and reused (try_envs.py)")
    p.add_argument("--floor", action="append", default=[], metavar="PLATFORM=LEVEL",
                   help=f"also try PLATFORM's wheel under QEMU on a CPU of LEVEL ({', '.join(sorted(cpu_levels.QEMU_CPU))}); repeat")
    p.add_argument("--expect-library", action="append", default=[], metavar="PLATFORM=FILE",
                   help="the native library (file name) a try without --script must find loaded for PLATFORM's wheel; repeat")
    p.add_argument("--runtime-library", action="append", default=[], metavar="SONAME",
                   help="a library a run-time dependency provides (e.g. libgomp.so.1): a try fails when it is loaded more than once; repeat")
    return p


def run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    ns = _parser().parse_args(list(argv))
    checks = parse_checks(ns.floor, ns.expect_library, ns.runtime_library)
    if ns.env_cache is not None:
        env = {**env, try_envs.CACHE_ENV: str(ns.env_cache.resolve())}
    pip_args = [*try_envs.index_arguments(ns.index_url), *ns.pip_arg]
    tries = try_wheels(ns.wheels, script=ns.script, wine_python=ns.wine_python, pip_args=pip_args, env=env, checks=checks)
    write_text_atomic(ns.report, render_report(tries))
    write_text_atomic(ns.report.with_name("tries.json"), report_json(tries))
    failed = [t for t in tries if t.status == "failed"]
    print(f"wrote {ns.report}: {len(tries)} tr{'y' if len(tries) == 1 else 'ies'}, {len(failed)} failed", flush=True)
    for t in failed:
        print(f"FAILED {t.wheel} ({t.mode}, {t.how}): {t.detail}", flush=True)
    if failed:
        wheels = dict.fromkeys(t.wheel for t in failed)
        names = ", ".join(f"{t.wheel} ({t.mode})" for t in failed)
        msg = f"{len(wheels)} wheel(s) failed their try: {names} (see {ns.report})"
        raise AuditFailed(msg)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    env: Dict[str, str] = dict(os.environ)
    return run_step(lambda: run(sys.argv[1:] if argv is None else argv, env))
