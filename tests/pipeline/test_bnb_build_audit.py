"""The audit step (bnb_build.audit): clean wheels pass; every violation fails the step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

import pytest
from bnb_build_helpers import NVCC, REPO_ROOT, WHEEL_PATTERNS, build_threads_library, cpu_wheel, run_step

from bnb_build import inputs, wheel
from bnb_build.errors import AuditFailed, InputError, UsageError
from bnb_build.audit import parse_expectations

CPU_LIB = {"libbitsandbytes_cpu.so": {"backend": "cpu", "archs": []}}


def write_expect(work: Path, libraries: dict, tag: str = "manylinux_2_28_x86_64", exemptions: Optional[dict] = None) -> None:
    raw: dict = {"wheels": {"linux-x86_64": {"plat_tag": tag, "libraries": libraries}}}
    if exemptions:
        raw["exemptions"] = exemptions
    (work / "expect.json").write_text(json.dumps(raw))


def audit(work: Path):
    return run_step(["audit", "--wheels", "wheels", "--expect", "expect.json", "--report", "audit.md"], work)


def wheels_dir(work: Path, *wheels: Path) -> Path:
    (work / "wheels").mkdir(parents=True)
    for w in wheels:
        shutil.copy(w, work / "wheels" / w.name)
    return work


def synthetic_wheel(folder: Path, tag: str, files: dict) -> Path:
    path = folder / f"bitsandbytes-0.1.0-py3-none-{tag}.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_a_clean_wheel_passes(tmp_path: Path) -> None:
    work = wheels_dir(tmp_path, cpu_wheel())
    write_expect(work, CPU_LIB)
    result = audit(work)
    assert result.returncode == 0, result.stderr
    report = (work / "audit.md").read_text()
    assert "Result: **PASS** (0 violations)" in report
    assert f"| {cpu_wheel().name} | linux-x86_64 | manylinux_2_28_x86_64 | PASS |" in report
    assert "| bitsandbytes/libbitsandbytes_cpu.so | cpu |" in report
    assert "GLIBCXX_3.4." in report and "CXXABI_1.3." in report
    if shutil.which("auditwheel", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])):
        assert "auditwheel show:" in report and "is consistent" in report
    first = (work / "audit.md").read_bytes()
    assert audit(work).returncode == 0
    assert (work / "audit.md").read_bytes() == first, "the report is deterministic"


def test_a_missing_library_is_a_violation(tmp_path: Path) -> None:
    work = wheels_dir(tmp_path, cpu_wheel())
    write_expect(work, {**CPU_LIB, "libbitsandbytes_cuda130.so": {"backend": "cuda", "archs": ["75"]}})
    result = audit(work)
    assert result.returncode == AuditFailed.exit_code
    assert "expected library libbitsandbytes_cuda130.so is missing" in result.stderr
    report = (work / "audit.md").read_text()
    assert "Result: **FAIL** (1 violation)" in report
    assert "- violation: expected library libbitsandbytes_cuda130.so is missing" in report


def backend_wheel(tmp_path: Path, tag: str) -> Path:
    """A wheel built with the project's backend directly, tagged ``tag``, holding a GLIBC_2.34 library."""
    src = tmp_path / "wsrc"
    inputs.copy_subset(REPO_ROOT, WHEEL_PATTERNS, src)
    build_threads_library(src / "bitsandbytes" / "libbitsandbytes_cpu.so")
    dist = tmp_path / "dist"
    dist.mkdir()
    subprocess.run(
        wheel.backend_command(sys.executable, wheel.backend_name(src), dist, tag),
        cwd=str(src), env=dict(os.environ, BNB_SKIP_CMAKE="1"), check=True, capture_output=True,
    )
    (built,) = dist.glob("*.whl")
    return built


def test_a_library_needing_a_newer_glibc_than_the_tag_is_a_violation(tmp_path: Path) -> None:
    if not (REPO_ROOT / "pyproject.toml").exists():
        pytest.skip("pyproject.toml is not in this checkout yet")
    built = backend_wheel(tmp_path / "b", "manylinux_2_28_x86_64")
    work = wheels_dir(tmp_path / "w", built)
    write_expect(work, CPU_LIB)
    result = audit(work)
    assert result.returncode == AuditFailed.exit_code
    assert "libbitsandbytes_cpu.so requires GLIBC_2.34, newer than glibc 2.28 of manylinux_2_28_x86_64" in result.stderr

    write_expect(work, CPU_LIB, exemptions={"libbitsandbytes_cpu.so": "built on the host for tests"})
    exempted = audit(work)
    assert exempted.returncode == 0, exempted.stderr
    report = (work / "audit.md").read_text()
    assert "(exempted: built on the host for tests)" in report
    assert "## Exemptions" in report


@pytest.mark.skipif(not NVCC.exists(), reason="the machine's nvcc is not installed")
def test_missing_sass_arch_is_a_violation(tmp_path: Path) -> None:
    (tmp_path / "k.cu").write_text('extern "C" __global__ void k(float *x) { x[0] = 1.0f; }\n')
    lib = tmp_path / "lib.so"
    subprocess.run([str(NVCC), "-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_75,code=sm_75", "-o",
                    str(lib), str(tmp_path / "k.cu")], check=True)
    synthetic_wheel(tmp_path / "wheels", "manylinux_2_34_x86_64",
                    {"bitsandbytes/libbitsandbytes_cuda130.so": lib.read_bytes()})
    write_expect(tmp_path, {"libbitsandbytes_cuda130.so": {"backend": "cuda", "archs": ["75", "90"]}},
                 tag="manylinux_2_34_x86_64")
    result = audit(tmp_path)
    assert result.returncode == AuditFailed.exit_code
    assert "libbitsandbytes_cuda130.so has no SASS for sm_90 (found: sm_75)" in result.stderr


def test_wheel_set_and_tag_violations(tmp_path: Path) -> None:
    lib = cpu_wheel()
    with zipfile.ZipFile(lib) as z:
        data = z.read("bitsandbytes/libbitsandbytes_cpu.so")
    files = {"bitsandbytes/libbitsandbytes_cpu.so": data, "bitsandbytes/extra.so": data}
    synthetic_wheel(tmp_path / "wheels", "manylinux_2_34_x86_64", files)
    synthetic_wheel(tmp_path / "wheels", "linux_x86_64", {"bitsandbytes/libbitsandbytes_cpu.so": data})
    synthetic_wheel(tmp_path / "wheels", "win_amd64", {"bitsandbytes/libbitsandbytes_cpu.dll": b"MZ"})
    raw = {"wheels": {"linux-x86_64": {"plat_tag": "manylinux_2_28_x86_64", "libraries": CPU_LIB},
                      "macos-arm64": {"plat_tag": "macosx_14_0_arm64", "libraries": {}}}}
    (tmp_path / "expect.json").write_text(json.dumps(raw))
    result = audit(tmp_path)
    assert result.returncode == AuditFailed.exit_code
    for problem in (
        "2 wheels for linux-x86_64, expected exactly one",
        "no wheel for macos-arm64",
        "platform tag is manylinux_2_34_x86_64, expected manylinux_2_28_x86_64",
        "unexpected native file bitsandbytes/extra.so",
        "no wheel is expected for windows-x64",
    ):
        assert problem in result.stderr, problem


def test_an_empty_wheels_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    write_expect(tmp_path, CPU_LIB)
    result = audit(tmp_path)
    assert result.returncode == InputError.exit_code
    assert "no wheels (*.whl) in wheels" in result.stderr
    assert not (tmp_path / "audit.md").exists()


def test_expect_json_is_checked() -> None:
    with pytest.raises(UsageError, match="unknown platform 'linux-amd64'"):
        parse_expectations({"wheels": {"linux-amd64": {"plat_tag": "manylinux_2_28_x86_64", "libraries": {}}}})
    with pytest.raises(UsageError, match="is for linux-x86_64, not for linux-aarch64"):
        parse_expectations({"wheels": {"linux-aarch64": {"plat_tag": "manylinux_2_28_x86_64", "libraries": {}}}})
    with pytest.raises(UsageError, match="unknown keys"):
        parse_expectations({"wheels": {}, "exemption": {}})
