"""One OpenMP runtime: a tree that names `runtime-libraries = ["libgomp.so.1"]` (torch provides it) gets
wheels without a vendored libgomp, tagged for what its own library needs, and the try checks that the
process ends with one libgomp after `import bitsandbytes` (which imports torch first, as upstream does).

The tree (tests/fixtures/torch_tree) is planned, built with CMake (gcc, OpenMP), packed by the wheel
step as the plan says and tried with the real torch 2.13.0 CPU wheel; the same tree without the key
gets libgomp vendored, and its try fails naming both copies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from bnb_build_helpers import REPO_ROOT, check_ok, require_downloads, run_step, scratch_dir, step_env

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs, plan_wheels, try_argv, try_checks
from bitsandbytes_ci.core.tree import read_tree

TREE = REPO_ROOT / "tests" / "fixtures" / "torch_tree"
MATRIX = load_matrix()
RUNTIME_KEY = 'runtime-libraries = ["libgomp.so.1"]'


def planned_wheel(work: Path, *, runtime_key: bool) -> Path:
    """The fixture (with or without its runtime-libraries key) built and packed as the plan says."""
    shutil.copytree(TREE, work / "src")
    if not runtime_key:
        pyproject = work / "src" / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace(RUNTIME_KEY, ""))
    facts = read_tree(work / "src")
    [wheel_job] = plan_wheels(MATRIX, plan_jobs(MATRIX, Selection(backends=("cpu",), platforms=("linux-x86_64",)), facts), facts)
    cmake = Path(sys.executable).parent / "cmake"
    for argv in ([str(cmake), "-S", "src", "-B", "build", "-G", "Ninja"], [str(cmake), "--build", "build"]):
        result = subprocess.run(argv, cwd=str(work), env=step_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (work / "libs" / "linux" / "x86_64").mkdir(parents=True)
    shutil.move(str(work / "src" / "bitsandbytes" / "libbitsandbytes_cpu.so"), str(work / "libs" / "linux" / "x86_64"))
    check_ok(run_step(wheel_job.wheel_argv(libs="libs", source="src", out="wheels")[3:], work))
    (wheel,) = sorted((work / "wheels").glob("*.whl"))
    return wheel


def test_a_torch_dependent_tree_ends_with_one_libgomp_and_a_vendored_copy_fails_the_try(tmp_path: Path) -> None:
    require_downloads("torch==2.13.0")
    provided = planned_wheel(scratch_dir() / "torch-tree-provided", runtime_key=True)
    vendored = planned_wheel(scratch_dir() / "torch-tree-vendored", runtime_key=False)
    with zipfile.ZipFile(provided) as z:
        assert not [n for n in z.namelist() if "libgomp" in n], "a runtime library is never vendored"
    with zipfile.ZipFile(vendored) as z:
        assert [n for n in z.namelist() if n.startswith("bitsandbytes.libs/libgomp-")]
    # The tag follows the library itself, which needs an older glibc than the vendored libgomp does.
    assert provided.name.endswith("-manylinux_2_28_x86_64.whl"), provided.name
    assert provided.name != vendored.name, vendored.name

    (tmp_path / "wheels").mkdir()
    for wheel in (provided, vendored):
        shutil.copy(wheel, tmp_path / "wheels" / wheel.name)
    planned = try_checks(MATRIX, ["linux-x86_64"], read_tree(TREE))
    # every check the plan gives but the floor (torch under QEMU takes minutes; test_cpu_floor_try covers floors)
    pairs = [planned[i : i + 2] for i in range(0, len(planned), 2) if planned[i] != "--floor"]
    argv = try_argv(script=None, checks=[word for pair in pairs for word in pair])[3:] + ["--pip-arg=--no-compile"]
    assert "--runtime-library" in argv and "libgomp.so.1" in argv
    result = run_step(argv, tmp_path)
    assert result.returncode == 8, result.stdout[-4000:] + result.stderr
    rows = {row["wheel"]: row for row in json.loads((tmp_path / "tries.json").read_text())["tries"]}
    assert rows[provided.name]["status"] == "passed", rows[provided.name]
    assert rows[provided.name]["detail"] == "imported bitsandbytes 0.1.0 from the installed wheel; loaded libbitsandbytes_cpu.so"
    assert "bnb-try: libgomp.so.1 loaded once: " in result.stdout and "/torch/lib/libgomp.so.1" in result.stdout
    failed = rows[vendored.name]
    assert failed["status"] == "failed"
    assert "libgomp.so.1 is loaded 2 times: " in failed["detail"], failed
    assert "/torch/lib/libgomp.so.1" in failed["detail"] and "/bitsandbytes.libs/libgomp-" in failed["detail"]
