"""The binary readers (bnb_build.elf on lief, with our own CUDA fatbin and offload bundle parsers;
bnb_build.binfmt for PE and Mach-O), checked against real libraries and the vendors' tools."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from bnb_build_helpers import CUOBJDUMP, NVCC, build_threads_library, threads_source

from bnb_build import binfmt, elf
from bnb_build.errors import InputError

KERNEL = """
__global__ void scale(float *x, float a, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= a; }
extern "C" int launch(float *x, int n) { scale<<<(n + 255) / 256, 256>>>(x, 2.0f, n); return 0; }
"""


def test_host_library_dynamic_section_symbols_and_versions(tmp_path: Path) -> None:
    lib = build_threads_library(tmp_path / "libprobe.so")
    rpath_lib = tmp_path / "librp.so"
    subprocess.run(
        ["g++", "-shared", "-fPIC", "-Wl,-rpath,$ORIGIN/../lib", "-Wl,--enable-new-dtags", "-o", str(rpath_lib),
         str(threads_source())],
        check=True,
    )
    info = elf.read_elf(lib)
    assert info.machine == 62
    assert "libc.so.6" in info.needed and "libstdc++.so.6" in info.needed
    assert "bnb_probe" in info.exported
    assert "dlopen" not in info.exported, "undefined symbols are not exports"
    assert "GLIBC_2.34" in info.version_requirements["libc.so.6"]
    assert info.glibc_requirement == (2, 34)
    assert info.required_versions("GLIBCXX_") and info.required_versions("CXXABI_")
    assert elf.read_elf(rpath_lib).runpath == ["$ORIGIN/../lib"]

    try:  # cross-check against pyelftools where the test environment has it
        from elftools.elf.elffile import ELFFile
        from elftools.elf.gnuversions import GNUVerNeedSection
    except ImportError:
        return
    with open(lib, "rb") as f:
        ef = ELFFile(f)
        verneed = next(s for s in ef.iter_sections() if isinstance(s, GNUVerNeedSection))
        expected = {vn.name: sorted(aux.name for aux in auxes) for vn, auxes in verneed.iter_versions()}
        needed = [t.needed for t in ef.get_section_by_name(".dynamic").iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    assert {k: sorted(v) for k, v in info.version_requirements.items()} == expected
    assert info.needed == needed


@pytest.mark.skipif(not NVCC.exists(), reason="the machine's nvcc is not installed")
def test_cuda_fatbin_archs_match_cuobjdump(tmp_path: Path) -> None:
    (tmp_path / "k.cu").write_text(KERNEL)
    lib = tmp_path / "libk.so"
    subprocess.run(
        [str(NVCC), "-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_75,code=sm_75",
         "-gencode", "arch=compute_90,code=[compute_90,sm_90]", "-o", str(lib), str(tmp_path / "k.cu")],
        check=True,
    )
    info = elf.read_elf(lib)
    assert info.sass_archs == ["sm_75", "sm_90"]
    assert info.ptx_archs == ["sm_90"]
    if CUOBJDUMP.exists():
        listing = subprocess.run([str(CUOBJDUMP), "--list-elf", str(lib)], capture_output=True, text=True, check=True)
        assert sorted(set(re.findall(r"\.(sm_\d+)\.cubin", listing.stdout))) == info.sass_archs

    compressed = tmp_path / "libkc.so"
    subprocess.run(
        [str(NVCC), "-shared", "-Xcompiler", "-fPIC", "-Xfatbin", "-compress-all", "-gencode",
         "arch=compute_75,code=sm_75", "-o", str(compressed), str(tmp_path / "k.cu")],
        check=True,
    )
    entries = elf.read_elf(compressed).cuda_fatbin_entries
    assert [(e.kind, e.arch, e.compressed) for e in entries] == [("ELF", "sm_75", True)]


@pytest.mark.skipif(shutil.which("hipcc") is None, reason="Debian's hipcc is not installed")
def test_hip_offload_targets(tmp_path: Path) -> None:
    (tmp_path / "k.hip").write_text("#include <hip/hip_runtime.h>\n" + KERNEL.replace(
        "scale<<<(n + 255) / 256, 256>>>(x, 2.0f, n)", "hipLaunchKernelGGL(scale, dim3((n + 255) / 256), dim3(256), 0, 0, x, 2.0f, n)"))
    lib = tmp_path / "libh.so"
    subprocess.run(
        ["hipcc", "--offload-arch=gfx90a", "-fPIC", "-shared", "-o", str(lib), str(tmp_path / "k.hip")],
        check=True, env=dict(os.environ, HIP_PLATFORM="amd"),
    )
    info = elf.read_elf(lib)
    assert "hipv4-amdgcn-amd-amdhsa--gfx90a" in info.hip_offload_targets
    assert info.gfx_targets == ["gfx90a"]


def test_offload_bundle_parsing_and_compressed_bundles() -> None:
    ids = [b"host-x86_64-unknown-linux--", b"hipv4-amdgcn-amd-amdhsa--gfx942:xnack-"]
    bundle = elf.OFFLOAD_BUNDLE_MAGIC + struct.pack("<Q", len(ids))
    for i in ids:
        bundle += struct.pack("<QQQ", 0, 0, len(i)) + i
    assert elf.parse_hip_fatbin(b"\0" * 16 + bundle) == sorted(i.decode() for i in ids)
    assert elf.parse_hip_fatbin(b"CCOB" + b"\0" * 40) == [elf.COMPRESSED_UNKNOWN]


def test_cuda_fatbin_parsing_of_a_synthetic_section() -> None:
    def entry(kind: int, arch: int, payload: bytes, flags: int = 0) -> bytes:
        header = struct.pack("<HHIQIIHHIIIQQQ", kind, 0x101, 64, len(payload), 0, 0, 0, 0, arch, 0, 0, flags, 0, 0)
        return header + payload

    body = entry(2, 80, b"x" * 8) + entry(1, 80, b"y" * 16, flags=0x2000) + entry(2, 120, b"z" * 8)
    section = struct.pack("<IHHQ", elf.FATBIN_MAGIC, 1, 16, len(body)) + body
    entries = elf.parse_cuda_fatbin(section + b"\0" * 8 + section)
    assert [(e.kind, e.arch, e.compressed) for e in entries] == [
        ("ELF", "sm_80", False), ("PTX", "sm_80", True), ("ELF", "sm_120", False)]


def test_not_an_elf_file(tmp_path: Path) -> None:
    (tmp_path / "x.dll").write_bytes(b"MZ" + b"\0" * 100)
    with pytest.raises(InputError, match="is not an ELF file"):
        elf.read_elf(tmp_path / "x.dll")


def test_exported_functions_leave_out_data_and_hidden_symbols(tmp_path: Path) -> None:
    (tmp_path / "x.c").write_text(
        'int bnb_counter = 3;\n__attribute__((visibility("hidden"))) int bnb_hidden(void) { return 1; }\n'
        "int bnb_get(void) { return bnb_counter + bnb_hidden(); }\n"
    )
    lib = tmp_path / "libx.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-rpath,/opt/x:$ORIGIN", "-Wl,--disable-new-dtags", "-o", str(lib), str(tmp_path / "x.c")], check=True)
    info = elf.read_elf(lib)
    assert "bnb_counter" in info.exported and "bnb_get" in info.exported and "bnb_hidden" not in info.exported
    assert "bnb_get" in info.exported_functions and "bnb_counter" not in info.exported_functions
    assert (info.rpath, info.runpath) == (["/opt/x", "$ORIGIN"], [])


def test_a_truncated_elf_file_is_an_input_error(tmp_path: Path) -> None:
    lib = build_threads_library(tmp_path / "libprobe.so")
    data = lib.read_bytes()
    with pytest.raises(InputError, match="malformed ELF file .truncated"):
        elf.parse_elf(data[: len(data) // 2], "libprobe.so")
    with pytest.raises(InputError, match="malformed ELF file .no valid ELF header"):
        elf.parse_elf(b"\x7fELF" + b"\0" * 60, "zeros.so")
    with pytest.raises(InputError, match="malformed ELF file .no program headers and no sections"):
        elf.parse_elf(data[:6] + b"\0" * 58, "header-only.so")


def test_a_machine_lief_has_no_name_for_is_read_as_its_number(tmp_path: Path) -> None:
    data = bytearray(build_threads_library(tmp_path / "libprobe.so").read_bytes())
    data[18:20] = (0x1234).to_bytes(2, "little")  # e_machine
    assert elf.parse_elf(bytes(data), "odd.so").machine == 0x1234


# ----------------------------------------------------------------------------------------------
# PE and Mach-O (bnb_build.binfmt), on libraries zig builds for Windows and macOS

needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang is not installed (tests/requirements.txt pins it)")


def zig_build(tmp_path: Path, name: str, source: str, target: str, *flags: str) -> Path:
    src = tmp_path / (name + ".cpp")
    src.write_text(source)
    out = tmp_path / name
    subprocess.run([sys.executable, "-m", "ziglang", "c++", "-target", target, "-shared", "-o", str(out), str(src), *flags],
                   check=True, cwd=str(tmp_path), capture_output=True)  # fmt: skip
    return out


@needs_zig
def test_pe_machine_exports_and_imports(tmp_path: Path) -> None:
    source = ('#include <cstdlib>\nextern "C" __declspec(dllexport) int bnb_table[4] = {1, 2, 3, 4};\n'
              'extern "C" __declspec(dllexport) void *bnb_alloc(size_t n) { return std::malloc(n); }\n')  # fmt: skip
    for target, machine in (("x86_64-windows-gnu", "x64"), ("aarch64-windows-gnu", "arm64")):
        dll = zig_build(tmp_path, f"{machine}.dll", source, target)
        info = binfmt.read_pe(dll)
        assert (info.machine, info.is_dll) == (machine, True)
        assert info.exported == ["bnb_alloc", "bnb_table"] and info.exported_functions == ["bnb_alloc"]
        assert "KERNEL32.dll" in info.imports and all(binfmt.is_windows_system_dll(d) for d in info.imports), info.imports
        data = dll.read_bytes()
        with pytest.raises(InputError, match="malformed PE file .truncated"):
            binfmt.parse_pe(data[: len(data) // 2], dll.name)
        odd = bytearray(data)
        coff = int.from_bytes(data[0x3C:0x40], "little") + 4
        odd[coff : coff + 2] = (0x1234).to_bytes(2, "little")  # the COFF machine
        assert binfmt.parse_pe(bytes(odd), dll.name).machine == "0x1234"


@needs_zig
def test_macho_cpu_exports_loads_and_minimum_os(tmp_path: Path) -> None:
    source = ('#include <vector>\nextern "C" __attribute__((visibility("default"))) int bnb_count = 0;\n'
              'extern "C" __attribute__((visibility("default"))) int bnb_size(int n) { std::vector<int> v(n); return (int)v.size(); }\n')  # fmt: skip
    dylib = zig_build(tmp_path, "libx.dylib", source, "aarch64-macos.14.0", "-fvisibility=hidden")
    info = binfmt.read_macho(dylib)
    assert (info.cpu, info.is_dylib, info.min_os) == ("arm64", True, (14, 0))
    assert info.exported == ["bnb_count", "bnb_size"], "C names without the leading underscore, no linker-defined ones"
    assert "_Znwm" in info.exported_cxx, "the static libc++'s operator new"
    assert "bnb_size" in info.exported_functions and "bnb_count" not in info.exported_functions
    assert info.dylibs == ["/usr/lib/libSystem.B.dylib"] and info.install_name
    data = dylib.read_bytes()
    with pytest.raises(InputError, match="malformed Mach-O file .truncated"):
        binfmt.parse_macho(data[: len(data) // 2], dylib.name)


def test_c_symbol_and_c_runtime_rules() -> None:
    names = ["bnb_a", "_Z3fooi", "?foo@@YAHXZ", "__cudaRegisterLinkedBinary_x", "__fatbinwrap_y", "_init", "_fini",
             "__bss_start", "_edata", "_end", "_CRT_INIT", "unw_getcontext", "malloc"]  # fmt: skip
    assert binfmt.c_symbols(names) == ["bnb_a", "malloc"]
    assert binfmt.c_runtime_exports(names + ["__mingw_module_is_dll", "printf", "atexit"]) == [
        "_CRT_INIT", "__mingw_module_is_dll", "atexit", "malloc", "printf"]  # fmt: skip
