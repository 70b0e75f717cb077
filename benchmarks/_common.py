"""Helpers of the benchmark scripts: a copy of the checkout, timed commands, the machine's description."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
PIPELINE_SRC = REPO / "pipeline" / "src"
BNB_CI = Path(sys.executable).parent / "bnb-ci"
IGNORED = (".venv", ".git", ".bnb-cache", "__pycache__", ".pytest_cache", "bnb-out", "libbitsandbytes_*", "build", "build-*")


def copy_checkout(dest: Path) -> Path:
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*IGNORED))
    return dest


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    mem_kib = 0
    try:
        mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 2**20, 1), "system": f"{platform.system()} {platform.machine()}",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "CUDACXX", "CMAKE_TOOLCHAIN_FILE", "HIP_PLATFORM")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.update(extra)
    return env


def timed(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> float:
    """Run `argv`, output to `log`; its wall time in seconds (raises when it fails)."""
    start = time.monotonic()
    with open(log, "w") as f:
        done = subprocess.run(list(argv), cwd=cwd, env=dict(env), stdout=f, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({done.returncode}):\n{tail}")
    return elapsed


def emit(name: str, result: Mapping[str, Any], summary: str) -> None:
    """The JSON line (for machines), then the human summary."""
    print(json.dumps({"benchmark": name, **result}, sort_keys=True))
    print(summary)


def cmake_executable() -> str:
    """The pinned CMake of the virtual environment, else the one on PATH."""
    venv_cmake = Path(sys.executable).parent / "cmake"
    found = str(venv_cmake) if venv_cmake.exists() else shutil.which("cmake")
    if found is None:
        raise SystemExit("cmake not found: install tests/requirements.txt (it pins cmake)")
    return found


def build_cpu_library(root: Path) -> Path:
    """The CPU library of this checkout, configured and built (Release) in root/build; its path."""
    env = env_with()
    cmake = cmake_executable()
    timed([cmake, "-S", str(REPO), "-B", str(root / "build"), "-G", "Ninja", "-DCOMPUTE_BACKEND=cpu",
           f"-DBNB_OUTPUT_DIR={root / 'lib'}"], cwd=root, env=env, log=root / "configure.log")  # fmt: skip
    timed([cmake, "--build", str(root / "build")], cwd=root, env=env, log=root / "build.log")
    [library] = sorted((root / "lib").glob("libbitsandbytes_cpu.*"))
    return library
