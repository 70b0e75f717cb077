"""The try step (bnb_build.try_wheels): each wheel installed into a new virtualenv and a script run
with it; what this machine cannot run is reported as not tried, never as passed."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from bnb_build_helpers import REPO_ROOT, cpu_wheel, run_step, step_env

from bnb_build.errors import UsageError
from bnb_build.try_wheels import how_to_try, machine_platform, requirements_of, top_level_package, wheel_platform

SMOKE = REPO_ROOT / "tests" / "wheel_smoke.py"


def try_dir(tmp_path: Path, *wheels: Path) -> Path:
    (tmp_path / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy(wheel, tmp_path / "wheels" / wheel.name)
    return tmp_path


def synthetic(folder: Path, tag: str) -> Path:
    """A wheel for a platform this machine cannot run (its contents never execute)."""
    path = folder / f"bitsandbytes-0.1.0-py3-none-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("bitsandbytes/__init__.py", "")
        z.writestr("bitsandbytes-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.1.0\n")
    return path


def test_the_real_wheel_passes_the_trees_smoke_script_in_a_fresh_venv(tmp_path: Path) -> None:
    """tests/wheel_smoke.py also checks that the library it loaded is the one installed from the wheel."""
    work = try_dir(tmp_path, cpu_wheel())
    result = run_step(["try-wheels", "--wheels", "wheels", "--report", "tries.md", "--script", str(SMOKE)], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    report = (work / "tries.md").read_text()
    assert "Result: **PASS**: 1 tried (0 failed)" in report
    assert f"| {cpu_wheel().name} | linux-x86_64 | plain | venv | passed |" in report
    assert "| bitsandbytes 0.1.0: round trips equal the reference" in report
    rows = json.loads((work / "tries.json").read_text())["tries"]
    assert [(r["platform"], r["how"], r["status"]) for r in rows] == [("linux-x86_64", "venv", "passed")]


def test_a_failing_script_fails_the_step_and_the_report_shows_its_output(tmp_path: Path) -> None:
    work = try_dir(tmp_path, cpu_wheel())
    (work / "broken.py").write_text("import bitsandbytes\nraise SystemExit('round trip differs: code 131 != 130')\n")
    result = run_step(["try-wheels", "--wheels", "wheels", "--report", "tries.md", "--script", "broken.py"], work)
    assert result.returncode == 8, result.stdout[-2000:]
    assert "failed their try" in result.stderr
    report = (work / "tries.md").read_text()
    assert "Result: **FAIL**" in report and "| plain | venv | failed |" in report
    assert "| the script exited with 1: round trip differs: code 131 != 130 |" in report
    assert "round trip differs: code 131 != 130" in report


def test_without_a_script_the_package_is_imported_and_a_native_library_of_it_must_be_loaded(tmp_path: Path) -> None:
    """Our package loads its library on first use: importing it alone maps none, so that try fails."""
    work = try_dir(tmp_path, cpu_wheel())
    result = run_step(["try-wheels", "--wheels", "wheels", "--report", "tries.md"], work)
    assert result.returncode == 8, result.stdout[-2000:]
    report = (work / "tries.md").read_text()
    assert "| plain | venv | failed |" in report
    assert "imported bitsandbytes 0.1.0, but no native library of it was loaded: expected libbitsandbytes_cpu.so" in report


def test_wheels_this_machine_cannot_run_are_listed_as_not_tried(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    for tag in ("macosx_14_0_arm64", "win_arm64", "manylinux_2_28_aarch64"):
        synthetic(tmp_path / "wheels", tag)
    env = step_env(PATH="/usr/bin:/bin", BNB_WINE="")
    result = run_step(["try-wheels", "--wheels", "wheels", "--report", "tries.md"], tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "tries.md").read_text()
    assert "Result: **NOTHING TRIED**: 0 tried (0 failed), 3 not tried." in report
    assert "| macos-arm64 | plain | - | not tried | macOS: nothing runs Mach-O code on Linux" in report
    assert "| windows-arm64 | plain | - | not tried | windows-arm64: needs a Windows machine of that architecture" in report
    assert "| linux-aarch64 | plain | - | not tried | linux-aarch64 wheel on a linux-x86_64 machine" in report


def test_how_each_platform_is_tried() -> None:
    here = "linux-x86_64"
    assert how_to_try("linux-x86_64", here=here, wine="/usr/bin/wine64", wine_python=None) == ("venv", "")
    assert how_to_try("windows-x64", here=here, wine="/usr/bin/wine64", wine_python=Path("/w")) == ("wine", "")
    assert how_to_try("windows-x64", here=here, wine=None, wine_python=Path("/w"))[1].startswith("wine is not installed")
    assert "--wine-python" in how_to_try("windows-x64", here=here, wine="/usr/bin/wine64", wine_python=None)[1]
    assert how_to_try("linux-aarch64", here="linux-aarch64", wine=None, wine_python=None) == ("venv", "")
    assert machine_platform("Linux", "aarch64") == "linux-aarch64" and machine_platform("Linux", "x86_64") == "linux-x86_64"


def test_wheel_names_and_metadata() -> None:
    assert wheel_platform("bitsandbytes-1.0-py3-none-manylinux_2_28_x86_64.whl") == "linux-x86_64"
    assert wheel_platform("bitsandbytes-1.0-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl") == "linux-aarch64"
    with pytest.raises(UsageError, match="is not a wheel file name"):
        wheel_platform("notes.txt")
    with pytest.raises(UsageError, match="unknown wheel platform tag 'riscv'"):
        wheel_platform("x-1.0-py3-none-riscv.whl")
    assert top_level_package(cpu_wheel()) == "bitsandbytes"
    assert requirements_of(cpu_wheel()) == ["numpy"]


@pytest.mark.parametrize(("args", "message"), [
    (["--wheels", "nothing-here"], "no wheels (*.whl) in nothing-here"),
    (["--wheels", "wheels", "--script", "missing.py"], "--script missing.py does not exist"),
    (["--wheels", "wheels", "--wine-python", "empty"], "--wine-python empty holds no python.exe"),
])  # fmt: skip
def test_bad_input_is_a_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "wheels").mkdir()
    synthetic(tmp_path / "wheels", "win_arm64")
    (tmp_path / "empty").mkdir()
    result = run_step(["try-wheels", *args, "--report", "tries.md"], tmp_path)
    assert result.returncode == 3 and message in result.stderr, result.stderr
    assert not (tmp_path / "tries.md").exists(), "nothing half-written"
