"""Shared helpers of the host executor tests (test_local.py, test_toolchains.py, test_build_all.py).

The executor builds from a checkout; tests give it a copy of this repository in a temporary folder
(never this checkout itself), so a copy can be broken on purpose and two copies in different folders
can be compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BNB_CI = Path(sys.executable).parent / "bnb-ci"

COPY_IGNORED = (".venv", ".git", ".bnb-cache", ".cuda-wheels", "node_modules", "__pycache__", ".pytest_cache", "bnb-out", "dist", "libbitsandbytes_*")
INJECTED_ERROR = "injected compile error for the host executor tests"

# Variables that would steer a build away from what the test asks for.
_STEERING = ("SOURCE_DATE_EPOCH", "CUDACXX", "CUDAToolkit_ROOT", "CUDA_HOME", "CUDA_PATH", "CMAKE_TOOLCHAIN_FILE", "HIP_PLATFORM")


def copy_repo(dest: Path) -> Path:
    """A copy of this checkout's files at `dest` (without virtualenvs, git data, caches, built libraries)."""
    shutil.copytree(REPO_ROOT, dest, ignore=shutil.ignore_patterns(*COPY_IGNORED))
    readme = dest / "README.md"
    if not readme.exists():  # a wheel source in the matrix; the checkout may not have one yet
        readme.write_text("# bitsandbytes\n", encoding="utf-8")
    return dest


def break_cuda_sources(repo: Path) -> list[Path]:
    """Make every csrc/cuda/*.cu of the copy at `repo` fail to compile."""
    broken = sorted((repo / "csrc" / "cuda").glob("*.cu"))
    assert broken, f"no csrc/cuda/*.cu in {repo}"
    for path in broken:
        path.write_text(f'#error "{INJECTED_ERROR}"\n' + path.read_text(encoding="utf-8"), encoding="utf-8")
    return broken


def host_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STEERING}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def run_bnb_ci(args: Sequence[str], *, cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """The installed `bnb-ci` console script, run in `cwd`."""
    assert BNB_CI.exists(), f"{BNB_CI} is missing: install the pipeline with `pip install -e pipeline`"
    return subprocess.run([str(BNB_CI), *args], cwd=cwd, env=copy_env(cwd), capture_output=True, text=True, timeout=timeout, check=False)


def copy_env(cwd: Path) -> dict[str, str]:
    """host_env() with a user cache folder of the copy at `cwd` (`<cwd>/.bnb-cache`): each copy starts
    with an empty cache, like a user's first run, and the real user cache is never written."""
    return {**host_env(), "XDG_CACHE_HOME": str(Path(cwd).absolute() / ".bnb-cache")}
