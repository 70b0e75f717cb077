"""The CUDA library built with the machine's nvcc for COMPUTE_CAPABILITY="75;90".

Without a GPU (the usual case here) every kernel call must fail cleanly with BNB_ERROR_RUNTIME;
with one, the results must equal the CPU library's.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

BNB_OK, BNB_ERROR_NOT_AVAILABLE, BNB_ERROR_RUNTIME = 0, 5, 6
FP4, NF4 = 1, 2


def find_cuobjdump() -> Path | None:
    """cuobjdump of the pinned nvidia-cuda-cuobjdump wheel, else PATH."""
    try:
        files = importlib.metadata.distribution("nvidia-cuda-cuobjdump").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "cuobjdump":
            return Path(str(file.locate()))
    found = shutil.which("cuobjdump")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def cuda(cuda_build, load_library):
    return load_library(cuda_build.library)


def test_library_named_after_nvcc_version(cuda_build, nvcc_version):
    major, minor = nvcc_version
    assert cuda_build.library.name == f"libbitsandbytes_cuda{major}{minor}{cuda_build.library.suffix}"


def test_exports_the_same_symbols_as_cpu(cuda_build, cpu_build, elf, abi_names):
    assert elf.exported(cuda_build.library) == elf.exported(cpu_build.library) == abi_names


def test_fatbin_holds_sass_for_each_requested_arch(cuda_build):
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        pytest.skip("no cuobjdump: pip install nvidia-cuda-cuobjdump (pinned in tests/requirements.txt)")
    listing = subprocess.run([str(cuobjdump), "--list-elf", str(cuda_build.library)], capture_output=True,
                             text=True, check=True).stdout
    archs = sorted({line.rsplit(".", 2)[-2] for line in listing.splitlines() if line.endswith(".cubin")})
    assert archs == ["sm_75", "sm_90"], listing


def test_no_build_or_source_paths_in_binary(cuda_build):
    data = cuda_build.library.read_bytes()
    for path in (cuda_build.source_dir, cuda_build.build_dir):
        assert str(path).encode() not in data, f"{path} is embedded in {cuda_build.library}"


def test_information_functions(cuda, nvcc_version, repo_root):
    major, minor = nvcc_version
    assert cuda.text("bnb_backend") == "cuda"
    assert cuda.text("bnb_version") == (repo_root / "VERSION").read_text().strip()
    assert cuda.call("runtime_version") == major * 1000 + minor * 10
    assert cuda.call("device_count") >= 0


def test_quantize_without_gpu_is_a_runtime_error(cuda):
    if cuda.call("device_count") > 0:
        pytest.skip("a GPU is visible: test_quantize_matches_cpu covers this machine")
    x, absmax, packed = np.ones(100, np.float32), np.zeros(2, np.float32), np.zeros(50, np.uint8)
    assert cuda.call("quantize_4bit_fp32", x, absmax, packed, 64, 100, NF4) == BNB_ERROR_RUNTIME
    assert "CUDA runtime error" in cuda.text("bnb_last_error")


def test_cpu_kernel_settings_do_not_apply(cuda):
    assert cuda.text("bnb_cpu_isa") == ""
    assert cuda.call("cpu_threads") == -1
    assert cuda.lib.bnb_cpu_set_isa(b"avx2") == BNB_ERROR_NOT_AVAILABLE
    assert "bnb_cpu_set_isa: the cuda backend has no CPU kernels" in cuda.text("bnb_last_error")
    assert cuda.lib.bnb_cpu_set_threads(2) == BNB_ERROR_NOT_AVAILABLE


def test_validation_needs_no_gpu(cuda):
    x, absmax, packed = np.ones(100, np.float32), np.zeros(2, np.float32), np.zeros(50, np.uint8)
    assert cuda.call("quantize_4bit_fp32", x, absmax, packed, 100, 100, NF4) == 1
    assert cuda.call("quantize_4bit_fp32", x, absmax, packed, 64, 0, NF4) == BNB_OK


def gpu_inputs() -> dict:
    """Normal values, values on every threshold (and one float either side, FP4's among them), zeros."""
    from bitsandbytes import reference

    rng = np.random.default_rng(0)
    t = np.concatenate([reference.thresholds(reference.create_dynamic_map()), reference.thresholds(reference.NF4),
                        reference.thresholds(np.sort(reference.FP4_MAGNITUDES))])
    t = np.concatenate([t, -t, np.nextafter(t, np.float32(2)), np.nextafter(t, np.float32(-2))]).astype(np.float32)
    on_thresholds = np.resize(t, 64 * 40 + 5)
    on_thresholds[::32] = 1.0  # absmax 1 in every block of 32 or more
    zeros = rng.standard_normal(64 * 10 + 1).astype(np.float32)
    zeros[::3] = 0.0
    zeros[64:128] = 0.0
    return {"normal": rng.standard_normal(64 * 100 + 3).astype(np.float32), "thresholds": on_thresholds, "zeros": zeros}


def run_all(lib, x: np.ndarray, blocksize: int) -> list:
    """Outputs of every entry point for x (float32 and float16)."""
    from bitsandbytes import reference

    code = reference.create_dynamic_map()
    n, blocks = len(x), -(-len(x) // blocksize)
    outputs = []
    for suffix, values, out_type in (("fp32", x, np.float32), ("fp16", x.astype(np.float16).view(np.uint16), np.uint16)):
        if blocksize >= 64:
            absmax, codes, back = np.zeros(blocks, np.float32), np.zeros(n, np.uint8), np.zeros(n, out_type)
            assert lib.call(f"quantize_blockwise_{suffix}", code, values, absmax, codes, blocksize, n) == BNB_OK
            assert lib.call(f"dequantize_blockwise_{suffix}", code, codes, absmax, back, blocksize, n) == BNB_OK
            outputs += [absmax, codes, back]
        for quant_type in (FP4, NF4):
            absmax, packed, back = np.zeros(blocks, np.float32), np.zeros((n + 1) // 2, np.uint8), np.zeros(n, out_type)
            assert lib.call(f"quantize_4bit_{suffix}", values, absmax, packed, blocksize, n, quant_type) == BNB_OK
            assert lib.call(f"dequantize_4bit_{suffix}", packed, absmax, back, blocksize, n, quant_type) == BNB_OK
            outputs += [absmax, packed, back]
    return outputs


@pytest.mark.gpu
@pytest.mark.parametrize("blocksize", [32, 64, 4096])
def test_quantize_matches_cpu(cuda, cpu_build, load_library, blocksize):
    """The GPU kernels give the CPU kernels' codes and values bit for bit, FP4 at its thresholds included."""
    if cuda.call("device_count") <= 0:
        pytest.skip("no visible CUDA device")
    cpu = load_library(cpu_build.library)
    for name, x in gpu_inputs().items():
        for cpu_array, cuda_array in zip(run_all(cpu, x, blocksize), run_all(cuda, x, blocksize)):
            assert cpu_array.tobytes() == cuda_array.tobytes(), name


def test_unsupported_arch_fails_at_configure(native_build, nvcc, nvcc_version, tmp_path):
    if nvcc_version < (12, 9):
        pytest.skip(f"nvcc {nvcc_version} still supports sm_70")
    build = native_build(tmp_path, "-DCOMPUTE_BACKEND=cuda", "-DCOMPUTE_CAPABILITY=70;90", env={"CUDACXX": nvcc})
    assert build.returncode != 0
    assert "COMPUTE_CAPABILITY 70 is not supported" in build.log
