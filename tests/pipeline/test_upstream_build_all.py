"""`bnb-ci build-all --source` end to end on a tree of upstream's shape (tests/fixtures/upstream_tree),
unmodified: its CPU library (gcc, OpenMP, libgomp vendored into the wheel) and its CUDA 13 library for
one architecture (it links cuBLAS, from NVIDIA's PyPI wheel), one wheel, tried, audited, described.
Two builds of two copies in different folders give the same bytes. The tests of test_build_all.py hold
the same for this repository's own tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bnb_build_helpers import UPSTREAM_VERSION
from host_helpers import BNB_CI, host_env

from bnb_build import elf

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_tree"
SELECTION = ["--backend", "cpu", "--backend", "cuda", "--archs", "75", "--platform", "linux-x86_64"]


class Run:
    def __init__(self, tree: Path, out: Path, result: subprocess.CompletedProcess[str]) -> None:
        self.tree, self.out, self.result = tree, out, result

    @property
    def wheel(self) -> Path:
        [wheel] = sorted((self.out / "wheels").glob("*.whl"))
        return wheel

    @property
    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())


def build_all(tree: Path, out: Path, cuda: Path) -> Run:
    shutil.copytree(UPSTREAM, tree)
    env = {**host_env(), "BNB_CUDA_ROOTS": str(cuda)}
    result = subprocess.run([str(BNB_CI), "build-all", "--source", str(tree), "--out", str(out), *SELECTION], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=2400, check=False)  # fmt: skip
    return Run(tree, out, result)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cuda_with_cublas: Path) -> tuple[Run, Run]:
    root = tmp_path_factory.mktemp("upstream")
    first = build_all(root / "a" / "bitsandbytes", root / "out-a", cuda_with_cublas)
    second = build_all(root / "elsewhere" / "deeper" / "tree", root / "out-b", cuda_with_cublas)
    for run in (first, second):
        assert run.result.returncode == 0, run.result.stdout[-6000:] + run.result.stderr[-3000:]
    return first, second


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_tree_builds_into_an_audited_wheel(runs: tuple[Run, Run]) -> None:
    first = runs[0]
    jobs = {j["id"]: j for j in first.manifest["jobs"]}
    assert first.manifest["version"] == UPSTREAM_VERSION, "no VERSION file: the package's __version__"
    for job_id in ("cpu-linux-x86_64", "cuda130-linux-x86_64", "wheel-linux-x86_64", "try", "audit"):
        assert jobs[job_id]["status"] == "built", jobs[job_id]
    assert first.wheel.name.startswith(f"bitsandbytes-{UPSTREAM_VERSION}-py3-none-manylinux_") and first.wheel.name.endswith("_x86_64.whl")
    with zipfile.ZipFile(first.wheel) as z:
        names = z.namelist()
        wheel_meta = z.read(f"bitsandbytes-{UPSTREAM_VERSION}.dist-info/WHEEL").decode()
    libraries = sorted(Path(n).name for n in names if Path(n).name.startswith("libbitsandbytes_"))
    assert libraries == ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"]
    assert any(n.startswith("bitsandbytes.libs/libgomp") for n in names), "libgomp vendored by auditwheel repair"
    assert "Tag: py3-none-manylinux_" in wheel_meta and "cp3" not in wheel_meta, "retagged from the backend's cp3XX tag"
    assert "Result: **PASS**" in (first.out / "audit.md").read_text()
    assert f"| imported bitsandbytes {UPSTREAM_VERSION} from the installed wheel; loaded libbitsandbytes_cpu.so |" in (first.out / "tries.md").read_text()


def test_the_libraries_keep_what_the_tree_asked_for(runs: tuple[Run, Run]) -> None:
    first = runs[0]
    jobs = {j["id"]: j for j in first.manifest["jobs"]}
    cpu, cuda = jobs["cpu-linux-x86_64"]["build_info"], jobs["cuda130-linux-x86_64"]["build_info"]
    assert cpu["openmp"] == {"asked": True, "found": True}, "gcc keeps OpenMP"
    assert cpu["toolchain"] is None and cuda["archs"] == ["75"]
    library = first.out / "libs" / "linux" / "x86_64" / "libbitsandbytes_cuda130.so"
    info = elf.read_elf(library)
    assert {"libcublas.so.13", "libcublasLt.so.13"} <= set(info.needed), "the CUDA library links cuBLAS"
    assert not info.runpath and not info.rpath, "no run path into the build machine's toolkit"
    assert "OpenMP" in (first.out / "audit.md").read_text()


def test_the_wheel_installs_and_runs(runs: tuple[Run, Run], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(runs[0].wheel)],
                             capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_"))}
    done = subprocess.run([str(python), "-c", "import bitsandbytes; bitsandbytes.selftest(); print('ok', bitsandbytes.__version__)"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == f"ok {UPSTREAM_VERSION}", done.stdout + done.stderr


def test_two_builds_in_two_folders_are_bit_identical(runs: tuple[Run, Run]) -> None:
    first, second = runs
    assert first.wheel.name == second.wheel.name and sha256(first.wheel) == sha256(second.wheel)
    for name in ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"):
        a, b = (run.out / "libs" / "linux" / "x86_64" / name for run in runs)
        assert sha256(a) == sha256(b), name
    assert first.manifest["jobs"] == second.manifest["jobs"]
    assert not list((first.tree / "bitsandbytes").glob("libbitsandbytes_*")), "the tree is left as it was: no library in its package folder"
