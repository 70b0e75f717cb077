"""Host compilers chosen the standard way: CC, CXX and CUDAHOSTCXX, as CMake users set them.

A real CPU build of a copy of tests/fixtures/upstream_tree (a tree built with the host's compiler) with
CXX=clang++-15 records that compiler in build-info.json; the same build with CXX=g++-12 (gcc by a
versioned name, as CXX=g++-11 names upstream's release compiler) is a different cache entry, built
again. A variable naming no program skips the job with a reason naming it. Jobs whose toolchain file
names the compilers (zig) never see the variables.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from host_helpers import BNB_CI, REPO_ROOT, host_env

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs
from bitsandbytes_ci.core.tree import read_tree
from bitsandbytes_ci.host import artifact_cache
from bitsandbytes_ci.host.toolchains import Runnable, Skip, decide, detect_host, step_environment

UPSTREAM = REPO_ROOT / "tests" / "fixtures" / "upstream_tree"
CLANG, GCC = "clang++-15", "g++-12"
LIBRARY_INFO = Path("linux/x86_64/libbitsandbytes_cpu.so.build-info.json")


def build_cpu(tree: Path, out: Path, cache: Path, **compilers: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in host_env().items() if k not in ("CC", "CXX", "CUDAHOSTCXX")}, **compilers, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([str(BNB_CI), "build-cpu", "--source", str(tree), "--out", str(out), "--platform", "linux-x86_64"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1200, check=False)  # fmt: skip


@pytest.mark.skipif(not (shutil.which(CLANG) and shutil.which(GCC)), reason=f"needs {CLANG} and {GCC} (apt-get install clang-15 g++-12)")
def test_cxx_selects_the_compiler_of_a_cpu_build_and_its_cache_entry(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(UPSTREAM, tree)
    clang = build_cpu(tree, tmp_path / "out-clang", tmp_path / "cache", CXX=CLANG)
    assert clang.returncode == 0, clang.stdout[-4000:] + clang.stderr[-2000:]
    info = json.loads((tmp_path / "out-clang" / LIBRARY_INFO).read_text())
    assert info["compilers"]["CXX"]["id"] == "Clang" and info["compilers"]["CXX"]["version"].startswith("15.")
    assert info["compiler_variables"] == {"CXX": shutil.which(CLANG)}, "the variable, as the program it named"

    gcc = build_cpu(tree, tmp_path / "out-gcc", tmp_path / "cache", CXX=GCC, CC="gcc-12")
    assert gcc.returncode == 0, gcc.stdout[-4000:] + gcc.stderr[-2000:]
    assert "[cpu-linux-x86_64] cached" not in gcc.stdout, "another compiler: another cache entry"
    info = json.loads((tmp_path / "out-gcc" / LIBRARY_INFO).read_text())
    assert info["compilers"]["CXX"]["id"] == "GNU" and info["compilers"]["CXX"]["version"].startswith("12.")
    assert info["compiler_variables"] == {"CC": shutil.which("gcc-12"), "CXX": shutil.which(GCC)}


@pytest.mark.skipif(not (shutil.which(CLANG) and shutil.which(GCC)), reason=f"needs {CLANG} and {GCC}")
def test_the_cache_key_of_a_host_compiled_job_follows_the_selected_compilers() -> None:
    [job] = _jobs(UPSTREAM, backends=("cpu",), platforms=("linux-x86_64",)).values()

    def key(**compilers: str) -> str:
        env = {**{k: v for k, v in host_env().items() if k not in ("CC", "CXX", "CUDAHOSTCXX")}, **compilers}
        decision = _decisions(env, {job.id: job})[job.id]
        assert isinstance(decision, Runnable), decision
        host = detect_host(env, python=sys.executable, repo=REPO_ROOT, platform="linux-x86_64")
        return job.input_digest(UPSTREAM, toolkit=artifact_cache.host_toolkit(decision.toolchain, decision.changes, cxx=host.cxx, cmake=host.cmake))

    keys = [key(CXX=CLANG), key(CXX=GCC), key(CXX=GCC, CC="gcc-12"), key(CXX=GCC, CC="gcc-12", CUDAHOSTCXX=CLANG)]
    assert len(set(keys[:3])) == 3, "CXX and CC are in the key"
    assert keys[2] == keys[3], "a CPU job does not read CUDAHOSTCXX"
    assert keys[0] == key(CXX=CLANG), "the same selection: the same key"


def _jobs(tree: Path, **selection: tuple[str, ...]) -> dict:
    return {job.id: job for job in plan_jobs(load_matrix(), Selection(**selection), read_tree(tree))}


def _decisions(env: dict[str, str], jobs: dict) -> dict:
    host = detect_host(env, python=sys.executable, repo=REPO_ROOT, platform="linux-x86_64")
    base = step_environment(env, host, pythonpath=REPO_ROOT / "pipeline" / "src", source_date_epoch="0")
    return {job_id: decide(job, host, base) for job_id, job in jobs.items()}


def test_a_compiler_variable_naming_no_program_skips_the_job_with_the_value() -> None:
    jobs = _jobs(UPSTREAM, backends=("cpu",), platforms=("linux-x86_64",))
    decision = _decisions({**host_env(), "CXX": "g++-99"}, jobs)["cpu-linux-x86_64"]
    assert isinstance(decision, Skip)
    assert "CXX='g++-99' names no program on PATH" in decision.reason and "a compiler's name on PATH or its path" in decision.reason


@pytest.mark.skipif(not shutil.which(GCC), reason=f"needs {GCC}")
def test_cudahostcxx_reaches_cuda_jobs_and_no_variable_reaches_zig_jobs() -> None:
    env = {**host_env(), "CXX": GCC, "CUDAHOSTCXX": GCC, "CC": "gcc-12"}
    upstream = _decisions(env, _jobs(UPSTREAM, backends=("cpu", "cuda"), platforms=("linux-x86_64",), versions=("13.0",)))
    cuda = upstream["cuda130-linux-x86_64"]
    if isinstance(cuda, Runnable):  # a CUDA 13.0 with cuBLAS on this host
        assert {cuda.env.get(v) for v in ("CUDAHOSTCXX", "CXX")} == {shutil.which(GCC)} and cuda.changes["CUDAHOSTCXX"] == shutil.which(GCC)
        assert f"CUDAHOSTCXX={GCC}" in cuda.toolchain, "named with its version in the toolchain line: the job's cache key"
    cpu = upstream["cpu-linux-x86_64"]
    assert isinstance(cpu, Runnable) and cpu.changes == {"CC": shutil.which("gcc-12"), "CXX": shutil.which(GCC)}
    assert f"CC=gcc-12 ({shutil.which('gcc-12')}: gcc" in cpu.toolchain and f"CXX={GCC} ({shutil.which(GCC)}: g++" in cpu.toolchain
    ours = _decisions(env, _jobs(REPO_ROOT, backends=("cpu",), platforms=("linux-x86_64",)))["cpu-linux-x86_64"]
    assert isinstance(ours, Runnable) and "zig" in ours.toolchain
    assert not {"CC", "CXX", "CUDAHOSTCXX"} & set(ours.env), "zig's toolchain file names the compilers"
