"""The SYCL sources, checked host-only: no SYCL compiler exists on this kind of machine.

g++ parses csrc/xpu against the SYCL headers of the `intel-sycl-rt` wheel, which catches API
misuse in host and kernel code (device-only restrictions need icpx, which builds the real library).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def sycl_include_dir() -> Path | None:
    """The wheel's include/ folder: where its RECORD says, or next to it (`pip install --target`)."""
    try:
        distribution = importlib.metadata.distribution("intel-sycl-rt")
    except importlib.metadata.PackageNotFoundError:
        return None
    candidates = [Path(str(distribution.locate_file(""))) / "include", Path(sys.prefix) / "include"]
    for file in distribution.files or []:
        if file.as_posix().endswith("include/sycl/sycl.hpp"):
            candidates.insert(0, Path(str(file.locate())).parent.parent)
    return next((c.resolve() for c in candidates if (c / "sycl" / "sycl.hpp").is_file()), None)


def test_xpu_sources_parse_against_sycl_headers(repo_root):
    include = sycl_include_dir()
    if include is None:
        pytest.skip("SYCL headers not installed: `./bnb test` installs them (bitsandbytes_ci.host.launch.SYCL_HEADERS)")
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ not found")
    sources = sorted((repo_root / "csrc" / "xpu").glob("*.cpp"))
    assert sources, "no csrc/xpu/*.cpp"
    for source in sources:
        done = subprocess.run(
            [compiler, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
             "-DSYCL_DISABLE_FSYCL_SYCLHPP_WARNING", "-isystem", str(include), "-I", str(repo_root / "csrc"),
             str(source)],
            capture_output=True, text=True, check=False,
        )
        assert done.returncode == 0, f"{source.name}:\n{done.stderr}"
