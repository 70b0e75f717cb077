"""Tries at the CPU floor (bnb_build.try_wheels --floor): each Linux wheel runs plain and again under
qemu-x86_64-static with the CPU model of its floor; a crash names its signal and where it happened.

The fixture tree tests/fixtures/avx512_tree is shaped like upstream bitsandbytes: its CPU target is
compiled with -mavx512f as a whole, so gcc uses AVX-512 in the static constructor of g_lut_cache, and
its package falls back silently to a stand-in when the library does not load. Everything here is real:
CMake builds, the wheel step, virtualenvs, QEMU (Debian's qemu-user-static) and gdb.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest
from bnb_build_helpers import NVCC, REPO_ROOT, check_ok, cpu_wheel, run_step, scratch_dir, step_env, wheel_args

from bnb_build import cpu_levels
from bnb_build.try_wheels import core_pc
from host_helpers import run_bnb_ci

TREE = REPO_ROOT / "tests" / "fixtures" / "avx512_tree"
SMOKE = REPO_ROOT / "tests" / "wheel_smoke.py"
QEMU = shutil.which(cpu_levels.QEMU_BINARY["x86_64"])
HOST_HAS_AVX512 = "avx512bw" in Path("/proc/cpuinfo").read_text()

pytestmark = pytest.mark.skipif(QEMU is None or shutil.which("gdb") is None, reason="needs qemu-user-static and gdb (apt-get install qemu-user-static gdb)")

_WHEELS: Dict[str, Path] = {}


def fixture_wheel(name: str, *cmake_args: str) -> Path:
    """The fixture tree built with CMake (`cmake_args`) and packed by the wheel step (made once per name)."""
    if name not in _WHEELS:
        work = scratch_dir() / f"floor-{name}"
        shutil.copytree(TREE, work / "src")
        cmake = Path(sys.executable).parent / "cmake"
        for argv in ([str(cmake), "-S", "src", "-B", "build", "-G", "Ninja", *cmake_args], [str(cmake), "--build", "build"]):
            result = subprocess.run(argv, cwd=str(work), env=step_env(), capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        libs = work / "libs" / "linux" / "x86_64"
        libs.mkdir(parents=True)
        for library in (work / "src" / "bitsandbytes").glob("libbitsandbytes_*.so"):
            shutil.move(str(library), str(libs / library.name))
        check_ok(run_step(wheel_args("manylinux_2_28_x86_64", source="src"), work))
        (_WHEELS[name],) = sorted((work / "wheels").glob("*.whl"))
    return _WHEELS[name]


def try_step(tmp_path: Path, wheel: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel, tmp_path / "wheels" / wheel.name)
    return run_step(["try-wheels", "--wheels", "wheels", "--report", "tries.md", *args], tmp_path)


def rows(work: Path) -> List[dict]:
    return json.loads((work / "tries.json").read_text())["tries"]


def by_mode(work: Path) -> Dict[str, dict]:
    return {row["mode"]: row for row in rows(work)}


def instruction_at(library: Path, offset: int) -> str:
    """objdump's disassembly of the one instruction at `offset` of `library`."""
    out = subprocess.run(["objdump", "-d", "--start-address", hex(offset), "--stop-address", hex(offset + 16), str(library)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return next(line for line in out.splitlines() if line.strip().startswith(f"{offset:x}:"))


def test_an_avx512_static_constructor_dies_at_the_floor_and_the_try_names_the_instruction(tmp_path: Path) -> None:
    wheel = fixture_wheel("avx512")
    result = try_step(tmp_path, wheel, "--floor", "linux-x86_64=x86-64-v3", "--expect-library", "linux-x86_64=libbitsandbytes_cpu.so")
    assert result.returncode == 8, result.stdout[-3000:] + result.stderr
    modes = by_mode(tmp_path)
    floor = modes["floor x86-64-v3"]
    assert floor["status"] == "failed" and floor["how"] == "qemu-x86_64-static -cpu Haswell-v4", floor
    match = re.search(r"SIGILL: illegal instruction at libbitsandbytes_cpu\.so\+(0x[0-9a-f]+)", floor["detail"])
    assert match, floor["detail"]
    # The offset is the faulting instruction: an AVX-512 one (zmm registers or EVEX masking) in the library.
    with zipfile.ZipFile(wheel) as z:
        library = tmp_path / "libbitsandbytes_cpu.so"
        library.write_bytes(z.read("bitsandbytes/libbitsandbytes_cpu.so"))
    instruction = instruction_at(library, int(match.group(1), 16))
    assert re.search(r"zmm|%k[0-7]|\{", instruction), instruction
    # ... and the detail names it, its extension and that it runs at load time (bnb_build.isa_report).
    mnemonic = instruction.split("\t")[2].split()[0]
    assert f"{match.group(0)} in _GLOBAL__sub_I_cpu_ops.cpp: {mnemonic} (AVX-512" in floor["detail"], floor["detail"]
    assert "a static constructor; floor x86-64-v3 has no AVX-512" in floor["detail"], floor["detail"]
    # Plain, the library loads wherever the host has AVX-512, and dies the same way where it has not.
    plain = modes["plain"]
    if HOST_HAS_AVX512:
        assert plain["status"] == "passed" and "loaded libbitsandbytes_cpu.so" in plain["detail"], plain
    else:
        assert "SIGILL" in plain["detail"], plain
    report = (tmp_path / "tries.md").read_text()
    assert "| floor x86-64-v3 | qemu-x86_64-static -cpu Haswell-v4 | failed |" in report
    assert f"SIGILL: illegal instruction at libbitsandbytes_cpu.so+{match.group(1)}" in report
    # The console ends with the verdict, not with pip's log.
    assert f"FAILED {wheel.name} (floor x86-64-v3, qemu-x86_64-static -cpu Haswell-v4): the script was killed: SIGILL" in result.stdout
    assert "Successfully installed" not in result.stdout and "Processing " not in result.stdout
    assert "TCG doesn't support requested feature" not in report


def test_the_same_tree_without_avx512_flags_passes_plain_and_at_the_floor(tmp_path: Path) -> None:
    wheel = fixture_wheel("portable", "-DBNB_AVX512_TARGET=OFF")
    result = try_step(tmp_path, wheel, "--floor", "linux-x86_64=x86-64-v3", "--expect-library", "linux-x86_64=libbitsandbytes_cpu.so")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert [(r["mode"], r["status"]) for r in rows(tmp_path)] == [("plain", "passed"), ("floor x86-64-v3", "passed")]
    for row in rows(tmp_path):
        assert row["detail"] == f"imported bitsandbytes 0.1.0 from the installed wheel; loaded libbitsandbytes_cpu.so", row
        assert row["seconds"] > 0
    assert "Result: **PASS**: 2 tried (0 failed), 0 not tried." in (tmp_path / "tries.md").read_text()


def test_a_floor_qemu_cannot_emulate_is_not_tried_and_says_the_static_report_checks_it(tmp_path: Path) -> None:
    result = try_step(tmp_path, fixture_wheel("portable", "-DBNB_AVX512_TARGET=OFF"), "--floor", "linux-x86_64=x86-64-v4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    floor = by_mode(tmp_path)["floor x86-64-v4"]
    assert floor["status"] == "not tried"
    assert "cannot emulate x86-64-v4" in floor["detail"] and "static ISA report" in floor["detail"]


def test_our_own_library_passes_its_smoke_script_at_the_matrix_floor(tmp_path: Path) -> None:
    """Our CPU library dispatches at run time: on a Nehalem (x86-64-v2) it takes the portable kernels."""
    result = try_step(tmp_path, cpu_wheel(), "--script", str(SMOKE), "--floor", "linux-x86_64=x86-64-v2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    modes = by_mode(tmp_path)
    assert modes["floor x86-64-v2"]["how"] == "qemu-x86_64-static -cpu Nehalem-v1"
    for row in modes.values():
        assert row["status"] == "passed" and "round trips equal the reference" in row["detail"], row


@pytest.mark.skipif(not NVCC.exists(), reason=f"no CUDA toolkit at {NVCC}")
def test_a_cuda_only_wheel_fails_the_default_try_because_no_native_library_loaded(tmp_path: Path) -> None:
    """Its loader falls back to a stand-in on a machine without a GPU, so importing it proves nothing."""
    wheel = fixture_wheel("cuda", "-DCOMPUTE_BACKEND=cuda", "-DCMAKE_CUDA_ARCHITECTURES=75", f"-DCMAKE_CUDA_COMPILER={NVCC}")
    result = try_step(tmp_path, wheel, "--expect-library", "linux-x86_64=libbitsandbytes_cpu.so")
    assert result.returncode == 8, result.stdout[-3000:] + result.stderr
    (row,) = rows(tmp_path)
    assert row["status"] == "failed"
    assert "no native library of it was loaded: expected libbitsandbytes_cpu.so (the wheel holds libbitsandbytes_cuda" in row["detail"], row
    assert "fallen back to a stand-in" in row["detail"]


def test_bnb_ci_tries_at_the_trees_floor_and_says_why_the_try_failed(tmp_path: Path) -> None:
    """`bnb-ci test-wheels --source TREE` takes the tree's cpu-floor (x86-64-v3) from its pyproject.toml."""
    wheel = fixture_wheel("avx512")
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel, tmp_path / "wheels" / wheel.name)
    result = run_bnb_ci(["test-wheels", "--source", str(TREE), "--wheels", "wheels", "--out", "out"], cwd=tmp_path, timeout=900)
    assert result.returncode != 0, result.stdout[-3000:]
    said = f"[try] {wheel.name} (floor x86-64-v3): the script was killed: SIGILL: illegal instruction at libbitsandbytes_cpu.so+0x"
    assert said in result.stdout + result.stderr, result.stdout[-3000:] + result.stderr[-2000:]
    assert "| floor x86-64-v3 | qemu-x86_64-static -cpu Haswell-v4 | failed |" in (tmp_path / "out" / "tries.md").read_text()


@pytest.mark.parametrize(("arch", "compiler", "objdump", "instruction"), [
    ("x86_64", "gcc", "objdump", "ud2"),
    ("aarch64", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-objdump", "udf"),
])  # fmt: skip
def test_the_faulting_instruction_is_read_from_the_core_qemu_writes(tmp_path: Path, arch: str, compiler: str, objdump: str,
                                                                    instruction: str) -> None:  # fmt: skip
    """A static program whose main executes an undefined instruction, run by qemu-<arch>-static."""
    if shutil.which(compiler) is None or shutil.which(objdump) is None or shutil.which(cpu_levels.QEMU_BINARY[arch]) is None:
        pytest.skip(f"needs {compiler}, {objdump} and {cpu_levels.QEMU_BINARY[arch]}")
    (tmp_path / "ill.c").write_text(f'int main(void) {{ __asm__ volatile("{"ud2" if arch == "x86_64" else ".inst 0x00000000"}"); return 0; }}\n')
    subprocess.run([compiler, "-O1", "-static", "-o", "ill", "ill.c"], cwd=tmp_path, check=True)
    listing = subprocess.run([objdump, "-d", "ill"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    address = next(int(line.split(":")[0], 16) for line in listing.splitlines() if f"\t{instruction}" in line)
    run = subprocess.run(f"ulimit -c unlimited; exec {cpu_levels.QEMU_BINARY[arch]} ./ill", shell=True, cwd=tmp_path, check=False)
    assert run.returncode == -4, run.returncode
    (core,) = tmp_path.glob("qemu_ill_*.core")
    assert core_pc(core) == address


@pytest.mark.parametrize(("args", "message"), [
    (["--floor", "linux-x86_64=armv8-a"], "--floor linux-x86_64=armv8-a: CPU floor 'armv8-a' is not a level of x86_64 (allowed: x86-64, x86-64-v2, x86-64-v3, x86-64-v4)"),
    (["--floor", "linux-riscv=x86-64"], "unknown platform 'linux-riscv'; allowed: linux-x86_64"),
    (["--floor", "linux-x86_64"], "--floor 'linux-x86_64' is not PLATFORM=LEVEL"),
    (["--expect-library", "linux-x86_64=bitsandbytes/x.so"], "is not a library file name"),
    (["--runtime-library", "gomp"], "--runtime-library 'gomp' is not a library soname such as libgomp.so.1"),
])  # fmt: skip
def test_bad_checks_are_a_clear_error(tmp_path: Path, args: list, message: str) -> None:
    (tmp_path / "wheels").mkdir()
    result = run_step(["try-wheels", "--wheels", "wheels", "--report", "tries.md", *args], tmp_path, env=step_env())
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "tries.md").exists()
