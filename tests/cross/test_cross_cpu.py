"""CPU libraries of every platform built on this Linux machine with the zig cross toolchain.

One `bnb-ci build-all --backend cpu` (conftest.py) gives five libraries and five wheels; the tests check
their formats, architectures, exports and runtime dependencies, run the Windows x64 DLL under Wine and
the Linux aarch64 library under qemu-user against bitsandbytes.reference, and check that the same job
gives the same bytes from another folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT / "pipeline" / "src") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "pipeline" / "src"))

from bnb_build import binfmt, elf  # noqa: E402

# glibc symbol versions a manylinux2014 (glibc 2.17) library may need, and the libraries it may link.
LINUX_ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


def test_build_all_yields_five_platform_wheels_and_a_passing_audit(cross_build, platforms) -> None:
    wheels = sorted(p.name for p in (cross_build.out / "wheels").glob("*.whl"))
    tags = sorted(name.rsplit("-", 1)[1].removesuffix(".whl") for name in wheels)
    assert tags == sorted(tag for tag, _, _ in platforms.values()), wheels
    assert "Result: **PASS**" in (cross_build.out / "audit.md").read_text()
    manifest = json.loads((cross_build.out / "manifest.json").read_text())
    jobs = {j["id"]: j for j in manifest["jobs"]}
    for platform in platforms:
        assert jobs[f"cpu-{platform}"]["status"] == "built", jobs[f"cpu-{platform}"]
        assert jobs[f"wheel-{platform}"]["status"] == "built"
    print(f"build-all --backend cpu: {cross_build.seconds:.0f} s")


def test_each_wheel_holds_its_platforms_library(cross_build, platforms) -> None:
    for platform, (tag, library, _) in platforms.items():
        [wheel] = (cross_build.out / "wheels").glob(f"*-py3-none-{tag}.whl")
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if Path(n).name.startswith("libbitsandbytes_")]
            assert names == [f"bitsandbytes/{Path(library).name}"], (platform, names)
            assert z.read(names[0]) == cross_build.library(platform).read_bytes()


@pytest.mark.parametrize(
    ("platform", "fmt", "arch"),
    [("linux-x86_64", "ELF", 62), ("linux-aarch64", "ELF", 183), ("windows-x64", "PE", "x64"),
     ("windows-arm64", "PE", "arm64"), ("macos-arm64", "Mach-O", "arm64")],
)  # fmt: skip
def test_file_format_and_architecture(cross_build, platform: str, fmt: str, arch: object) -> None:
    path = cross_build.library(platform)
    if fmt == "ELF":
        assert elf.read_elf(path).machine == arch
    elif fmt == "PE":
        info = binfmt.read_pe(path)
        assert (info.machine, info.is_dll) == (arch, True)
    else:
        info = binfmt.read_macho(path)
        assert (info.cpu, info.is_dylib) == (arch, True)
    file_tool = shutil.which("file")
    if file_tool:
        described = subprocess.run([file_tool, "-b", str(path)], capture_output=True, text=True, check=True).stdout
        want = {"linux-x86_64": "ELF 64-bit LSB shared object, x86-64", "linux-aarch64": "ELF 64-bit LSB shared object, ARM aarch64",
                "windows-x64": "PE32+ executable (DLL)", "windows-arm64": "PE32+ executable (DLL)",
                "macos-arm64": "Mach-O 64-bit arm64 dynamically linked shared library"}[platform]  # fmt: skip
        assert described.startswith(want), described
        if platform.startswith("windows"):
            assert ("x86-64" if arch == "x64" else "Aarch64") in described, described


def test_exported_c_symbols_equal_the_linux_librarys(cross_build, platforms, abi_names: set[str]) -> None:
    linux = set(elf.read_elf(cross_build.library("linux-x86_64")).exported)
    assert linux == abi_names
    for platform in platforms:
        data = cross_build.library(platform).read_bytes()
        fmt = "PE" if platform.startswith("windows") else "Mach-O" if platform.startswith("macos") else "ELF"
        assert set(binfmt.exported_symbols(data, fmt)) == linux, platform


def test_no_library_needs_a_runtime_the_platform_lacks(cross_build) -> None:
    for platform in ("linux-x86_64", "linux-aarch64"):
        info = elf.read_elf(cross_build.library(platform))
        assert set(info.needed) <= LINUX_ALLOWED_NEEDED, (platform, info.needed)  # no libstdc++, libgcc_s, libgomp
        assert info.glibc_requirement is not None and info.glibc_requirement <= (2, 17), (platform, info.glibc_requirement)
    for platform in ("windows-x64", "windows-arm64"):
        imports = binfmt.read_pe(cross_build.library(platform)).imports
        assert imports and all(binfmt.is_windows_system_dll(name) for name in imports), (platform, imports)
        assert not [name for name in imports if name.lower().startswith(("libstdc++", "libc++", "libgcc", "libgomp", "libwinpthread"))]
    macho = binfmt.read_macho(cross_build.library("macos-arm64"))
    assert macho.dylibs == ["/usr/lib/libSystem.B.dylib"], macho.dylibs
    assert macho.min_os == (14, 0)


def test_the_loader_finds_dll_and_dylib_names(cross_build, platforms, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bitsandbytes import _loader

    library_suffix = _loader.library_suffix
    for platform, sys_platform in (("windows-x64", "win32"), ("windows-arm64", "win32"), ("macos-arm64", "darwin")):
        folder = tmp_path / platform
        [wheel] = (cross_build.out / "wheels").glob(f"*-py3-none-{platforms[platform][0]}.whl")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(folder)
        suffix = library_suffix(sys_platform)
        monkeypatch.setattr(_loader, "library_suffix", lambda platform=sys_platform, suffix=suffix: suffix)
        [name] = _loader.list_packaged(folder / "bitsandbytes")
        assert name == Path(platforms[platform][1]).name and _loader._parse(name).kind == "cpu"


def run_program(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout.replace("\r\n", "\n").splitlines()


def prepare(folder: Path, program: Path, library: Path, data: Path) -> Path:
    folder.mkdir()
    for path in (program, library, data):
        shutil.copy(path, folder / path.name)
    return folder


def split_output(lines: list[str]) -> tuple[str, list[str]]:
    """The round-trip program's `isa` (the CPU kernels it ran) and its result lines."""
    assert lines[0] == "backend cpu" and lines[1].startswith("isa "), lines[:2]
    return lines[1].split(" ", 1)[1], lines[2:]


def test_linux_x86_64_library_round_trip(cross_build, roundtrip_program, roundtrip_input, x86_isas, tmp_path: Path) -> None:
    data, expected = roundtrip_input
    work = prepare(tmp_path / "run", roundtrip_program("x86_64-linux-gnu.2.17"), cross_build.library("linux-x86_64"), data)
    isa, lines = split_output(run_program(["./roundtrip", "./libbitsandbytes_cpu.so", "input.bin"], cwd=work))
    assert lines == expected
    assert isa == x86_isas[-1], "the automatic choice is the best kernel set this CPU runs"


def test_windows_x64_dll_round_trip_under_wine(cross_build, roundtrip_program, roundtrip_input, wine64, x86_isas, tmp_path: Path) -> None:
    wine, env = wine64
    data, expected = roundtrip_input
    work = prepare(tmp_path / "run", roundtrip_program("x86_64-windows-gnu"), cross_build.library("windows-x64"), data)
    isa, lines = split_output(run_program([wine, "roundtrip.exe", "libbitsandbytes_cpu.dll", "input.bin"], cwd=work, env=env))
    assert lines == expected
    assert isa == x86_isas[-1], "the Windows DLL detects the CPU's kernels too"
    for forced in x86_isas:
        isa, lines = split_output(run_program([wine, "roundtrip.exe", "libbitsandbytes_cpu.dll", "input.bin"], cwd=work,
                                              env={**env, "BNB_CPU_ISA": forced}))  # fmt: skip
        assert (isa, lines) == (forced, expected)


def test_linux_aarch64_library_round_trip_under_qemu(cross_build, roundtrip_program, roundtrip_input, qemu_aarch64, tmp_path: Path) -> None:
    qemu, sysroot = qemu_aarch64
    data, expected = roundtrip_input
    work = prepare(tmp_path / "run", roundtrip_program("aarch64-linux-gnu.2.17"), cross_build.library("linux-aarch64"), data)
    isa, lines = split_output(run_program([qemu, "-L", str(sysroot), "./roundtrip", "./libbitsandbytes_cpu.so", "input.bin"], cwd=work))
    assert lines == expected
    assert isa == "neon", "NEON is part of every aarch64 CPU: the automatic choice"


def run_every_case(argv: list[str], work: Path, cases: dict, isas: list[str], env: dict | None = None) -> list[str]:
    """Runs the round-trip program on every case with each forced kernel set; returns what ran."""
    ran = []
    base = dict(os.environ if env is None else env)
    for name, (data, expected) in cases.items():
        shutil.copy(data, work / data.name)
        for forced in isas:
            isa, lines = split_output(run_program([*argv, data.name], cwd=work, env={**base, "BNB_CPU_ISA": forced}))
            assert isa == forced, f"{name}: BNB_CPU_ISA={forced} ran {isa}"
            bad = [line.split(" ", 1)[0] for line, want in zip(lines, expected) if line != want]
            assert lines == expected, f"{name} with the {forced} kernels differs from the reference in {bad or 'length'}"
            ran.append(f"{name}/{forced}")
    return ran


def test_neon_kernels_equal_the_scalar_kernels_and_the_reference_under_qemu(
    cross_build, roundtrip_program, adversarial_inputs, qemu_aarch64, tmp_path: Path
) -> None:
    """The aarch64 library's NEON kernels (run by qemu-user) and its scalar kernels, forced with
    BNB_CPU_ISA, both give bitsandbytes.reference's bytes on inputs at every edge case."""
    qemu, sysroot = qemu_aarch64
    work = prepare(tmp_path / "run", roundtrip_program("aarch64-linux-gnu.2.17"), cross_build.library("linux-aarch64"),
                   next(iter(adversarial_inputs.values()))[0])  # fmt: skip
    argv = [qemu, "-L", str(sysroot), "./roundtrip", "./libbitsandbytes_cpu.so"]
    ran = run_every_case(argv, work, adversarial_inputs, ["neon", "scalar"])
    print(f"aarch64 under qemu: {', '.join(ran)}")


def test_x86_64_kernels_of_this_cpu_equal_the_reference(cross_build, roundtrip_program, adversarial_inputs, x86_isas, tmp_path: Path) -> None:
    """The zig-built x86_64 library's kernels (AVX-512 and AVX2 where this CPU has them, scalar), forced
    with BNB_CPU_ISA, all give bitsandbytes.reference's bytes."""
    work = prepare(tmp_path / "run", roundtrip_program("x86_64-linux-gnu.2.17"), cross_build.library("linux-x86_64"),
                   next(iter(adversarial_inputs.values()))[0])  # fmt: skip
    ran = run_every_case(["./roundtrip", "./libbitsandbytes_cpu.so"], work, adversarial_inputs, x86_isas)
    print(f"x86_64: {', '.join(ran)}")


def objdump_text(path: Path) -> str:
    tool = shutil.which("llvm-objdump") or next((t for t in (shutil.which(f"llvm-objdump-{v}") for v in range(20, 13, -1)) if t), None)
    if tool is None:
        pytest.skip("llvm-objdump is not installed (apt-get install llvm): cannot disassemble other architectures")
    return subprocess.run([tool, "-d", str(path)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("platform", ["linux-x86_64", "windows-x64"])
def test_x86_64_libraries_keep_their_avx2_and_avx512_kernels(cross_build, platform: str) -> None:
    """zig compiles for the baseline x86_64 CPU; the kernel files' own flags must still give AVX code."""
    text = objdump_text(cross_build.library(platform))
    assert "zmm" in text and ("vpermt2ps" in text or "vpermi2ps" in text), f"{platform}: no AVX-512 kernels"
    assert "ymm" in text and "vgatherdps" in text, f"{platform}: no AVX2 kernels"


@pytest.mark.parametrize("platform", ["linux-aarch64", "windows-arm64", "macos-arm64"])
def test_arm64_libraries_keep_their_neon_kernels(cross_build, platform: str) -> None:
    # llvm-objdump writes `tbl v0.16b, {...}` for ELF and PE, Apple's `tbl.16b v0, {...}` for Mach-O.
    text = objdump_text(cross_build.library(platform))
    mnemonics = [line.split("\t")[1] for line in text.splitlines() if line.count("\t") >= 2]
    assert any(m in ("tbl", "tbl.16b", "tbx", "tbx.16b") for m in mnemonics), f"{platform}: no NEON table lookups"
    assert re.search(r"\tfdiv(\.4s)?\tv\d+(\.4s)?,", text), f"{platform}: no NEON division (the NEON kernels)"


def test_the_same_job_gives_the_same_bytes_elsewhere(cross_build, tmp_path: Path) -> None:
    """The Windows x64 job again, by its plan argv in another folder (as the Dagger container runs it)."""
    from bitsandbytes_ci.core.matrix import load_matrix
    from bitsandbytes_ci.core.plan import Selection, plan_jobs
    from bitsandbytes_ci.core.tree import read_tree

    from bnb_build import inputs

    [job] = plan_jobs(load_matrix(), Selection(backends=("cpu",), platforms=("windows-x64",)), read_tree(REPO_ROOT))
    work = tmp_path / "elsewhere" / "deeper"
    inputs.copy_subset(REPO_ROOT, job.present_sources(REPO_ROOT), work / "src")
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT / "pipeline" / "src"), "BNB_NO_CCACHE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    done = subprocess.run(job.native_argv(), cwd=work, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    again = work / "out" / job.output_subdir / job.library
    assert again.read_bytes() == cross_build.library("windows-x64").read_bytes()
    assert binfmt.read_pe(again).timestamp == 0 or binfmt.read_pe(again).timestamp == binfmt.read_pe(cross_build.library("windows-x64")).timestamp
    assert sorted(p.name for p in (work / "out" / job.output_subdir).iterdir()) == [job.library, job.library + ".build-info.json"]


def test_wheel_and_audit_refuse_a_library_of_the_wrong_architecture(cross_build, tmp_path: Path) -> None:
    from bnb_build import audit, wheel
    from bnb_build.errors import WheelError
    from bnb_build.platforms import get_platform

    arm_dll = cross_build.library("windows-arm64")
    with pytest.raises(WheelError, match="needs a DLL for x64"):
        wheel.check_library_format(arm_dll, get_platform("windows-x64"))
    with pytest.raises(WheelError, match="is a PE library, but macos-arm64 needs Mach-O"):
        wheel.check_library_format(cross_build.library("windows-x64"), get_platform("macos-arm64"))
    folder = tmp_path / "wheels"
    folder.mkdir()
    with zipfile.ZipFile(folder / "bitsandbytes-0.1.0-py3-none-win_amd64.whl", "w") as z:
        z.writestr("bitsandbytes/libbitsandbytes_cpu.dll", arm_dll.read_bytes())
    expect = audit.parse_expectations({"wheels": {"windows-x64": {"plat_tag": "win_amd64", "libraries": {"libbitsandbytes_cpu.dll": {"backend": "cpu"}}}}})
    [report], problems = audit.audit(folder, expect, {})
    assert report.violations == ["libbitsandbytes_cpu.dll is a PE file for arm64, windows-x64 needs a DLL for x64"] and problems == []
