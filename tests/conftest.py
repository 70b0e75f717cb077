"""Shared test configuration.

Markers:
- ``engine``: needs a Dagger CLI and a reachable engine; skipped where there is none.
- ``gpu``: needs a visible GPU; skipped where there is none.

Each area keeps its own fixtures in its folder's conftest.py; only what several areas share lives here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# zig (the cross toolchain of the CPU jobs) builds libc/libc++ once per target into its global cache, which
# takes minutes: every build of the session (bnb-ci runs in temporary folders too) shares one cache that
# outlives the session (.ci/run keeps .bnb-cache).
os.environ.setdefault("ZIG_GLOBAL_CACHE_DIR", str(REPO_ROOT / ".bnb-cache" / "zig"))

# bnb-ci's cache defaults to the user's cache folder ($XDG_CACHE_HOME/bitsandbytes-ci): the tests never
# write into the real one, and a run without --cache-dir gets a temporary folder of this test run instead.
TEST_RUN_USER_CACHE = Path(tempfile.mkdtemp(prefix="bnb-tests-user-cache-"))
os.environ["XDG_CACHE_HOME"] = str(TEST_RUN_USER_CACHE)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(TEST_RUN_USER_CACHE, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: needs a Dagger CLI and engine (skipped without one)")
    config.addinivalue_line("markers", "gpu: needs a visible GPU (skipped without one)")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def cmake_executable() -> str:
    """The CMake the tests build with: the pinned one from the test environment first."""
    venv_cmake = Path(sys.executable).parent / "cmake"
    if venv_cmake.exists():
        return str(venv_cmake)
    found = shutil.which("cmake")
    if found is None:
        pytest.fail("cmake not found: install tests/requirements.txt (it pins cmake)")
    return found


def build_native(source: Path, build_dir: Path, output_dir: Path, *defines: str, env: dict[str, str] | None = None) -> Path:
    """Configure and build the native library with CMake; returns the output directory."""
    cmake = cmake_executable()
    run_env = dict(os.environ if env is None else env)
    subprocess.run(
        [cmake, "-S", str(source), "-B", str(build_dir), "-G", "Ninja", f"-DBNB_OUTPUT_DIR={output_dir}", *defines],
        check=True, capture_output=True, text=True, env=run_env,
    )
    subprocess.run([cmake, "--build", str(build_dir)], check=True, capture_output=True, text=True, env=run_env)
    return output_dir


@pytest.fixture(scope="session")
def cpu_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CPU library built once per test session from this checkout (a real CMake build)."""
    root = tmp_path_factory.mktemp("cpu-build")
    out = build_native(REPO_ROOT, root / "build", root / "lib", "-DCOMPUTE_BACKEND=cpu")
    libs = sorted(out.glob("libbitsandbytes_cpu.*"))
    assert libs, f"CMake built no libbitsandbytes_cpu in {out}"
    return libs[0]


@pytest.fixture(scope="session")
def cuda_with_cublas() -> Path:
    """A CUDA 13.0 toolkit with cuBLAS and cuBLASLt (the machine's has neither), from NVIDIA's PyPI
    wheels: the folder `./bnb test` fills when it finds no nvcc, filled here once where it is not;
    its nvidia/cu13 folder. Skips, with pip's reason, where the wheels cannot be downloaded."""
    from bitsandbytes_ci.host.launch import CUDA_WHEELS, install_cuda_wheels

    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    try:
        done = install_cuda_wheels(REPO_ROOT, env, capture=True)
    except subprocess.TimeoutExpired:
        pytest.skip("installing the CUDA 13.0 + cuBLAS wheels (about 550 MB) took too long")
    if done.returncode != 0:
        pytest.skip(f"cannot install the CUDA 13.0 + cuBLAS wheels: {(done.stderr or done.stdout).strip()[-800:]}")
    return REPO_ROOT / CUDA_WHEELS / "nvidia" / "cu13"
