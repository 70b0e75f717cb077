"""The pipeline installed as a package (its wheel, not this checkout) builds a tree from any folder.

The pipeline's sdist and wheel are built from pipeline/ (`python -m build`, which makes the wheel from
the sdist), the wheel is installed with its `host` extra (the pinned step tools) into a new virtualenv
outside the checkout, and that virtualenv's `bnb-ci` builds a copy of tests/fixtures/upstream_tree:
its CPU library (the host's C++ compiler), the wheel (whose constraints file is the pins the installed
step package ships with), the try (in a kept environment) and the audit; a second run takes all of it
from the cache. Nothing of the checkout is on PATH or PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bnb_build_helpers import UPSTREAM_VERSION
from host_helpers import REPO_ROOT

UPSTREAM = REPO_ROOT / "tests" / "fixtures" / "upstream_tree"
PINS = REPO_ROOT / "pipeline" / "step-requirements.txt"
SELECTION = ["--backend", "cpu", "--platform", "linux-x86_64", "--jobs", "1", "--keep-going"]
TRY_SCRIPT = "import bitsandbytes\nprint('imported bitsandbytes', bitsandbytes.__version__)\n"


def clean_env(venv: Path, home: Path) -> dict[str, str]:
    """PATH: the virtualenv's bin/ and the system's; nothing from the checkout, no steering variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BNB_", "PYTHON", "VIRTUAL_ENV", "PIP_", "UV_", "CUDA", "CC", "CXX"))}
    env.update({"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)})
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))  # downloads are shared
    env["XDG_CACHE_HOME"] = str(home / "cache")  # bnb-ci's cache: this test's own
    return env


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline's sdist and wheel, built from a copy of pipeline/ (so nothing is written into the checkout)."""
    root = tmp_path_factory.mktemp("pipeline-dist")
    source = root / "pipeline"
    shutil.copytree(REPO_ROOT / "pipeline", source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "sdk", ".venv", "dist"))
    done = run([sys.executable, "-m", "build", "--outdir", root / "dist", source], cwd=root, env=dict(os.environ), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "dist"


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A new virtualenv outside the checkout holding the pipeline's wheel with its `host` extra."""
    root = tmp_path_factory.mktemp("installed-pipeline")
    venv = root / "venv"
    env = clean_env(venv, root)
    base_python = getattr(sys, "_base_executable", sys.executable)
    done = run([base_python, "-m", "venv", venv], cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    [wheel] = sorted(dist.glob("*.whl"))
    done = run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", f"{wheel}[host]"], cwd=root, env=env)
    if done.returncode != 0 and "Could not find a version" in done.stderr + done.stdout:
        pytest.skip(f"the package index is not reachable: {done.stderr[-500:]}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv, env


def test_the_wheel_ships_the_pins_and_the_cmake_files(dist: Path) -> None:
    [wheel] = sorted(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        pins = z.read("bnb_build/step-requirements.txt").decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert pins == PINS.read_text(), "the one file of pins, shipped unchanged"
    assert {"bnb_build/cmake/zig.cmake", "bnb_build/cmake/project.cmake", "bnb_build/cmake/debian-rocm.cmake"} <= names
    assert {"bitsandbytes_ci/core/matrix.toml", "bitsandbytes_ci/core/images.lock.toml"} <= names
    assert "Requires-Dist: ziglang==" in metadata and "extra == 'host'" in metadata, "the host extra: the pinned step tools"
    for line in PINS.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            assert f"Requires-Dist: {requirement}; extra == 'host'" in metadata, requirement


def test_the_installed_pipeline_builds_a_tree_from_another_folder(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    tree = tmp_path / "trees" / "bitsandbytes"
    shutil.copytree(UPSTREAM, tree)
    (tree / "try_import.py").write_text(TRY_SCRIPT)
    with (tree / "pyproject.toml").open("a") as f:
        f.write('\n[tool.bitsandbytes-ci]\ntry-script = "try_import.py"\n')
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    out = tmp_path / "out"
    done = run([venv / "bin" / "bnb-ci", "build-all", "--source", tree, "--out", out, *SELECTION], cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    jobs = {j["id"]: j for j in json.loads((out / "manifest.json").read_text())["jobs"]}
    for job_id in ("cpu-linux-x86_64", "wheel-linux-x86_64", "try", "audit"):
        assert jobs[job_id]["status"] == "built", (jobs[job_id], done.stdout[-4000:])
    assert "Result: **PASS**" in (out / "audit.md").read_text()
    [wheel] = sorted((out / "wheels").glob("*.whl"))
    assert wheel.name.startswith(f"bitsandbytes-{UPSTREAM_VERSION}-py3-none-manylinux_")
    with zipfile.ZipFile(wheel) as z:
        assert "bitsandbytes/libbitsandbytes_cpu.so" in z.namelist()
    [log] = list(Path(env["XDG_CACHE_HOME"]).glob("**/jobs/wheel-linux-x86_64/log.txt"))
    [site] = list((venv / "lib").glob("python3*/site-packages"))
    assert f"--dependency-constraints-txt {site / 'bnb_build' / 'step-requirements.txt'}" in log.read_text(), "the pins of the installed step package"
    assert str(REPO_ROOT) not in log.read_text(), "nothing of the checkout is used"

    # Again: the wheel is unchanged and so is its kept try environment; the try that passed is not redone.
    again = run([venv / "bin" / "bnb-ci", "build-all", "--source", tree, "--out", tmp_path / "out-again", *SELECTION], cwd=elsewhere, env=env)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert "[try] cached" in again.stdout and "[wheel-linux-x86_64] cached" in again.stdout
    [stamp] = list(Path(env["XDG_CACHE_HOME"]).glob("**/try-envs/*/bnb-try-env.json"))
    assert json.loads(stamp.read_text())["tried"] == ["bitsandbytes"]


def test_the_installed_pipeline_installs_cuda_wheels_by_itself(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """The cuBLAS hint names a command of the installed bnb-ci (no script of a checkout). A prefix that
    holds exactly the wheels is kept (no download); a file where the folder should be is refused."""
    venv, env = installed
    probe = "from bitsandbytes_ci.host.toolchains import CUBLAS_WHEELS_HINT as h; from bitsandbytes_ci.host.install_toolkit import cuda_wheels as w; print(h); print(' '.join(w(with_cublas=True)))"
    done = run([venv / "bin" / "python", "-c", probe], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    hint, wheels = done.stdout.splitlines()
    assert hint.startswith("bnb-ci install-cuda-wheels --with-cublas --prefix PREFIX")
    prefix = tmp_path / "cuda"
    (prefix / "nvidia" / "cu13" / "bin").mkdir(parents=True)
    (prefix / ".bnb-wheels").write_text(wheels + "\n")
    done = run([venv / "bin" / "bnb-ci", "install-cuda-wheels", "--with-cublas", "--prefix", prefix], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"BNB_CUDA_ROOTS={prefix / 'nvidia' / 'cu13'}" in done.stdout
    (tmp_path / "a-file").write_text("not a folder")
    done = run([venv / "bin" / "bnb-ci", "install-cuda-wheels", "--prefix", tmp_path / "a-file"], cwd=tmp_path, env=env)
    assert done.returncode == 2 and f"{tmp_path / 'a-file'} is a file; name a folder" in done.stderr


def test_uv_tool_install_gives_a_bnb_ci_with_its_pins(dist: Path, tmp_path: Path) -> None:
    """`uv tool install` of the pipeline's source (with `--no-sources`: the Dagger SDK's source is the
    Dagger runtime's) gives a bnb-ci whose steps find their pins and whose tools are installed."""
    uv = Path(sys.executable).parent / "uv"
    env = clean_env(tmp_path / "unused", tmp_path)
    env.update({"UV_TOOL_DIR": str(tmp_path / "tools"), "UV_TOOL_BIN_DIR": str(tmp_path / "bin"), "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))})
    done = run([uv, "tool", "install", "--no-sources", f"{dist.parent / 'pipeline'}[host]"], cwd=tmp_path, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    python = tmp_path / "tools" / "bitsandbytes-ci" / "bin" / "python"
    probe = "from bnb_build import wheel; print(wheel.DEFAULT_CONSTRAINTS)"
    pins = Path(run([python, "-c", probe], cwd=tmp_path, env=env).stdout.strip())
    assert pins.read_text() == PINS.read_text() and pins.is_relative_to(tmp_path / "tools")
    assert (python.parent / "cmake").exists() and (python.parent / "auditwheel").exists(), "the host extra's tools"
    tree = tmp_path / "tree"
    shutil.copytree(UPSTREAM, tree)
    plan = run([tmp_path / "bin" / "bnb-ci", "plan", "--source", tree, "--backend", "cpu", "--platform", "linux-x86_64", "--here"], cwd=tmp_path, env=env)
    assert plan.returncode == 0 and "cpu-linux-x86_64  yes" in plan.stdout, plan.stdout + plan.stderr


def test_install_cuda_wheels_assembles_nvcc_once(tmp_path: Path) -> None:
    """The real wheels from PyPI (nvcc without cuBLAS, about 130 MB): a CUDA root with nvcc 13.0 and the
    unversioned names CMake looks for; run again, the prefix is kept; the checkout's script runs the
    same command."""
    bnb_ci = Path(sys.executable).parent / "bnb-ci"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = run([bnb_ci, "install-cuda-wheels", "--prefix", tmp_path / "cuda"], cwd=tmp_path, env=env, timeout=1200)
    if done.returncode != 0 and "No matching distribution" in done.stdout + done.stderr:
        pytest.skip(f"NVIDIA's wheels cannot be downloaded here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    root = tmp_path / "cuda" / "nvidia" / "cu13"
    assert "release 13.0" in subprocess.run([root / "bin" / "nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    assert (root / "lib" / "libcudart.so").is_symlink() and (root / "lib64").resolve() == (root / "lib").resolve()
    assert not list(tmp_path.glob("cuda.partial-*")), "the staging folder is gone"
    again = run(["bash", REPO_ROOT / "tools" / "install-cuda-wheels.sh", tmp_path / "cuda"], cwd=tmp_path, env=env)
    assert again.returncode == 0 and "already holds nvidia-cuda-nvcc==13.0.88" in again.stdout, again.stdout + again.stderr
    assert "+ " not in again.stdout, "nothing installed again"
