"""CMake options and install behaviour that do not depend on a GPU toolchain."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def test_unknown_backend_is_rejected_with_the_allowed_ones(native_build, tmp_path):
    build = native_build(tmp_path, "-DCOMPUTE_BACKEND=rocm")
    assert build.returncode != 0
    assert "COMPUTE_BACKEND='rocm'" in build.log
    assert "cpu, cuda, hip, xpu" in build.log


def test_release_is_the_default_build_type(cpu_build):
    cache = (cpu_build.build_dir / "CMakeCache.txt").read_text()
    assert "CMAKE_BUILD_TYPE:STRING=Release" in cache


def test_xpu_needs_the_oneapi_compiler(native_build, tmp_path):
    build = native_build(tmp_path, "-DCOMPUTE_BACKEND=xpu")
    if build.returncode == 0:  # a oneAPI machine: the library is named after the compiler year
        assert build.library.name.startswith("libbitsandbytes_xpu20")
    else:
        assert "icpx" in build.log


def test_scikit_build_installs_into_the_package_folder_only(native_build, cmake, tmp_path):
    # What scikit-build-core passes; the library must not land in the source tree's bitsandbytes/.
    platlib = tmp_path / "platlib"
    build = native_build(tmp_path, "-DCOMPUTE_BACKEND=cpu", "-DSKBUILD=2", f"-DSKBUILD_PLATLIB_DIR={platlib}")
    assert build.returncode == 0, build.log
    subprocess.run([cmake, "--install", str(build.build_dir)], check=True, capture_output=True)
    installed = sorted(p.name for p in (platlib / "bitsandbytes").iterdir())
    assert installed == [build.library.name]


def test_default_output_under_scikit_build_is_in_the_build_folder(cmake, tmp_path, repo_root):
    build_dir = tmp_path / "build"
    subprocess.run([cmake, "-S", str(repo_root), "-B", str(build_dir), "-G", "Ninja", "-DSKBUILD=2"],
                   capture_output=True, check=True)
    cache = (build_dir / "CMakeCache.txt").read_text()
    assert f"BNB_OUTPUT_DIR:PATH={build_dir}/lib" in cache


def test_compiler_launcher_is_used(native_build, tmp_path):
    ccache = shutil.which("ccache")
    if ccache is None:
        pytest.skip("ccache not installed (apt-get install ccache)")
    cache_dir = tmp_path / "ccache"
    build = native_build(tmp_path, "-DCOMPUTE_BACKEND=cpu", f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}",
                         env={"CCACHE_DIR": str(cache_dir)})
    assert build.returncode == 0, build.log
    stats = subprocess.run([ccache, "--print-stats"], capture_output=True, text=True, check=True,
                           env={**os.environ, "CCACHE_DIR": str(cache_dir)}).stdout
    counters = dict(line.split("\t") for line in stats.splitlines() if "\t" in line)
    assert int(counters["cache_miss"]) >= 3, f"ccache saw no compile of the library: {stats}"  # 3 common .cpp at least
