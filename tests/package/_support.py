"""Small helpers shared by the package tests."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from bitsandbytes import functional, reference
from bitsandbytes._loader import Runtime, library_suffix

KINDS = ["8bit", "nf4", "fp4"]
RNG = np.random.default_rng(7)


def cuda(major: int, minor: int, devices: int = 1) -> Runtime:
    return Runtime("cuda", major, minor, devices, "injected for the test")


def rocm(major: int, minor: int, devices: int = 1) -> Runtime:
    return Runtime("rocm", major, minor, devices, "injected for the test")


def lib_names(*tags: str) -> List[str]:
    """File names of packaged libraries: lib_names("cpu", "cuda130") on Linux gives libbitsandbytes_cpu.so, ..."""
    return [f"libbitsandbytes_{tag}{library_suffix()}" for tag in tags]


# ---------------------------------------------------------------------------- numerics helpers


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    mismatch = np.flatnonzero(actual.view(np.uint8) != expected.view(np.uint8))
    assert mismatch.size == 0, (
        f"{mismatch.size} differing byte(s), first at byte {mismatch[0]}: "
        f"native {actual.ravel().view(np.uint8)[mismatch[0]]} vs reference {expected.ravel().view(np.uint8)[mismatch[0]]}"
    )


def native_outputs(x: np.ndarray, kind: str, blocksize: int, code: Optional[np.ndarray] = None) -> List[np.ndarray]:
    """Codes, absmax and the dequantized values (float32, float16) of x through bitsandbytes.functional."""
    if kind == "8bit":
        codes, absmax = functional.quantize_blockwise(x, blocksize=blocksize, code=code)
        values = [functional.dequantize_blockwise(codes, absmax, blocksize, out_dtype=d, code=code) for d in (np.float32, np.float16)]
    else:
        codes, absmax = functional.quantize_4bit(x, blocksize=blocksize, quant_type=kind)
        values = [functional.dequantize_4bit(codes, absmax, x.shape, blocksize, kind, out_dtype=d) for d in (np.float32, np.float16)]
    return [codes, absmax, *values]


def reference_outputs(x: np.ndarray, kind: str, blocksize: int, code: Optional[np.ndarray] = None) -> List[np.ndarray]:
    """The same through bitsandbytes.reference."""
    if kind == "8bit":
        codes, absmax = reference.quantize_blockwise(x, code, blocksize=blocksize)
        values = [reference.dequantize_blockwise(codes, absmax, code, blocksize=blocksize, out_dtype=d) for d in (np.float32, np.float16)]
    else:
        codes, absmax = reference.quantize_4bit(x, blocksize=blocksize, quant_type=kind)
        values = [reference.dequantize_4bit(codes, absmax, x.shape, blocksize, kind, out_dtype=d) for d in (np.float32, np.float16)]
    return [codes, absmax, *values]


def check(x: np.ndarray, kind: str, blocksize: int, code: Optional[np.ndarray] = None) -> None:
    """Quantize and dequantize x natively and in the reference; every output must match."""
    for actual, expected in zip(native_outputs(x, kind, blocksize, code), reference_outputs(x, kind, blocksize, code)):
        assert_same_bits(actual, expected)


def on_thresholds(n: int) -> np.ndarray:
    """Values that land exactly on decision thresholds (and one float either side), absmax 1."""
    t = np.concatenate([reference.thresholds(reference.create_dynamic_map()), reference.thresholds(reference.NF4),
                        reference.thresholds(np.sort(reference.FP4_MAGNITUDES))])
    t = np.concatenate([t, -t, np.nextafter(t, np.float32(2)), np.nextafter(t, np.float32(-2))])
    values = np.resize(t, n).astype(np.float32)
    values[:: min(n, 64)] = 1.0  # every block of 64 (or fewer) holds 1.0, so absmax is exactly 1
    return values


INPUTS: Dict[str, Callable[[int], np.ndarray]] = {
    "normal": lambda n: RNG.standard_normal(n).astype(np.float32),
    "wide-range": lambda n: (RNG.standard_normal(n) * 10.0 ** RNG.uniform(-30, 30, n)).astype(np.float32),
    "zeros": lambda n: np.zeros(n, dtype=np.float32),
    "negative-zeros": lambda n: np.full(n, -0.0, dtype=np.float32),
    "all-equal": lambda n: np.full(n, 0.3, dtype=np.float32),
    "all-equal-negative": lambda n: np.full(n, -2.5, dtype=np.float32),
    "denormals": lambda n: (RNG.uniform(-1, 1, n) * 1e-39).astype(np.float32),
    "on-thresholds": on_thresholds,
    "float32-extremes": lambda n: np.resize(np.array([3.4e38, -3.4e38, 1e-45, -1e-45, 1.0], np.float32), n),
    # zeros (of both signs) inside blocks that are not all zero, and all-zero blocks between others
    "zeros-in-blocks": lambda n: np.where(RNG.random(n) < 0.5, np.float32(0), RNG.standard_normal(n)).astype(np.float32)
    * np.where(RNG.random(n) < 0.5, np.float32(-1), np.float32(1)),
    "all-zero-blocks": lambda n: np.where((np.arange(n) // 64) % 3 == 1, np.float32(0), RNG.standard_normal(n).astype(np.float32)),
    # normalised values that are themselves subnormal: a huge absmax next to ordinary values
    "subnormal-ratios": lambda n: np.where(np.arange(n) % 64 == 0, np.float32(3e38), RNG.standard_normal(n).astype(np.float32) * 1e-5),
}


def code_maps() -> Dict[str, np.ndarray]:
    """8-bit code maps besides the default: any 256 sorted float32 values work."""
    rng = np.random.default_rng(11)
    with_repeats = np.sort(np.round(rng.uniform(-1, 1, 256), 1)).astype(np.float32)  # equal neighbours
    tiny = (np.linspace(-1, 1, 256) * 1e-38).astype(np.float32)  # subnormal codes and thresholds
    return {
        "unsigned-dynamic": reference.create_dynamic_map(signed=False),
        "linear": np.linspace(-1, 1, 256).astype(np.float32),
        "random-sorted": np.sort(rng.standard_normal(256)).astype(np.float32),
        "with-repeats": with_repeats,
        "subnormal": np.concatenate([tiny[:128], np.linspace(0.01, 1, 128)]).astype(np.float32),
        "beyond-one": np.linspace(-3e38, 3e38, 256).astype(np.float32),
    }
