"""The GPU kernels' nearest-code rule against the CPU kernels, without a GPU.

The CUDA, HIP and SYCL kernels quantize with the functions of csrc/common/codebooks.h (the CPU
kernels have their own vector searches). Compiled for the host, those functions must give the CPU
library's codes on every threshold and the floats next to them (FP4's included): the GPU's float32
division and comparisons are IEEE like the host's (cmake/Bnbcuda.cmake, Bnbhip.cmake), so on a GPU
they give the same. tests/native/test_native_cuda.py::test_quantize_matches_cpu checks the GPU
itself where one is visible.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bitsandbytes import reference

HERE = Path(__file__).resolve().parent
FP4, NF4 = 1, 2


@pytest.fixture(scope="module")
def host_rules(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    program = tmp_path_factory.mktemp("codebooks-host") / "codebooks_host"
    subprocess.run([compiler, "-std=c++17", "-O2", "-ffp-contract=off", "-I", str(repo_root / "csrc"), str(HERE / "codebooks_host.cpp"),
                    "-o", str(program)], check=True, capture_output=True, text=True)  # fmt: skip
    return program


def normalised_values() -> np.ndarray:
    """Every threshold of the three code books, the floats either side, and random values in [-1, 1]."""
    t = np.concatenate([reference.thresholds(reference.create_dynamic_map()), reference.thresholds(reference.NF4),
                        reference.thresholds(np.sort(reference.FP4_MAGNITUDES))])
    near = [t, np.nextafter(t, np.float32(2)), np.nextafter(t, np.float32(-2))]
    for _ in range(3):
        near += [np.nextafter(near[-2], np.float32(2)), np.nextafter(near[-1], np.float32(-2))]
    values = np.concatenate([*near, -np.concatenate(near), [0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45],
                             np.random.default_rng(3).uniform(-1, 1, 5000)]).astype(np.float32)  # fmt: skip
    return values


def test_gpu_rules_give_the_cpu_kernels_codes(host_rules: Path, cpu_build, load_library, tmp_path: Path) -> None:
    values = normalised_values()
    code = reference.create_dynamic_map()
    (tmp_path / "values.bin").write_bytes(values.astype("<f4").tobytes())
    (tmp_path / "code.bin").write_bytes(code.astype("<f4").tobytes())
    subprocess.run([str(host_rules), str(tmp_path / "values.bin"), str(tmp_path / "code.bin"), str(tmp_path / "codes.bin")], check=True)
    gpu_rules = np.frombuffer((tmp_path / "codes.bin").read_bytes(), np.uint8).reshape(-1, 3)

    # The CPU library on blocks of 32 values whose absmax is exactly 1 (one value of 1.0 per block), so v = x.
    cpu = load_library(cpu_build.library)
    padded = np.ones(((values.size + 30) // 31) * 32, np.float32)
    chunks = padded.reshape(-1, 32)
    flat = np.resize(values, chunks.shape[0] * 31)
    chunks[:, 1:] = flat.reshape(-1, 31)
    n, blocks = padded.size, chunks.shape[0]
    for column, quant_type in ((0, NF4), (1, FP4)):
        packed, absmax = np.zeros(n // 2, np.uint8), np.zeros(blocks, np.float32)
        assert cpu.call("quantize_4bit_fp32", padded, absmax, packed, 32, n, quant_type) == 0
        codes = np.empty(n, np.uint8)
        codes[0::2], codes[1::2] = packed >> 4, packed & 15
        cpu_codes = codes.reshape(-1, 32)[:, 1:].ravel()[: values.size]
        assert np.array_equal(cpu_codes, gpu_rules[:, column]), ("NF4", "FP4")[column]
    padded64 = np.ones(((values.size + 62) // 63) * 64, np.float32)
    chunks = padded64.reshape(-1, 64)
    chunks[:, 1:] = np.resize(values, chunks.shape[0] * 63).reshape(-1, 63)
    codes8, absmax = np.zeros(padded64.size, np.uint8), np.zeros(chunks.shape[0], np.float32)
    assert cpu.call("quantize_blockwise_fp32", code, padded64, absmax, codes8, 64, padded64.size) == 0
    assert np.array_equal(codes8.reshape(-1, 64)[:, 1:].ravel()[: values.size], gpu_rules[:, 2]), "8-bit"
    # and both are the reference's
    np.testing.assert_array_equal(gpu_rules[:, 0], reference.nearest(reference.NF4, values))
