"""The CPU library: file name, exports, dependencies, reproducibility and the C ABI through ctypes.

The full numerics against the numpy reference are the package tests' job; here a few values are
checked against hand computations from docs/quantization.md.
"""

from __future__ import annotations

import platform
import shutil
import subprocess

import numpy as np
import pytest

BNB_OK, BNB_ERROR_INVALID_BLOCKSIZE, BNB_ERROR_INVALID_QUANT_TYPE = 0, 1, 2
BNB_ERROR_INVALID_ARGUMENT, BNB_ERROR_NONFINITE = 3, 4
FP4, NF4 = 1, 2


@pytest.fixture(scope="module")
def cpu(cpu_build, load_library):
    return load_library(cpu_build.library)


def test_library_name(cpu_build):
    assert cpu_build.library.name == "libbitsandbytes_cpu" + cpu_build.library.suffix


def test_exports_exactly_the_abi(cpu_build, elf, abi_names):
    assert elf.exported(cpu_build.library) == abi_names


def test_no_openmp_runtime(cpu_build, elf):
    needed = elf.needed(cpu_build.library)
    assert not [lib for lib in needed if "gomp" in lib or "omp" in lib], needed


def test_no_build_or_source_paths_in_binary(cpu_build):
    data = cpu_build.library.read_bytes()
    for path in (cpu_build.source_dir, cpu_build.build_dir):
        assert str(path).encode() not in data, f"{path} is embedded in {cpu_build.library}"


def test_rebuild_in_another_folder_is_byte_identical(cpu_build, native_build, tmp_path):
    again = native_build(tmp_path, "-DCOMPUTE_BACKEND=cpu")
    assert again.library.read_bytes() == cpu_build.library.read_bytes()


def test_information_functions(cpu, repo_root):
    assert cpu.text("bnb_backend") == "cpu"
    assert cpu.text("bnb_version") == (repo_root / "VERSION").read_text().strip()
    assert cpu.call("runtime_version") == -1
    assert cpu.call("device_count") == -1


def test_cpu_kernel_settings(cpu):
    # The automatic choice is one of the instruction sets of this architecture (tests/package/test_cpu_isa.py
    # compares it with the CPU's flags and every set's results with the scalar kernels').
    automatic = cpu.text("bnb_cpu_isa")
    assert automatic in ("avx512", "avx2", "neon", "scalar")
    assert cpu.lib.bnb_cpu_set_isa(b"scalar") == BNB_OK and cpu.text("bnb_cpu_isa") == "scalar"
    assert cpu.lib.bnb_cpu_set_isa(b"mmx") == BNB_ERROR_INVALID_ARGUMENT
    assert "instruction set 'mmx' is not a CPU instruction set" in cpu.text("bnb_last_error")
    assert cpu.text("bnb_cpu_isa") == "scalar", "a refused name changes nothing"
    assert cpu.lib.bnb_cpu_set_isa(None) == BNB_OK and cpu.text("bnb_cpu_isa") == automatic
    assert cpu.lib.bnb_cpu_set_isa(b"auto") == BNB_OK and cpu.text("bnb_cpu_isa") == automatic
    assert cpu.lib.bnb_cpu_set_threads(3) == BNB_OK and cpu.call("cpu_threads") == 3
    assert cpu.lib.bnb_cpu_set_threads(-1) == BNB_ERROR_INVALID_ARGUMENT
    assert "invalid threads -1" in cpu.text("bnb_last_error")
    assert cpu.lib.bnb_cpu_set_threads(0) == BNB_OK and cpu.call("cpu_threads") >= 1


def objects(build, *names: str) -> list:
    """The object files of the given sources in a build folder."""
    return [next(build.build_dir.rglob(f"{name}.o")) for name in names]


def mnemonics(path) -> list:
    """Instruction mnemonics of an object or library (objdump -d)."""
    done = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True, check=True)
    return [line.split(":\t", 1)[1].split()[0] for line in done.stdout.splitlines() if ":\t" in line and line.split(":\t", 1)[1].split()]


x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or shutil.which("objdump") is None,
                              reason="x86_64 instruction-set checks (objdump)")


@x86_only
def test_baseline_code_uses_no_avx(cpu_build):
    """Everything but the AVX2 / AVX-512 kernel files runs on any x86_64 CPU: no VEX or EVEX instruction."""
    baseline = objects(cpu_build, "api.cpp", "errors.cpp", "validate.cpp", "backend.cpp", "isa.cpp", "kernels_scalar.cpp")
    for path in baseline:
        avx = sorted({m for m in mnemonics(path) if m.startswith("v") and m not in ("verr", "verw")})
        assert avx == [], f"{path.name} holds AVX instructions: {avx[:10]}"


@x86_only
def test_vector_kernel_files_define_nothing_the_linker_could_share(cpu_build):
    """An inline function compiled in an AVX file could be picked by the linker for baseline callers:
    the AVX files define their kernel table and nothing else (everything else is internal)."""
    for name, table in (("kernels_avx2.cpp", "kAvx2Kernels"), ("kernels_avx512.cpp", "kAvx512Kernels")):
        [path] = objects(cpu_build, name)
        done = subprocess.run(["nm", "-C", "--defined-only", "-g", str(path)], capture_output=True, text=True, check=True)
        defined = [line.split(maxsplit=2)[2] for line in done.stdout.splitlines() if line.strip()]
        assert defined == [f"bnb::cpu::{table}"], f"{name} defines {defined}"


@x86_only
def test_library_holds_avx2_and_avx512_kernels(cpu_build):
    text = subprocess.run(["objdump", "-d", str(cpu_build.library)], capture_output=True, text=True, check=True).stdout
    assert "%zmm" in text and ("vpermt2ps" in text or "vpermi2ps" in text), "no AVX-512 kernels in the library"
    assert "%ymm" in text and "vgatherdps" in text, "no AVX2 kernels in the library"


def test_nf4_codes_by_hand(cpu):
    # One block of 64 with absmax 2, so v = x / 2: 1 -> 15; -1 -> 0; 0 -> 7;
    # 0.5 < (0.4407 + 0.5626) / 2 = 0.5017 -> 12; 0.52 > 0.5017 -> 13;
    # -0.05 < (-0.0911 + 0) / 2 = -0.0455 -> 6.
    x = np.zeros(64, np.float32)
    x[:6] = [2.0, -2.0, 0.0, 1.0, 1.04, -0.1]
    absmax = np.zeros(1, np.float32)
    packed = np.zeros(32, np.uint8)
    assert cpu.call("quantize_4bit_fp32", x, absmax, packed, 64, 64, NF4) == BNB_OK
    assert absmax[0] == 2.0
    assert list(packed[:3]) == [0xF0, 0x7C, 0xD6]
    assert all(packed[3:] == 0x77)


def test_fp4_codes_by_hand_and_back(cpu):
    # absmax 1: 1 -> code 3, -1 -> 8|3, -0.0 -> 0 (positive), 0.5 -> 5, -1/3 -> 8|4, 0.2 -> 1/6 (6) or 1/4 (7):
    # threshold (1/6 + 1/4) / 2 = 0.2083 > 0.2 -> 6.
    x = np.zeros(64, np.float32)
    x[:6] = [1.0, -1.0, -0.0, 0.5, -1 / 3, 0.2]
    absmax = np.zeros(1, np.float32)
    packed = np.zeros(32, np.uint8)
    assert cpu.call("quantize_4bit_fp32", x, absmax, packed, 64, 64, FP4) == BNB_OK
    assert list(packed[:3]) == [0x3B, 0x05, 0xC6]
    out = np.zeros(64, np.float32)
    assert cpu.call("dequantize_4bit_fp32", packed, absmax, out, 64, 64, FP4) == BNB_OK
    expected = np.array([1.0, -1.0, 0.0, 0.5, -1 / 3, 1 / 6], np.float32)
    np.testing.assert_array_equal(out[:6], expected)


def test_partial_last_block_and_odd_length(cpu):
    # n = 65 with blocksize 64: the second block holds one element; its byte's low nibble is 0.
    x = np.ones(65, np.float32)
    x[64] = -3.0
    absmax = np.zeros(2, np.float32)
    packed = np.zeros(33, np.uint8)
    assert cpu.call("quantize_4bit_fp32", x, absmax, packed, 64, 65, NF4) == BNB_OK
    assert list(absmax) == [1.0, 3.0]
    assert packed[32] == 0x00  # -1.0 is NF4 code 0, padding 0
    assert all(packed[:32] == 0xFF)


def test_blockwise_8bit_with_a_linear_code_map(cpu):
    code = np.linspace(-1, 1, 256).astype(np.float32)
    x = np.zeros(128, np.float32)
    x[:3] = [4.0, -4.0, 0.0]
    absmax = np.zeros(2, np.float32)
    out = np.zeros(128, np.uint8)
    assert cpu.call("quantize_blockwise_fp32", code, x, absmax, out, 64, 128) == BNB_OK
    # 0 lies between code[127] < 0 < code[128]: exactly on their threshold (they are symmetric),
    # so it takes the lower code 127. The all-zero second block has absmax 0 and v = 0.
    assert list(out[:3]) == [255, 0, 127]
    assert list(absmax) == [4.0, 0.0]
    assert all(out[64:] == 127)
    back = np.zeros(128, np.float16)
    assert cpu.call("dequantize_blockwise_fp16", code, out, absmax, back, 64, 128) == BNB_OK
    assert list(back[:2]) == [4.0, -4.0]


def test_fp16_input_matches_fp32_input(cpu):
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float16)
    results = []
    for name, x in (("quantize_4bit_fp16", values), ("quantize_4bit_fp32", values.astype(np.float32))):
        absmax, packed = np.zeros(16, np.float32), np.zeros(500, np.uint8)
        assert cpu.call(name, x, absmax, packed, 64, 1000, NF4) == BNB_OK
        results.append((absmax, packed))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_blocks_are_independent_of_how_the_work_is_split(cpu):
    # One call over many blocks (spread over threads) equals one call per block.
    x = np.random.default_rng(1).standard_normal(64 * 257 + 5).astype(np.float32)
    absmax, packed = np.zeros(258, np.float32), np.zeros(len(x) // 2 + 1, np.uint8)
    assert cpu.call("quantize_4bit_fp32", x, absmax, packed, 64, len(x), FP4) == BNB_OK
    for b in range(258):
        chunk = np.ascontiguousarray(x[b * 64 : (b + 1) * 64])
        one_absmax, one_packed = np.zeros(1, np.float32), np.zeros(32, np.uint8)
        assert cpu.call("quantize_4bit_fp32", chunk, one_absmax, one_packed, 64, len(chunk), FP4) == BNB_OK
        assert one_absmax[0] == absmax[b]
        assert bytes(one_packed[: (len(chunk) + 1) // 2]) == bytes(packed[b * 32 : b * 32 + (len(chunk) + 1) // 2])


def test_zero_length_is_a_no_op(cpu):
    absmax, packed = np.full(1, 7, np.float32), np.full(1, 9, np.uint8)
    assert cpu.call("quantize_4bit_fp32", np.zeros(1, np.float32), absmax, packed, 64, 0, NF4) == BNB_OK
    assert absmax[0] == 7 and packed[0] == 9


@pytest.mark.parametrize("blocksize", [0, 16, 32, 96, 8192, -64])
def test_invalid_blocksize(cpu, blocksize):
    x, absmax, out = np.zeros(64, np.float32), np.zeros(4, np.float32), np.zeros(64, np.uint8)
    code = np.linspace(-1, 1, 256).astype(np.float32)
    assert cpu.call("quantize_blockwise_fp32", code, x, absmax, out, blocksize, 64) == BNB_ERROR_INVALID_BLOCKSIZE
    assert f"invalid blocksize {blocksize}: must be a power of two in [64, 4096]" in cpu.text("bnb_last_error")
    if blocksize == 32:  # 4-bit takes 32
        assert cpu.call("quantize_4bit_fp32", x, absmax, out, blocksize, 64, NF4) == BNB_OK
        return
    assert cpu.call("quantize_4bit_fp32", x, absmax, out, blocksize, 64, NF4) == BNB_ERROR_INVALID_BLOCKSIZE
    assert f"invalid blocksize {blocksize}: must be a power of two in [32, 4096]" in cpu.text("bnb_last_error")


@pytest.mark.parametrize("quant_type", [0, 3])
def test_invalid_quant_type(cpu, quant_type):
    x, absmax, out = np.zeros(64, np.float32), np.zeros(1, np.float32), np.zeros(32, np.uint8)
    assert cpu.call("dequantize_4bit_fp32", out, absmax, x, 64, 64, quant_type) == BNB_ERROR_INVALID_QUANT_TYPE
    assert f"quant_type {quant_type}" in cpu.text("bnb_last_error")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input(cpu, bad):
    x = np.zeros(200, np.float32)
    x[150] = bad
    absmax, out = np.zeros(4, np.float32), np.zeros(200, np.uint8)
    code = np.linspace(-1, 1, 256).astype(np.float32)
    assert cpu.call("quantize_blockwise_fp32", code, x, absmax, out, 64, 200) == BNB_ERROR_NONFINITE
    assert cpu.call("quantize_4bit_fp32", x, absmax, out, 64, 200, NF4) == BNB_ERROR_NONFINITE
    assert "inf or NaN" in cpu.text("bnb_last_error")


def test_invalid_arguments(cpu):
    x, absmax, out = np.zeros(64, np.float32), np.zeros(1, np.float32), np.zeros(64, np.uint8)
    assert cpu.call("quantize_4bit_fp32", None, absmax, out, 64, 64, NF4) == BNB_ERROR_INVALID_ARGUMENT
    assert "A is NULL" in cpu.text("bnb_last_error")
    assert cpu.call("quantize_4bit_fp32", x, absmax, out, 64, -1, NF4) == BNB_ERROR_INVALID_ARGUMENT
    assert "-1" in cpu.text("bnb_last_error")
