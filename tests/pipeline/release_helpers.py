"""Shared helpers of the release and publish tests: wheel sets, fresh venvs, a real pypiserver.

The wheels are the real CPU wheel of this checkout (built once per session by bnb_build_helpers);
wheels for the other platforms are that wheel re-tagged (file name and WHEEL metadata), which is
enough for the steps that only read names and metadata.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional

import pytest

from bnb_build_helpers import REPO_ROOT, cpu_wheel, scratch_dir

VENV_BIN = Path(sys.executable).parent
UV = REPO_ROOT / ".venv" / "bin" / "uv"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "example-org/bitsandbytes"
PLAT_TAGS = {
    "linux-x86_64": "manylinux_2_28_x86_64",
    "linux-aarch64": "manylinux_2_28_aarch64",
    "windows-x64": "win_amd64",
    "windows-arm64": "win_arm64",
    "macos-arm64": "macosx_14_0_arm64",
}


def real_version() -> str:
    return (REPO_ROOT / "VERSION").read_text().strip()


# ----------------------------------------------------------------------------------------------
# Wheel sets


def rewrite_entries(src: Path, dest: Path, edit) -> None:
    """Copy a wheel, letting ``edit(name, data) -> (name, data) | None`` change entries; new RECORD."""
    with zipfile.ZipFile(src) as z:
        entries = [(i.filename, z.read(i)) for i in z.infolist() if not i.filename.endswith("/RECORD")]
    out = []
    for name, data in entries:
        changed = edit(name, data)
        if changed is not None:
            out.append(changed)
    record = next(n for n, _ in out if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0] + "/RECORD"
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for name, data in out:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([record, "", ""])
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in out + [(record, text.getvalue().encode())]:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def retag(wheel: Path, plat_tag: str, folder: Path, *, wheel_tag: Optional[str] = None) -> Path:
    """``wheel`` with another platform tag in its name and (unless ``wheel_tag``) its WHEEL metadata."""
    old = wheel.name.rsplit("-", 1)[1][: -len(".whl")]
    dest = folder / wheel.name.replace(old, plat_tag)

    def edit(name: str, data: bytes):
        if name.endswith(".dist-info/WHEEL"):
            data = data.replace(f"py3-none-{old}".encode(), f"py3-none-{wheel_tag or plat_tag}".encode())
        return name, data

    folder.mkdir(parents=True, exist_ok=True)
    rewrite_entries(wheel, dest, edit)
    return dest


def wheel_set(folder: Path, platforms: List[str]) -> Path:
    """``folder`` with one wheel per platform: the real CPU wheel for linux-x86_64, re-tagged copies else."""
    folder.mkdir(parents=True, exist_ok=True)
    for platform in platforms:
        if platform == "linux-x86_64":
            shutil.copy(cpu_wheel(), folder)
        else:
            retag(cpu_wheel(), PLAT_TAGS[platform], folder)
    return folder


def expect_json(path: Path) -> Path:
    """The expect.json the plan yields for the CPU library of linux-x86_64."""
    path.write_text(json.dumps({"wheels": {"linux-x86_64": {"plat_tag": PLAT_TAGS["linux-x86_64"], "libraries": {"libbitsandbytes_cpu.so": {"backend": "cpu", "archs": []}}}}}))
    return path


# ----------------------------------------------------------------------------------------------
# Fresh virtual environments and installers


def installer_env(**extra: str) -> Dict[str, str]:
    """An environment where pip and uv see no configured index: only what a command names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_CACHE_DIR"] = str(scratch_dir() / "uv-cache")
    env["UV_NO_CONFIG"] = "1"
    env.update(extra)
    return env


def fresh_venv(path: Path) -> Path:
    """A new venv without packages; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def pip_install(python: Path, *args: str) -> subprocess.CompletedProcess:
    """pip (the test venv's, from PyPI) installing into the venv of ``python``."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-input", *args],
        env=installer_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def uv_install(python: Path, *args: str) -> subprocess.CompletedProcess:
    if not UV.exists():
        pytest.fail(f"{UV} is missing: install tests/requirements.txt into .venv (it provides uv)")
    return subprocess.run([str(UV), "pip", "install", "--python", str(python), *args], env=installer_env(), capture_output=True, text=True, timeout=600)


_NUMPY: Dict[str, Path] = {}


def numpy_links() -> Path:
    """A folder holding a numpy wheel (downloaded once per session with the test venv's pip)."""
    if "dir" not in _NUMPY:
        import numpy

        folder = scratch_dir() / "numpy-links"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), f"numpy=={numpy.__version__}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0 and list(folder.glob("numpy-*.whl")), f"cannot download numpy from the package index:\n{result.stderr}"
        _NUMPY["dir"] = folder
    return _NUMPY["dir"]


REPORT = (
    "import importlib.metadata as m, json, bitsandbytes\n"
    "print(json.dumps({'metadata': m.version('bitsandbytes'), 'version': bitsandbytes.__version__, 'info': bitsandbytes.build_info()}))\n"
)


def installed_report(python: Path, cwd: Path) -> dict:
    """What the installed package says about itself (run outside the checkout)."""
    result = subprocess.run([str(python), "-c", REPORT], cwd=str(cwd), env=installer_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def round_trip(python: Path, cwd: Path) -> str:
    """``python -m bitsandbytes`` (loads the native library, quantizes and restores values)."""
    result = subprocess.run([str(python), "-m", "bitsandbytes"], cwd=str(cwd), env=installer_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round trip of" in result.stdout and "backend: cpu" in result.stdout, result.stdout
    return result.stdout


# ----------------------------------------------------------------------------------------------
# A real pypiserver on 127.0.0.1

PYPISERVER_LAUNCHER = """\
import os, sys, wsgiref.simple_server
import pypiserver
token = os.environ.pop("INDEX_TOKEN")
app = pypiserver.app(
    roots=[sys.argv[1]], authenticate=["update"], password_file=None, disable_fallback=True,
    auther=lambda user, password: user == "__token__" and password == token,
)
class Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass
server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"""


class PyPIServer:
    """pypiserver serving ``packages`` on a free loopback port; uploads need user __token__ and ``token``."""

    def __init__(self, packages: Path, token: str) -> None:
        self.packages = packages
        packages.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, INDEX_TOKEN=token)
        self.proc = subprocess.Popen([sys.executable, "-c", PYPISERVER_LAUNCHER, str(packages)], env=env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            pytest.fail(f"pypiserver did not start (printed {line!r})")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.simple = f"{self.url}simple/"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

    def files(self) -> Dict[str, float]:
        return {p.name: p.stat().st_mtime for p in sorted(self.packages.rglob("*.whl"))}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_pypiserver(packages: Path, token: str) -> Iterator[PyPIServer]:
    server = PyPIServer(packages, token)
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A loopback port with nothing listening (for 'unreachable index' tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shim_path(folder: Path, tool: str, log: Path, env: Mapping[str, str]) -> str:
    """A PATH whose first entry holds ``tool``: a recorded shim that logs its argv (JSON lines) and
    whether TWINE_PASSWORD was set, then execs the real tool found on ``env``'s PATH."""
    real = shutil.which(tool, path=os.pathsep.join([str(VENV_BIN), env.get("PATH", os.defpath)]))
    assert real, f"{tool} not found"
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / tool
    shim.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv, 'has_password': bool(os.environ.get('TWINE_PASSWORD')),\n"
        "                        'leaked_env': sorted(k for k in ('PYPI_TOKEN', 'ACTIONS_ID_TOKEN_REQUEST_TOKEN', 'GITHUB_TOKEN') if k in os.environ)}) + '\\n')\n"
        f"os.execv({real!r}, [{real!r}] + sys.argv[1:])\n"
    )
    shim.chmod(0o755)
    return os.pathsep.join([str(folder), str(VENV_BIN), env.get("PATH", os.defpath)])
