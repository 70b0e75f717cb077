"""Trees of three eras of bitsandbytes' history, planned and built for what their CMake can build.

tests/fixtures/upstream_0_45 (COMPUTE_BACKEND cpu/cuda/mps, CUDA below 13, setup.py packs prebuilt
libraries), upstream_0_47 (adds hip; setup.py always runs CMake) and upstream_tree (HEAD: adds xpu,
CUDA 13, BNB_SKIP_CMAKE). The plan reads each tree's CMake (core/capabilities.py): it plans only what
that CMake can build, lists what it dropped and why, and gives a wheel job the CMake sources when the
tree's setup.py runs CMake itself. A failed step shows its failing line, not the log's last lines.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from host_helpers import BNB_CI, host_env

from bitsandbytes_ci.core.capabilities import read_capabilities
from bitsandbytes_ci.core.errors import SelectionError
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, dropped_jobs, plan_jobs, plan_wheels
from bitsandbytes_ci.core.results import failure_excerpt
from bitsandbytes_ci.core.tree import read_tree
from bitsandbytes_ci.host import cli
from bnb_build import elf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LIMIT_13 = 'VERSION_GREATER_EQUAL "13.0"'
ERA_045, ERA_047, HEAD = FIXTURES / "upstream_0_45", FIXTURES / "upstream_0_47", FIXTURES / "upstream_tree"


def ids(jobs) -> set[str]:
    return {job.id for job in jobs}


# ---- what each tree's CMake can build --------------------------------------------------------------


def test_each_era_says_what_its_cmake_builds() -> None:
    old, mid, head = (read_tree(t).capabilities for t in (ERA_045, ERA_047, HEAD))
    assert old.backends == ("cpu", "cuda", "mps") and mid.backends == ("cpu", "cuda", "hip", "mps")
    assert head.backends == ("cpu", "cuda", "hip", "mps", "xpu")
    assert old.cuda_refusal("12.8.1") is None and old.cuda_refusal("10.2") is not None
    refusal = old.cuda_refusal("13.0.2")
    assert refusal is not None and refusal.message == "CUDA Version > 12 is not supported"
    assert refusal.where == f"CMakeLists.txt:{_line_of(ERA_045, LIMIT_13)}"
    assert mid.cuda_refusal("11.3.1") is not None and mid.cuda_refusal("11.4.0") is None
    assert head.cuda_refusal("13.2.0") is None and head.cuda_refusal("11.7") is not None
    assert (old.wheel_runs_cmake, mid.wheel_runs_cmake, head.wheel_runs_cmake) == (False, True, False)


def test_our_tree_declares_its_backends_through_a_variable() -> None:
    ours = read_tree(Path(__file__).resolve().parents[2]).capabilities
    assert ours.backends == ("cpu", "cuda", "hip", "xpu") and ours.cuda_limits == ()


def test_commented_out_cmake_says_nothing() -> None:
    text = (ERA_045 / "CMakeLists.txt").read_text()
    caps = read_capabilities({"CMakeLists.txt": "\n".join("# " + line for line in text.splitlines())})
    assert caps.backends is None and caps.cuda_limits == () and caps.msvc_reason() is None


def _line_of(tree: Path, needle: str) -> int:
    return next(n for n, line in enumerate((tree / "CMakeLists.txt").read_text().splitlines(), 1) if needle in line)


# ---- the plan follows them -------------------------------------------------------------------------


def test_the_plan_drops_what_an_old_cmake_cannot_build() -> None:
    matrix = load_matrix()
    everything = ids(plan_jobs(matrix))
    old = ids(plan_jobs(matrix, tree=read_tree(ERA_045)))
    assert {"cuda128-linux-x86_64", "cuda118-linux-x86_64", "cpu-linux-x86_64"} <= old
    assert not any(i.startswith(("rocm", "xpu", "cuda13")) for i in old), sorted(old)
    dropped = {d.id: d.reason for d in dropped_jobs(matrix, tree=read_tree(ERA_045))}
    assert set(dropped) | old == everything and not set(dropped) & old
    line = _line_of(ERA_045, LIMIT_13)
    assert dropped["cuda130-linux-x86_64"] == f'its CMake refuses CUDA 13.0.2 (CMakeLists.txt:{line}: "CUDA Version > 12 is not supported")'
    assert dropped["xpu2025-linux-x86_64"].startswith("its CMake knows COMPUTE_BACKEND cpu, cuda, mps (CMakeLists.txt:")
    assert dropped["rocm64-linux-x86_64"].endswith("not hip")


def test_the_plan_keeps_what_each_later_era_added() -> None:
    matrix = load_matrix()
    mid = ids(plan_jobs(matrix, tree=read_tree(ERA_047)))
    assert "rocm64-linux-x86_64" in mid and not any(i.startswith(("xpu", "cuda13")) for i in mid)
    head = ids(plan_jobs(matrix, tree=read_tree(HEAD)))
    assert {"xpu2025-linux-x86_64", "cuda130-linux-x86_64", "rocm64-linux-x86_64"} <= head
    assert dropped_jobs(matrix, tree=read_tree(HEAD)) == []


def test_selecting_only_what_the_tree_cannot_build_says_why() -> None:
    with pytest.raises(SelectionError, match=r"matches only jobs the tree cannot build: its CMake knows COMPUTE_BACKEND cpu, cuda, mps .*not xpu"):
        plan_jobs(load_matrix(), Selection(backends=("xpu",)), read_tree(ERA_045))
    with pytest.raises(SelectionError, match=r"its CMake refuses CUDA 13\.0\.2 .*CUDA Version > 12 is not supported"):
        plan_jobs(load_matrix(), Selection(backends=("cuda",), versions=("13.0",)), read_tree(ERA_047))


def test_bnb_ci_plan_lists_the_dropped_jobs() -> None:
    out = io.StringIO()
    assert cli.main_inner(["plan", "--source", str(ERA_045), "--platform", "linux-x86_64"], env={}, stdout=out) == 0
    text = out.getvalue()
    assert "not planned: 9 job(s) the tree's build cannot make:" in text
    assert "cuda132-linux-x86_64" in text.split("not planned:")[1] and "CUDA Version > 12 is not supported" in text


def test_the_wheel_job_gets_the_cmake_sources_where_setup_py_runs_cmake() -> None:
    matrix = load_matrix()
    for tree, runs_cmake in ((ERA_045, False), (ERA_047, True), (HEAD, False)):
        facts = read_tree(tree)
        [wheel] = plan_wheels(matrix, plan_jobs(matrix, Selection(backends=("cpu",), platforms=("linux-x86_64",)), facts), facts)
        assert ("CMakeLists.txt" in wheel.sources) is runs_cmake, tree.name
        assert ("csrc/**" in wheel.optional_sources) is runs_cmake, tree.name


# ---- a failed step shows its failing line ----------------------------------------------------------


def test_the_failing_lines_of_a_long_log_are_shown() -> None:
    lines = [f"-- configuring step {i}" for i in range(74)]
    lines += ["CMake Error at CMakeLists.txt:99 (message):", "  CUDA Version > 12 is not supported", "", "", "-- Configuring incomplete, errors occurred!"]
    lines += [f"  File \"x.py\", line {i}, in f" for i in range(40)]
    lines += ["subprocess.CalledProcessError: Command '['cmake']' returned non-zero exit status 1.", "error: command failed with exit code 1: cmake ..."]
    excerpt = failure_excerpt(lines)
    assert excerpt[:2] == ("CMake Error at CMakeLists.txt:99 (message):", "  CUDA Version > 12 is not supported")
    assert excerpt[-1].startswith("error: command failed") and not any(line.startswith("  File") for line in excerpt)
    assert failure_excerpt(["a", "b", "c"], limit=2) == ("b", "c"), "no failing line: the end of the log"


def test_a_failed_cmake_step_shows_its_failing_line(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(ERA_045, tree)
    cmake = tree / "CMakeLists.txt"
    text = cmake.read_text()
    cmake.write_text(text.replace('    string(APPEND BNB_OUTPUT_NAME "_cpu")\n', '    string(APPEND BNB_OUTPUT_NAME "_cpu")\n    message(FATAL_ERROR "this copy refuses to build its CPU library")\n'))
    line = _line_of(tree, "this copy refuses")
    out = tmp_path / "out"
    env = {**host_env(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([str(BNB_CI), "build-cpu", "--source", str(tree), "--out", str(out), "--platform", "linux-x86_64"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert done.returncode != 0, done.stdout
    failed = done.stdout.split("failed:")[1]
    assert f"| CMake Error at CMakeLists.txt:{line} (message):" in failed, failed
    assert "this copy refuses to build its CPU library" in failed


# ---- 0.45 and 0.47 end to end ----------------------------------------------------------------------


def build_all(tree_src: Path, root: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    tree, out = root / "tree", root / "out"
    shutil.copytree(tree_src, tree)
    env = {**host_env(), "XDG_CACHE_HOME": str(root / "cache")}
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "tree"]):
        subprocess.run(["git", *args], cwd=tree, env=env, capture_output=True, check=True)
    done = subprocess.run([str(BNB_CI), "build-all", "--source", str(tree), "--out", str(out), "--backend", "cpu", "--platform", "linux-x86_64"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip
    return done, out


@pytest.mark.parametrize(("tree", "version"), [(ERA_045, "0.45.5"), (ERA_047, "0.47.0")], ids=["0.45", "0.47"])
def test_an_older_tree_builds_into_an_audited_wheel_of_the_planned_library(tree: Path, version: str, tmp_path: Path) -> None:
    done, out = build_all(tree, tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    [wheel] = sorted((out / "wheels").glob("*.whl"))
    assert wheel.name == f"bitsandbytes-{version}-py3-none-manylinux_2_28_x86_64.whl"
    library = out / "libs" / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    with zipfile.ZipFile(wheel) as z:
        packed = z.read("bitsandbytes/libbitsandbytes_cpu.so")
        assert sorted(n for n in z.namelist() if "libbitsandbytes_" in n) == ["bitsandbytes/libbitsandbytes_cpu.so"]
    # 0.47's setup.py compiles a CPU library of its own during the wheel build: the wheel keeps the planned one
    assert packed == library.read_bytes()
    assert elf.read_elf(library).needed, "a real shared library"
    assert "Result: **PASS**" in (out / "audit.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == version and manifest["ok"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "tree", capture_output=True, text=True, check=True).stdout.strip()
    assert manifest["source"] == {"commit": head, "dirty": False}, "the commit built, and the build left the tree as it was"


# ---- the toolkit libraries an older tree links -----------------------------------------------------


def test_a_missing_cusparse_names_its_own_wheel_not_cublas() -> None:
    from bitsandbytes_ci.host.toolchains import components_hint

    assert read_tree(ERA_045).cuda_components == ("cublas", "cublasLt", "cusparse")
    hint = components_hint(["cusparse"])
    assert "nvidia-cusparse nvidia-nvjitlink" in hint and "--with-cublas" not in hint
    both = components_hint(["cublas", "cusparse"])
    assert "--with-cublas" in both and "nvidia-cusparse" in both
