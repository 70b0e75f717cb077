"""Windows CPU libraries are built the way the tree's CMake expects.

zig (MinGW-style clang) builds a tree that builds cleanly with it (ours). A tree whose CMake sets
CMAKE_WINDOWS_EXPORT_ALL_SYMBOLS (MinGW then exports CRT symbols such as _CRT_INIT and atexit, which
the audit refuses), branches on NOT MSVC (clang would take the gcc branch) or asks for OpenMP (zig has
none; MSVC links VCOMP140.DLL) gets MSVC on a Windows runner, as its GPU libraries do; the plan says
which and why. No Windows runner or MSVC can run here: these tests check the plan and the host's
verdict, not an MSVC build.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, expectations, plan_jobs
from bitsandbytes_ci.core.tree import read_tree, tree_from_texts
from bitsandbytes_ci.host import cli

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
WINDOWS = Selection(backends=("cpu",), platforms=("windows-x64", "windows-arm64"))


def windows_jobs(tree: Path) -> dict:
    return {job.platform: job for job in plan_jobs(load_matrix(), WINDOWS, read_tree(tree))}


def line_of(tree: Path, needle: str) -> int:
    return next(n for n, line in enumerate((tree / "CMakeLists.txt").read_text().splitlines(), 1) if needle in line)


def test_upstream_shaped_trees_get_msvc_on_a_windows_runner() -> None:
    for name in ("upstream_0_45", "upstream_0_47", "upstream_tree"):
        tree = FIXTURES / name
        for platform, job in windows_jobs(tree).items():
            assert (job.runner, job.toolchain, job.toolchain_file, job.image) == ("native-runner", "msvc", None, None), (name, platform)
            assert not any(arg.startswith("-DBNB_ZIG_TARGET") for arg in job.cmake_args)
            export_line = line_of(tree, "CMAKE_WINDOWS_EXPORT_ALL_SYMBOLS")
            assert f"CMAKE_WINDOWS_EXPORT_ALL_SYMBOLS, which with MinGW exports the C runtime's symbols (CMakeLists.txt:{export_line})" in job.toolchain_reason


def test_head_names_every_reason_and_keeps_openmp() -> None:
    tree = FIXTURES / "upstream_tree"
    job = windows_jobs(tree)["windows-x64"]
    assert f"NOT MSVC, a branch written for gcc that clang would take (CMakeLists.txt:{line_of(tree, 'AND NOT MSVC')})" in job.toolchain_reason
    assert f"asks for OpenMP, which MSVC provides (VCOMP140.DLL) and zig does not (CMakeLists.txt:{line_of(tree, 'find_package(OpenMP)')})" in job.toolchain_reason
    expect = expectations(load_matrix(), [job], read_tree(tree))
    assert expect["wheels"]["windows-x64"]["libraries"]["libbitsandbytes_cpu.dll"]["openmp"] is True, "the audit expects the OpenMP runtime"


def test_our_tree_keeps_zig() -> None:
    for job in windows_jobs(REPO).values():
        assert (job.runner, job.toolchain, job.toolchain_file) == ("cross", "zig", "zig.cmake")
        assert job.toolchain_reason == "zig: the tree's CMake builds with MinGW-style clang as it is"


def test_a_tree_may_still_ask_for_zig(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "upstream_0_45", tree)
    (tree / "pyproject.toml").write_text((tree / "pyproject.toml").read_text() + '\n[tool.bitsandbytes-ci]\ncpu-toolchain = "zig"\n')
    job = windows_jobs(tree)["windows-x64"]
    assert (job.runner, job.toolchain) == ("cross", "zig") and job.toolchain_reason == "zig: the tree asks for it (cpu-toolchain)"


def test_openmp_alone_is_enough() -> None:
    cmake = "set_property(CACHE COMPUTE_BACKEND PROPERTY STRINGS cpu)\nfind_package(OpenMP)\n"
    facts = tree_from_texts({"CMakeLists.txt": cmake})
    [job] = [j for j in plan_jobs(load_matrix(), WINDOWS, facts) if j.platform == "windows-x64"]
    assert job.toolchain == "msvc" and job.toolchain_reason.endswith("zig does not (CMakeLists.txt:2)")
    guarded = tree_from_texts({"CMakeLists.txt": "if(MSVC)\n  set(X /W3)\nelse()\n  set(X -Wall)\nendif()\n"})
    [zig] = [j for j in plan_jobs(load_matrix(), WINDOWS, guarded) if j.platform == "windows-x64"]
    assert zig.toolchain == "zig", "an if(MSVC)/else() that clang handles is no reason"


def test_plan_says_which_and_why_and_this_host_cannot_build_it() -> None:
    out = io.StringIO()
    args = ["plan", "--source", str(FIXTURES / "upstream_0_45"), "--backend", "cpu", "--platform", "windows-x64", "--here"]
    assert cli.main_inner(args, env={}, stdout=out) == 0
    text = out.getvalue()
    assert "toolchains chosen for the tree:" in text and "cpu-windows-x64  MSVC on a Windows runner, as the tree's CMake expects" in text
    assert "cpu-windows-x64  no: native-runner job for windows-x64: needs a Windows runner" in text


# ---- the audit of such a library ---------------------------------------------------------------------
# MSVC cannot run here: zig builds a DLL importing vcomp140.dll (MSVC's OpenMP runtime; a stand-in
# vcomp140.dll gives it the import library), the import an MSVC build of such a tree has.


def msvc_openmp_wheel(tmp_path: Path) -> Path:
    build = tmp_path / "build"
    build.mkdir()
    (build / "vcomp.c").write_text("int omp_get_max_threads(void) { return 1; }\n")
    (build / "lib.c").write_text("int omp_get_max_threads(void);\n__declspec(dllexport) int cquantize_blockwise_cpu_fp32(void) { return omp_get_max_threads(); }\n")
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-windows-gnu", "-shared"]
    subprocess.run([*zig, "-o", "vcomp140.dll", "vcomp.c"], cwd=build, check=True, capture_output=True)
    subprocess.run([*zig, "-o", "libbitsandbytes_cpu.dll", "lib.c", "vcomp.lib"], cwd=build, check=True, capture_output=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "bitsandbytes-0.50.2.dev0-py3-none-win_amd64.whl", "w") as z:
        z.writestr("bitsandbytes/libbitsandbytes_cpu.dll", (build / "libbitsandbytes_cpu.dll").read_bytes())
    return wheels


def audit_with(tmp_path: Path, openmp: bool) -> subprocess.CompletedProcess[str]:
    expect = {"wheels": {"windows-x64": {"plat_tag": "win_amd64", "libraries": {"libbitsandbytes_cpu.dll": {"backend": "cpu", "archs": [], "openmp": openmp}}}},
              "exemptions": {}, "symbol_parity": False}  # fmt: skip
    (tmp_path / "expect.json").write_text(json.dumps(expect))
    env = {**os.environ, "PYTHONPATH": str(REPO / "pipeline" / "src")}
    return subprocess.run([sys.executable, "-m", "bnb_build", "audit", "--wheels", "wheels", "--expect", "expect.json", "--report", "audit.md"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


def test_the_audit_accepts_msvcs_openmp_runtime_where_the_tree_asks_for_openmp(tmp_path: Path) -> None:
    msvc_openmp_wheel(tmp_path)
    done = audit_with(tmp_path, openmp=True)
    report = (tmp_path / "audit.md").read_text()
    assert done.returncode == 0, report
    assert "libbitsandbytes_cpu.dll needs vcomp140.dll, MSVC's OpenMP runtime" in report
    assert "libbitsandbytes_cpu.dll: OpenMP: vcomp140.dll" in report


def test_the_audit_refuses_vcomp_where_the_tree_asks_for_no_openmp(tmp_path: Path) -> None:
    msvc_openmp_wheel(tmp_path)
    done = audit_with(tmp_path, openmp=False)
    assert done.returncode != 0 and "needs vcomp140.dll, which windows-x64 does not have" in (tmp_path / "audit.md").read_text()


def test_a_windows_cpu_row_of_the_ci_matrix_installs_no_toolkit() -> None:
    from bitsandbytes_ci.core.shards import plan_native_rows

    [row] = plan_native_rows(load_matrix(), [windows_jobs(FIXTURES / "upstream_0_47")["windows-x64"]])
    assert (row.id, row.runs_on, row.install, row.build) == ("cpu-windows-x64", "windows-latest", "", "bnb-ci build-cpu --platform windows-x64 --out libs")
