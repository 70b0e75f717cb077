"""Packaging: `pip install .` builds and installs a working package; prebuilt libraries make a wheel.

`pip install .` runs with build isolation, so pip fetches scikit-build-core (and CMake/Ninja when
the machine has none) from its configured index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ._support import lib_names

PYTHON_FILES = "bitsandbytes/*.py"


def run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def clean_environment() -> dict:
    """This environment without variables that would change the build or the library choice."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("BNB_", "PYTHON", "SKBUILD", "CMAKE_")) and k not in ("VIRTUAL_ENV",)}


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """A fresh virtual environment into which `pip install <checkout>` installed the package."""
    venv = tmp_path_factory.mktemp("install") / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run([python, "-m", "pip", "install", "--no-cache-dir", repo_root], env=clean_environment(), timeout=900)
    return python


ROUND_TRIP = """
import sysconfig
import numpy as np
import bitsandbytes
from bitsandbytes import functional, reference

x = np.random.default_rng(3).standard_normal(5000).astype(np.float32)
packed, absmax = functional.quantize_4bit(x, blocksize=128, quant_type="fp4")
ref_packed, ref_absmax = reference.quantize_4bit(x, blocksize=128, quant_type="fp4")
assert (packed == ref_packed).all() and (absmax == ref_absmax).all()
out = functional.dequantize_4bit(packed, absmax, x.shape, blocksize=128, quant_type="fp4")
print(bitsandbytes.__version__)
print(bitsandbytes.native_library().path)
print(sysconfig.get_paths()["platlib"])
print(float(abs(out - x).max()))
"""


def test_pip_install_builds_a_working_package(installed_venv: Path, repo_root: Path) -> None:
    result = run([installed_venv, "-c", ROUND_TRIP], cwd="/", env=clean_environment(), timeout=300)
    version, library, platlib, error = result.stdout.split("\n")[:4]
    assert version == (repo_root / "VERSION").read_text().strip()
    assert Path(library) == Path(platlib) / "bitsandbytes" / lib_names("cpu")[0]
    assert Path(library).is_file()
    assert 0 < float(error) < 1.0


def test_python_m_bitsandbytes_reports_the_library_and_a_round_trip(installed_venv: Path) -> None:
    result = run([installed_venv, "-m", "bitsandbytes"], cwd="/", env=clean_environment(), timeout=300)
    lines = result.stdout.splitlines()
    assert any(line.startswith("library: ") and line.endswith(lib_names("cpu")[0]) for line in lines)
    assert any(line.startswith("backend: cpu") for line in lines)
    assert any(line.startswith("reason:  ") and len(line) > len("reason:  ") for line in lines)
    kernels = [line for line in lines if line.startswith("kernels: ")]
    assert kernels and kernels[0].split()[1].rstrip(",") in ("avx512", "avx2", "neon", "scalar"), lines
    assert "max error 8-bit" in lines[-1]


@pytest.fixture
def prebuilt_tree(tmp_path: Path, repo_root: Path, cpu_library: Path) -> Path:
    """A copy of the Python sources with prebuilt libraries (copies of the CPU library) in bitsandbytes/."""
    tree = tmp_path / "src"
    (tree / "bitsandbytes").mkdir(parents=True)
    for name in ("pyproject.toml", "VERSION", ".gitignore"):
        shutil.copyfile(repo_root / name, tree / name)
    for source in repo_root.glob(PYTHON_FILES):
        shutil.copyfile(source, tree / "bitsandbytes" / source.name)
    for name in lib_names("cpu", "cuda130"):
        shutil.copyfile(cpu_library, tree / "bitsandbytes" / name)
    return tree


def build_wheel(tree: Path, *config: str) -> Path:
    out = tree / "dist"
    environment = dict(clean_environment(), BNB_SKIP_CMAKE="1")
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, *config, tree]
    run(command, env=environment, timeout=300)
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_from_prebuilt_libraries_carries_them_with_the_forced_tag(prebuilt_tree: Path, repo_root: Path) -> None:
    ignored = "/bitsandbytes/libbitsandbytes_*"
    assert ignored in (prebuilt_tree / ".gitignore").read_text().splitlines(), "the libraries are git-ignored"
    wheel = build_wheel(prebuilt_tree, "-C", "wheel.tags=py3-none-manylinux_2_34_x86_64")

    version = (repo_root / "VERSION").read_text().strip()
    assert wheel.name == f"bitsandbytes-{version}-py3-none-manylinux_2_34_x86_64.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        wheel_info = archive.read(f"bitsandbytes-{version}.dist-info/WHEEL").decode()
        for library in lib_names("cpu", "cuda130"):
            assert f"bitsandbytes/{library}" in names
            assert archive.read(f"bitsandbytes/{library}") == (prebuilt_tree / "bitsandbytes" / library).read_bytes()
    assert "Tag: py3-none-manylinux_2_34_x86_64" in wheel_info.splitlines()
    assert "Root-Is-Purelib: false" in wheel_info.splitlines()
    assert "bitsandbytes/functional.py" in names and "bitsandbytes/__init__.py" in names


def test_wheel_from_prebuilt_libraries_defaults_to_a_py3_platform_tag(prebuilt_tree: Path) -> None:
    wheel = build_wheel(prebuilt_tree)
    python_tag, abi_tag, platform_tag = wheel.stem.split("-")[-3:]
    assert (python_tag, abi_tag) == ("py3", "none")
    assert platform_tag != "any"
