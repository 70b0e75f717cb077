"""The ISA report (bnb_build.isa_report) and the audit's use of it: libraries compiled here with gcc
(x86-64 ELF) and zig (a Windows DLL, an AArch64 ELF), and our own CPU library built by the native step."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bnb_build_helpers import REPO_ROOT, cpu_wheel, cpu_work_dir, run_step, upstream_cpu_libs

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, expectations, plan_jobs
from bitsandbytes_ci.core.tree import read_tree
from bnb_build import cpu_levels, isa_report
from bnb_build.audit import parse_expectations
from bnb_build.errors import InputError, UsageError

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "isa"
needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang is not installed (tests/requirements.txt pins it)")


def gxx(dest: Path, source: str, *flags: str) -> Path:
    """A shared library from tests/fixtures/isa/<source>, built with the host's g++ (gcc 12 here)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["g++", "-O2", "-shared", "-fPIC", "-o", str(dest), str(FIXTURES / source), *flags], check=True)
    return dest


def zig_cc(dest: Path, source: str, target: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-shared", "-O2", "-o", str(dest), str(FIXTURES / source)]
    subprocess.run(argv, check=True, cwd=str(dest.parent), capture_output=True)
    return dest


def objdump_first(library: Path, function: str, mnemonic: str) -> int:
    """The address of the first `mnemonic` in `function`, as binutils' objdump disassembles it (an
    independent disassembler: the report must agree with it)."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], check=True, capture_output=True, text=True).stdout
    body = out.split(f"<{function}>:\n", 1)[1].split("\n\n", 1)[0]
    for line in body.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(\S+)", line)
        if m and m.group(2) == mnemonic:
            return int(m.group(1), 16)
    raise AssertionError(f"objdump shows no {mnemonic} in {function}:\n{body}")


def report_of(library: Path, floor: str | None) -> isa_report.IsaReport:
    return isa_report.analyse(library.read_bytes(), library.name, floor)


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("isa")
    return {
        "lut-avx512": gxx(root / "avx512" / "liblut.so", "lut_cache.cpp", "-mavx512f", "-mavx512bw"),
        "lut-avx512-stripped": gxx(root / "stripped" / "liblut.so", "lut_cache.cpp", "-mavx512f", "-mavx512bw", "-Wl,--strip-all"),
        "lut": gxx(root / "plain" / "liblut.so", "lut_cache.cpp"),
        "scale-avx2": gxx(root / "avx2" / "libscale.so", "scale.cpp", "-mavx2", "-mfma"),
    }


# ----------------------------------------------------------------------------------------------
# Load-time code


def test_avx512_in_a_static_constructor_is_a_failure_even_with_runtime_dispatch(libs) -> None:
    lib = libs["lut-avx512"]
    report = report_of(lib, "x86-64-v3")
    address = objdump_first(lib, "_GLOBAL__sub_I_lut_cache.cpp", "vmovdqu8")
    [finding] = report.load_time_findings
    assert finding.function == "_GLOBAL__sub_I_lut_cache.cpp" and finding.load_time == "a static constructor"
    assert ("AVX512BW", isa_report.Instruction(address, "vmovdqu8", ("AVX512BW",))) in finding.examples
    for dispatch in (False, True):
        [problem] = [p for p in report.violations(runtime_dispatch=dispatch) if "load-time" in p]
        assert problem.startswith("liblut.so: load-time code above the CPU floor x86-64-v3: _GLOBAL__sub_I_lut_cache.cpp: ")
        assert f"vmovdqu8 (AVX-512BW) at 0x{address:x}" in problem and problem.endswith(", a static constructor")
    assert "_GLOBAL__sub_I_lut_cache.cpp: a static constructor" in report.load_time_roots
    assert report.extensions["AVX512BW"] >= 1


def test_without_a_symbol_table_the_constructor_is_still_found(libs) -> None:
    report = report_of(libs["lut-avx512-stripped"], "x86-64-v3")
    assert not report.has_symbols
    [finding] = report.load_time_findings
    assert finding.function.startswith("sub_") and finding.load_time == "a static constructor"
    assert "vmovdqu8 (AVX-512BW)" in finding.describe()


def test_the_same_source_without_the_flag_passes(libs) -> None:
    for floor in ("x86-64-v2", "x86-64-v3"):
        report = report_of(libs["lut"], floor)
        assert report.findings == [] and report.violations(runtime_dispatch=False) == []
        assert "_GLOBAL__sub_I_lut_cache.cpp: a static constructor" in report.load_time_roots, "the constructor was examined"


def test_avx2_in_an_ordinary_function_fails_unless_the_library_dispatches(libs) -> None:
    lib = libs["scale-avx2"]
    report = report_of(lib, "x86-64-v2")
    [finding] = report.findings
    assert finding.function == "scale" and not finding.load_time
    assert set(finding.extensions) == {"AVX", "FMA"}
    fma = next(ins for e, ins in finding.examples if e == "FMA")
    assert fma.address == objdump_first(lib, "scale", fma.mnemonic) and fma.mnemonic.startswith("vfmadd")
    [problem] = report.violations(runtime_dispatch=False)
    assert problem.startswith("libscale.so: code above the CPU floor x86-64-v2 and the tree declares no runtime-dispatch: scale: ")
    assert f"{fma.mnemonic} (FMA) at 0x{fma.address:x}" in problem
    assert report.violations(runtime_dispatch=True) == [], "listed, not refused"
    assert report_of(lib, "x86-64-v3").findings == [], "x86-64-v3 has AVX2 and FMA"
    assert report_of(lib, None).findings == [] and {"AVX", "FMA"} <= set(report_of(lib, None).extensions), "no floor: listed only"


def test_the_cpu_check_of_a_constructor_is_not_code_above_the_floor() -> None:
    """The upstream-shaped tree asks __builtin_cpu_supports: libgcc's constructor __cpu_indicator_init
    runs cpuid, then xgetbv (XSAVE, x86-64-v3) only when CPUID reports OSXSAVE."""
    library = upstream_cpu_libs() / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    report = report_of(library, "x86-64-v2")
    assert "__cpu_indicator_init: a static constructor" in report.load_time_roots
    assert report.extensions.get("XSAVE", 0) >= 1, "xgetbv is there, and counted"
    assert report.findings == [] and report.violations(runtime_dispatch=False) == []


# ----------------------------------------------------------------------------------------------
# describe_code_address: what a try says after SIGILL


def test_describe_code_address_names_symbol_instruction_extension_and_load_time(libs) -> None:
    lib = libs["lut-avx512"]
    address = objdump_first(lib, "_GLOBAL__sub_I_lut_cache.cpp", "vmovdqu8")
    assert isa_report.describe_code_address(lib, address, "x86-64-v3") == (
        f"liblut.so+0x{address:x} in _GLOBAL__sub_I_lut_cache.cpp: vmovdqu8 (AVX-512BW), a static constructor; floor x86-64-v3 has no AVX-512BW"
    )
    assert isa_report.describe_code_address(lib, address, "x86-64-v4").endswith("; floor x86-64-v4 has it")
    assert isa_report.describe_code_address(lib, address, None).endswith("vmovdqu8 (AVX-512BW), a static constructor")
    lut_filled = objdump_first(lib, "lut_filled", "ret")
    assert isa_report.describe_code_address(lib, lut_filled, "x86-64-v3") == (
        f"liblut.so+0x{lut_filled:x} in lut_filled: ret (baseline x86-64), not load-time code; floor x86-64-v3 has it"
    )
    assert "not in the library's code" in isa_report.describe_code_address(lib, 0x10, "x86-64-v3")
    scale = libs["scale-avx2"]
    fma = objdump_first(scale, "scale", "vfmadd132ss")
    assert isa_report.describe_code_address(scale, fma, "x86-64-v2").endswith("scale: vfmadd132ss (FMA), not load-time code; floor x86-64-v2 has no FMA")


def test_a_floor_of_another_arch_is_refused(libs) -> None:
    with pytest.raises(InputError, match=r"CPU floor 'armv8-a' is not a level of x86_64 \(allowed: x86-64, x86-64-v2, x86-64-v3, x86-64-v4\)"):
        isa_report.describe_code_address(libs["lut"], 0x1000, "armv8-a")


# ----------------------------------------------------------------------------------------------
# Other formats: a Windows DLL and an AArch64 library, built with zig


@needs_zig
def test_a_dll_constructor_above_the_floor_is_found(tmp_path: Path) -> None:
    dll = zig_cc(tmp_path / "zero_table.dll", "zero_table.c", "x86_64-windows-gnu")
    report = report_of(dll, "x86-64-v3")
    assert any(root.endswith(": the DLL entry point (the C runtime start-up that calls DllMain)") for root in report.load_time_roots)
    [finding] = [f for f in report.load_time_findings if f.load_time == "a static constructor (__CTOR_LIST__)"]
    assert {"AVX512F"} <= set(finding.extensions)
    assert report.violations(runtime_dispatch=True), "load-time AVX-512 fails whatever the library does at run time"
    assert not [f for f in report_of(dll, "x86-64-v4").findings if "AVX512F" in f.extensions]


@needs_zig
def test_an_arm64_constructor_above_the_floor_is_found(tmp_path: Path) -> None:
    lib = zig_cc(tmp_path / "libcrc.so", "crc_seed.c", "aarch64-linux-gnu")
    report = report_of(lib, "armv8-a")
    assert report.arch == "arm64"
    [finding] = report.load_time_findings
    assert finding.function == "seed_hash" and finding.load_time == "a static constructor"
    assert [(e, ins.mnemonic) for e, ins in finding.examples] == [("CRC", "crc32cw")]
    assert report_of(lib, "armv8.2-a").findings == [], "Armv8.2-A has CRC32"


# ----------------------------------------------------------------------------------------------
# The audit step


def wheel_with(folder: Path, libraries: dict[str, Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, lib in libraries.items():
            z.writestr(f"bitsandbytes/{name}", lib.read_bytes())
    return path


def run_audit(work: Path, floor: str, runtime_dispatch: bool):
    wheel = {"plat_tag": "manylinux_2_28_x86_64", "cpu_floor": floor, "libraries": {"libbitsandbytes_cpu.so": {"backend": "cpu"}}}
    (work / "expect.json").write_text(json.dumps({"wheels": {"linux-x86_64": wheel}, "runtime_dispatch": runtime_dispatch}))
    result = run_step(["audit", "--wheels", "wheels", "--expect", "expect.json", "--report", "audit.md"], work)
    return result, (work / "audit.md").read_text()


def test_the_audit_fails_a_wheel_whose_library_runs_avx512_while_it_loads(tmp_path: Path, libs) -> None:
    wheel_with(tmp_path / "wheels", {"libbitsandbytes_cpu.so": libs["lut-avx512"]})
    result, report = run_audit(tmp_path, "x86-64-v3", runtime_dispatch=True)
    assert result.returncode != 0
    assert "### Instruction sets" in report
    assert "| libbitsandbytes_cpu.so | x86-64-v3 | AVX (" in report and "| AVX-512BW | ABOVE THE FLOOR |" in report
    assert "violation: libbitsandbytes_cpu.so: load-time code above the CPU floor x86-64-v3: _GLOBAL__sub_I_lut_cache.cpp: " in report
    assert "vmovdqu8 (AVX-512BW)" in result.stderr + result.stdout


def test_the_audit_passes_our_cpu_library_at_its_floor_with_runtime_dispatch(tmp_path: Path) -> None:
    matrix = load_matrix()
    floor = matrix.platforms["linux-x86_64"].cpu_floor
    shutil.copytree(cpu_wheel().parent, tmp_path / "wheels")
    result, report = run_audit(tmp_path, floor, runtime_dispatch=True)
    assert result.returncode == 0, report
    row = next(line for line in report.splitlines() if line.startswith("| libbitsandbytes_cpu.so |"))
    assert "AVX2 (" in row and "AVX-512F (" in row and row.endswith("| within the floor |"), "the AVX2 and AVX-512 kernels are listed"
    assert "- above the floor: " in report
    # The same library, held to a tree that does not dispatch: its kernels above the floor are violations.
    result, report = run_audit(tmp_path, floor, runtime_dispatch=False)
    assert result.returncode != 0 and "the tree declares no runtime-dispatch" in report
    named = [line for line in report.splitlines() if line.startswith("- violation: libbitsandbytes_cpu.so: code above the CPU floor")]
    assert len(named) == isa_report.MAX_LISTED_VIOLATIONS, "the first functions are named, the others counted"
    assert re.search(r"- violation: libbitsandbytes_cpu.so: \d+ more function\(s\) with code above the CPU floor", report)


def test_our_cpu_library_keeps_its_symbol_table_and_its_load_time_code_is_named() -> None:
    library = cpu_work_dir() / "out" / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    sections = subprocess.run(["readelf", "-S", "-W", str(library)], check=True, capture_output=True, text=True).stdout
    assert " .symtab " in sections and " .debug_" not in sections, "release builds strip debug information only"
    report = report_of(library, "x86-64-v2")
    assert report.has_symbols and report.load_time_findings == []
    dispatched = {f.function for f in report.findings}
    assert dispatched and not any(name.startswith("sub_") for name in dispatched), "every function above the floor has its name"


# ----------------------------------------------------------------------------------------------
# Where the floor comes from


def test_expect_json_carries_each_wheels_floor_and_the_trees_dispatch() -> None:
    matrix = load_matrix()
    tree = read_tree(REPO_ROOT)
    jobs = plan_jobs(matrix, Selection(backends=("cpu",)), tree)
    expected = expectations(matrix, jobs, tree)
    for platform, wheel in expected["wheels"].items():
        assert wheel["cpu_floor"] == matrix.platforms[platform].cpu_floor
        cpu_levels.check_level(matrix.platforms[platform].arch, wheel["cpu_floor"])
    assert expected["runtime_dispatch"] is True, "our CPU library picks its kernels after checking the CPU"
    parsed = parse_expectations(json.loads(json.dumps(expected)))
    assert parsed.runtime_dispatch is True and parsed.wheels["linux-aarch64"].cpu_floor == "armv8-a"


def test_a_bad_floor_in_expect_json_names_it_and_the_levels() -> None:
    wheel = {"plat_tag": "manylinux_2_28_x86_64", "libraries": {}, "cpu_floor": "haswell"}
    with pytest.raises(UsageError, match=r"wheels.linux-x86_64.cpu_floor: CPU floor 'haswell' is not a level of x86_64 \(allowed: x86-64, x86-64-v2, x86-64-v3, x86-64-v4\)"):
        parse_expectations({"wheels": {"linux-x86_64": wheel}})
    with pytest.raises(UsageError, match=r'"runtime_dispatch" must be true or false, not \'yes\''):
        parse_expectations({"wheels": {"linux-x86_64": {**wheel, "cpu_floor": "x86-64-v2"}}, "runtime_dispatch": "yes"})


def test_every_level_has_its_extensions() -> None:
    levels = [*cpu_levels.X86_64_LEVELS, *cpu_levels.AARCH64_LEVELS]
    assert sorted(cpu_levels.EXTENSIONS) == sorted(levels)
    assert isa_report.extension_level("x86-64", "AVX512BW") == "x86-64-v4" and isa_report.extension_level("x86-64", "AVX512_VNNI") is None
    assert isa_report.display_name("AVX512_VNNI") == "AVX-512 VNNI" and isa_report.display_name("SSE4_1") == "SSE4.1"
