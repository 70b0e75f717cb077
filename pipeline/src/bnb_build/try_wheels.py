"""Step ``try-wheels``: install each wheel into a clean environment of its platform and run a script.

Command line (docs/contracts.md; run in the work directory with relative paths)::

    python3 -m bnb_build try-wheels --wheels wheels --report tries.md [--script try.py]
        [--wine-python DIR] [--pip-arg ARG ...]

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

The script (``--script``; by default a check that imports the wheel's top-level package) exits 0 when
the wheel works. The report is Markdown with one row per wheel; ``tries.json`` beside it holds the same
for programs. Exit status: 0 when no tried wheel failed, 8 (AuditFailed) otherwise; a wheel that was
not tried is no failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from .errors import AuditFailed, InputError, UsageError, run_step
from .files import write_text_atomic
from .platforms import parse_platform_tag

TAIL_LINES = 25
TIMEOUT_S = 900

DEFAULT_SCRIPT = """\
import importlib, os, sys
name = sys.argv[1]
module = importlib.import_module(name)
where = os.path.realpath(module.__file__)
if os.path.commonpath([where, os.path.realpath(sys.prefix)]) != os.path.realpath(sys.prefix):
    sys.exit(f"{name} was imported from {where}, not from the installed wheel")
print(f"imported {name} {getattr(module, '__version__', '(no __version__)')} from the installed wheel")
"""


@dataclass
class Try:
    """What happened to one wheel."""

    wheel: str
    platform: str
    how: str  # "venv", "wine" or "-"
    status: str  # "passed", "failed" or "not tried"
    detail: str = ""
    output: List[str] = field(default_factory=list)


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


def render_report(tries: Sequence[Try]) -> str:
    failed = [t for t in tries if t.status == "failed"]
    tried = [t for t in tries if t.status != "not tried"]
    verdict = "FAIL" if failed else "PASS" if tried else "NOTHING TRIED"
    lines = [
        "# Wheel tries",
        "",
        f"Result: **{verdict}**: {len(tried)} tried ({len(failed)} failed), {len(tries) - len(tried)} not tried.",
        "",
        "| wheel | platform | how | result | detail |",
        "|---|---|---|---|---|",
    ]
    for t in tries:
        detail = t.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {t.wheel} | {t.platform} | {t.how} | {t.status} | {detail} |")
    for t in failed:
        lines += ["", f"## {t.wheel}", "", "```text", *t.output[-TAIL_LINES:], "```"]
    return "\n".join(lines) + "\n"


def report_json(tries: Sequence[Try]) -> str:
    rows = [{"wheel": t.wheel, "platform": t.platform, "how": t.how, "status": t.status, "detail": t.detail,
             "output": t.output[-TAIL_LINES:] if t.status == "failed" else []} for t in tries]  # fmt: skip
    return json.dumps({"tries": rows}, indent=2, sort_keys=True) + "\n"


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


# ----------------------------------------------------------------------------------------------
# Running


def _run(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> tuple:
    print(f"+ {' '.join(str(a) for a in argv)}", flush=True)
    try:
        proc = subprocess.run([str(a) for a in argv], cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124, [f"timed out after {TIMEOUT_S} s"]
    lines = proc.stdout.decode("utf-8", errors="replace").splitlines()
    for line in lines:
        print(f"  {line}", flush=True)
    return proc.returncode, lines


def _script(script: Optional[Path], scratch: Path) -> Path:
    if script is not None:
        return script.resolve()
    path = scratch / "import_check.py"
    path.write_text(DEFAULT_SCRIPT, encoding="utf-8")
    return path


def try_in_venv(wheel: Path, script: Optional[Path], pip_args: Sequence[str], env: Mapping[str, str]) -> Try:
    platform_id = wheel_platform(wheel.name)
    with tempfile.TemporaryDirectory(prefix="bnb-try-") as tmp:
        scratch = Path(tmp)
        venv = scratch / "venv"
        code, out = _run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=scratch)
        if code != 0:
            return Try(wheel.name, platform_id, "venv", "failed", "creating the virtualenv failed", out)
        python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        code, pip_out = _run([python, "-m", "pip", "install", "--disable-pip-version-check", *pip_args, str(wheel.resolve())], env=env, cwd=scratch)
        if code != 0:
            return Try(wheel.name, platform_id, "venv", "failed", f"pip install exited with {code}", pip_out)
        run_dir = scratch / "run"
        run_dir.mkdir()
        argv = [python, str(_script(script, scratch))]
        if script is None:
            argv.append(top_level_package(wheel))
        code, out = _run(argv, env=env, cwd=run_dir)
    return _outcome(wheel, platform_id, "venv", code, out)


def _outcome(wheel: Path, platform_id: str, how: str, code: int, out: List[str]) -> Try:
    """The try of a script that exited with `code`: its last line when it passed."""
    if code == 0:
        return Try(wheel.name, platform_id, how, "passed", out[-1] if out else "", out)
    where = " under Wine" if how == "wine" else ""
    return Try(wheel.name, platform_id, how, "failed", f"the script exited with {code}{where}", out)


def _unpack(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(into)


def try_under_wine(wheel: Path, script: Optional[Path], wine: str, wine_python: Path, pip_args: Sequence[str],
                   env: Mapping[str, str]) -> Try:  # fmt: skip
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
            code, out = _run(
                [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:", "--platform", "win_amd64",
                 "--python-version", _python_version(python_dir), "-d", str(scratch / "deps"), *pip_args, *requirements],
                env=env, cwd=scratch,
            )  # fmt: skip
            if code != 0:
                return Try(wheel.name, platform_id, "wine", "failed", f"pip download of {', '.join(requirements)} exited with {code}", out)
            for dep in sorted((scratch / "deps").glob("*.whl")):
                _unpack(dep, site)
        # An embeddable CPython reads its search path from pythonXY._pth and ignores PYTHONPATH.
        for pth in python_dir.glob("python*._pth"):
            pth.write_text(pth.read_text(encoding="utf-8").rstrip("\n") + "\nZ:" + str(site).replace("/", "\\") + "\n", encoding="utf-8")
        run_env = {**env, "WINEDEBUG": "-all", "PYTHONPATH": "Z:" + str(site).replace("/", "\\")}
        run_dir = scratch / "run"
        run_dir.mkdir()
        argv = [wine, str(python_dir / "python.exe"), str(_script(script, scratch))]
        if script is None:
            argv.append(top_level_package(wheel))
        code, out = _run(argv, env=run_env, cwd=run_dir)
    return _outcome(wheel, platform_id, "wine", code, out)


def _python_version(python_dir: Path) -> str:
    """The X.Y of a Windows CPython folder, from its pythonXY.dll."""
    for dll in sorted(python_dir.glob("python3*.dll")):
        digits = dll.stem[len("python") :]
        if digits.isdigit() and len(digits) >= 2:
            return f"{digits[0]}.{digits[1:]}"
    msg = f"--wine-python {python_dir} holds no python3XY.dll: is it a Windows CPython folder?"
    raise InputError(msg)


def try_wheels(wheels_dir: Path, *, script: Optional[Path], wine_python: Optional[Path], pip_args: Sequence[str],
               env: Mapping[str, str]) -> List[Try]:  # fmt: skip
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    if not wheels:
        msg = f"no wheels (*.whl) in {wheels_dir}"
        raise InputError(msg)
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
            tries.append(try_in_venv(wheel, script, pip_args, env))
        elif how == "wine":
            assert wine is not None and wine_python is not None
            tries.append(try_under_wine(wheel, script, wine, wine_python, pip_args, env))
        else:
            tries.append(Try(wheel.name, platform_id, "-", "not tried", reason))
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
    p.add_argument("--script", type=Path, help="Python script run with the wheel installed (default: import its top-level package)")
    p.add_argument("--wine-python", type=Path, help="a Windows CPython folder (python.exe) to try win_amd64 wheels under Wine")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG", help="extra argument for pip (e.g. --find-links=DIR); repeat")
    return p


def run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    ns = _parser().parse_args(list(argv))
    tries = try_wheels(ns.wheels, script=ns.script, wine_python=ns.wine_python, pip_args=ns.pip_arg, env=env)
    write_text_atomic(ns.report, render_report(tries))
    write_text_atomic(ns.report.with_name("tries.json"), report_json(tries))
    failed = [t.wheel for t in tries if t.status == "failed"]
    print(f"wrote {ns.report}: {len(tries)} wheel(s), {len(failed)} failed", flush=True)
    if failed:
        msg = f"{len(failed)} wheel(s) failed their try: {', '.join(failed)} (see {ns.report})"
        raise AuditFailed(msg)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    env: Dict[str, str] = dict(os.environ)
    return run_step(lambda: run(sys.argv[1:] if argv is None else argv, env))
