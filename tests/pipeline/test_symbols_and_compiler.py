"""Release builds keep the static symbol table unless the tree asks otherwise (project.cmake), and the
compiler that builds a job is named with its version (build-info.json, `plan --here`).

Small real CMake projects built with the pipeline's project.cmake: a C++ library (the host's g++) and,
where nvcc is installed, a CUDA one.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from host_helpers import BNB_CI, host_env

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs
from bitsandbytes_ci.core.tree import DEFAULT_PACKAGE, TreeError, TreeFacts, tree_config_from_text
from bnb_build import native

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "isa"
CMAKE = str(Path(sys.executable).parent / "cmake")
NVCC = shutil.which("nvcc") or next((str(p) for p in (Path("/usr/local/cuda/bin/nvcc"),) if p.exists()), None)


def configure_and_build(root: Path, cmakelists: str, *defines: str) -> subprocess.CompletedProcess[str]:
    (root / "CMakeLists.txt").write_text(cmakelists)
    configure = [CMAKE, "-S", str(root), "-B", str(root / "build"), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PROJECT_INCLUDE={native.PROJECT_INCLUDE}", *defines]  # fmt: skip
    env = {**host_env(), "PATH": f"{Path(sys.executable).parent}:{Path(NVCC).parent if NVCC else ''}:{host_env().get('PATH', '')}"}
    done = subprocess.run(configure, capture_output=True, text=True, env=env, check=False)
    if done.returncode == 0:
        done = subprocess.run([CMAKE, "--build", str(root / "build")], capture_output=True, text=True, env=env, check=False)
    return done


def sections(library: Path) -> str:
    return subprocess.run(["readelf", "-S", "-W", str(library)], check=True, capture_output=True, text=True).stdout


def local_functions(library: Path) -> list[str]:
    out = subprocess.run(["readelf", "-s", "-W", str(library)], check=True, capture_output=True, text=True).stdout
    return [line.split()[-1] for line in out.splitlines() if " FUNC " in line and " LOCAL " in line]


CXX_PROJECT = f"cmake_minimum_required(VERSION 3.20)\nproject(t CXX)\nadd_library(lut SHARED {FIXTURES / 'lut_cache.cpp'})\n"


def test_release_builds_keep_the_symbol_table_by_default(tmp_path: Path) -> None:
    done = configure_and_build(tmp_path, CXX_PROJECT, "-DCMAKE_CXX_FLAGS=-g")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    library = tmp_path / "build" / "liblut.so"
    assert " .symtab " in sections(library) and " .debug_info " not in sections(library), "debug information only is stripped"
    assert "_GLOBAL__sub_I_lut_cache.cpp" in local_functions(library), "a static constructor keeps its name"


@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang is not installed (tests/requirements.txt pins it)")
def test_a_zig_build_keeps_the_symbol_table(tmp_path: Path) -> None:
    """zig's linker would drop the symbol table with --strip-debug: zig builds get no strip option."""
    project = f"cmake_minimum_required(VERSION 3.20)\nproject(t C)\nadd_library(zt SHARED {FIXTURES / 'zero_table.c'})\n"
    done = configure_and_build(tmp_path, project, f"-DCMAKE_TOOLCHAIN_FILE={native.CMAKE_DIR / 'zig.cmake'}", "-DBNB_ZIG_TARGET=x86_64-linux-gnu.2.17")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    library = tmp_path / "build" / "libzt.so"
    assert " .symtab " in sections(library) and "zero_table" in local_functions(library)
    assert native.compiler_info(tmp_path / "build")["C"]["program"] == "zig cc -target x86_64-linux-gnu.2.17"


def test_a_tree_asking_to_strip_all_loses_the_symbol_table(tmp_path: Path) -> None:
    done = configure_and_build(tmp_path, CXX_PROJECT, "-DBNB_PIPELINE_STRIP=all")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " .symtab " not in sections(tmp_path / "build" / "liblut.so")


def test_a_bad_strip_value_is_refused_by_name(tmp_path: Path) -> None:
    done = configure_and_build(tmp_path, CXX_PROJECT, "-DBNB_PIPELINE_STRIP=symbols")
    assert done.returncode != 0 and "BNB_PIPELINE_STRIP is 'symbols'; allowed: debug, all" in done.stderr


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_a_cuda_target_drops_its_symbol_table_where_nvcc_names_temporary_files(tmp_path: Path) -> None:
    (tmp_path / "k.cu").write_text('__global__ void k(float *x) { x[threadIdx.x] *= 2.0f; }\nextern "C" void run(float *x) { k<<<1, 32>>>(x); }\n')
    (tmp_path / "h.cpp").write_text('static int twice(int a) { return 2 * a; }\nextern "C" int host_only(int a) { return twice(a); }\n')
    project = ("cmake_minimum_required(VERSION 3.20)\nproject(t CXX CUDA)\nset(CMAKE_CUDA_ARCHITECTURES 75)\n"
               "add_library(kc SHARED k.cu)\nadd_library(hc SHARED h.cpp)\n")  # fmt: skip
    done = configure_and_build(tmp_path, project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " .symtab " not in sections(tmp_path / "build" / "libkc.so") and b"tmpxft_" not in (tmp_path / "build" / "libkc.so").read_bytes()
    assert " .symtab " in sections(tmp_path / "build" / "libhc.so"), "a target without CUDA sources keeps it"
    info = native.compiler_info(tmp_path / "build")
    assert info["CUDA"]["program"] == "nvcc" and info["CUDA"]["version"].count(".") == 2


def test_the_tree_key_reaches_the_cmake_arguments() -> None:
    matrix = load_matrix()
    for text, expected in (("", []), ('[tool.bitsandbytes-ci]\nstrip = "all"\n', ["-DBNB_PIPELINE_STRIP=all"])):
        tree = TreeFacts(tree_config_from_text(text), None, DEFAULT_PACKAGE, False, ())
        [job] = plan_jobs(matrix, Selection(backends=("cpu",), platforms=("linux-x86_64",)), tree)
        assert [a for a in job.cmake_args if a.startswith("-DBNB_PIPELINE_STRIP")] == expected
    with pytest.raises(TreeError, match=r"strip: Input should be 'debug' or 'all'"):
        tree_config_from_text('[tool.bitsandbytes-ci]\nstrip = "symbols"\n')


def test_build_info_names_the_compiler_that_ran(tmp_path: Path) -> None:
    done = configure_and_build(tmp_path, CXX_PROJECT, "-DCMAKE_CXX_COMPILER=c++")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    real = Path(shutil.which("c++") or "").resolve().name  # /usr/bin/c++ -> .../x86_64-linux-gnu-g++-12
    version = subprocess.run(["c++", "-dumpfullversion"], capture_output=True, text=True, check=True).stdout.strip()
    assert native.compiler_info(tmp_path / "build")["CXX"] == {"id": "GNU", "version": version, "program": real}


def test_plan_here_shows_the_compiler_and_its_version() -> None:
    done = subprocess.run([str(BNB_CI), "plan", "--here", "--backend", "cpu", "--platform", "linux-x86_64"],
                          capture_output=True, text=True, env=host_env(), timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.strip().startswith("cpu-linux-x86_64 ") and "yes (" in line]
    clang = subprocess.run([sys.executable, "-m", "ziglang", "c++", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    assert line.rstrip().endswith(f"; {clang})"), line
