"""The CPU library built from this checkout, through bitsandbytes.functional, against bitsandbytes.reference.

Codes and absmax must be equal bit for bit, and dequantized values equal (compared as bit patterns,
so even the sign of zero counts).
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import pytest

from bitsandbytes import _native, functional, reference
from bitsandbytes.errors import NativeValueError

BLOCKSIZES = [64, 128, 256, 512, 1024, 2048, 4096]
KINDS = ["8bit", "nf4", "fp4"]
RNG = np.random.default_rng(7)

pytestmark = pytest.mark.usefixtures("native")


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    mismatch = np.flatnonzero(actual.view(np.uint8) != expected.view(np.uint8))
    assert mismatch.size == 0, (
        f"{mismatch.size} differing byte(s), first at byte {mismatch[0]}: "
        f"native {actual.ravel().view(np.uint8)[mismatch[0]]} vs reference {expected.ravel().view(np.uint8)[mismatch[0]]}"
    )


def check(x: np.ndarray, kind: str, blocksize: int) -> None:
    """Quantize and dequantize x natively and in the reference; every output must match."""
    if kind == "8bit":
        codes, absmax = functional.quantize_blockwise(x, blocksize=blocksize)
        ref_codes, ref_absmax = reference.quantize_blockwise(x, blocksize=blocksize)
    else:
        codes, absmax = functional.quantize_4bit(x, blocksize=blocksize, quant_type=kind)
        ref_codes, ref_absmax = reference.quantize_4bit(x, blocksize=blocksize, quant_type=kind)
    assert_same_bits(codes, ref_codes)
    assert_same_bits(absmax, ref_absmax)
    for out_dtype in (np.float32, np.float16):
        if kind == "8bit":
            out = functional.dequantize_blockwise(codes, absmax, blocksize, out_dtype=out_dtype)
            ref = reference.dequantize_blockwise(ref_codes, ref_absmax, blocksize=blocksize, out_dtype=out_dtype)
        else:
            out = functional.dequantize_4bit(codes, absmax, x.shape, blocksize, kind, out_dtype=out_dtype)
            ref = reference.dequantize_4bit(ref_codes, ref_absmax, x.shape, blocksize, kind, out_dtype=out_dtype)
        assert_same_bits(out, ref)


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
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("size", ["1", "blocksize-1", "blocksize", "blocksize+1", "3*blocksize+7"])
def test_random_inputs_of_every_size_and_blocksize(kind: str, blocksize: int, dtype: type, size: str) -> None:
    n = eval(size, {"blocksize": blocksize})  # noqa: S307 - a fixed expression from the parameter list
    check((RNG.standard_normal(n) * RNG.uniform(0.01, 100)).astype(dtype), kind, blocksize)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_adversarial_inputs(kind: str, name: str, dtype: type) -> None:
    x = INPUTS[name](1000)
    if dtype == np.float16:
        with np.errstate(over="ignore"):
            x = x.astype(np.float16)
        x[~np.isfinite(x)] = np.float16(65504)  # the float32 extremes overflow float16: use its largest value
    for blocksize in (64, 256):
        check(x, kind, blocksize)


@pytest.mark.parametrize("kind", KINDS)
def test_large_input(kind: str) -> None:
    x = RNG.standard_normal((1 << 20) + 3).astype(np.float32)
    check(x, kind, 4096)
    check(x.astype(np.float16), kind, 64)


def test_multidimensional_input_keeps_its_shape() -> None:
    x = RNG.standard_normal((3, 50, 7)).astype(np.float32)
    codes, absmax = functional.quantize_blockwise(x, blocksize=64)
    assert codes.shape == x.shape
    assert functional.dequantize_blockwise(codes, absmax, 64).shape == x.shape
    packed, absmax = functional.quantize_4bit(x, blocksize=64)
    assert packed.shape == ((x.size + 1) // 2,)
    assert functional.dequantize_4bit(packed, absmax, x.shape, 64).shape == x.shape


# --------------------------------------------------------------------------- native status codes


def raw_quantize_calls(A: np.ndarray, blocksize: int = 64, quant_type: int = 2):
    """Every quantize entry point called directly (no Python checks), as (name, args)."""
    n = A.size
    absmax = np.empty(max(1, -(-n // blocksize)), np.float32)
    codes = np.empty(max(1, n), np.uint8)
    raw16 = A.astype(np.float16).view(np.uint16)
    code = reference.create_dynamic_map()
    return [
        ("bnb_quantize_blockwise_fp32", (code, A, absmax, codes, blocksize, n)),
        ("bnb_quantize_blockwise_fp16", (code, raw16, absmax, codes, blocksize, n)),
        ("bnb_quantize_4bit_fp32", (A, absmax, codes, blocksize, n, quant_type)),
        ("bnb_quantize_4bit_fp16", (raw16, absmax, codes, blocksize, n, quant_type)),
    ]


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_input_gives_native_status_and_python_error(native: _native.NativeLibrary, bad: float) -> None:
    x = np.ones(300, dtype=np.float32)
    x[150] = bad
    for name, args in raw_quantize_calls(x):
        assert native.status(name, *args) == 4, f"{name} should return BNB_ERROR_NONFINITE"
        assert native.last_error() != ""
    for dtype in (np.float32, np.float16):
        with pytest.raises(ValueError, match=r"non-finite value\(s\) \(first: .* at flat index 150\)"):
            functional.quantize_blockwise(x.astype(dtype))
        with pytest.raises(ValueError, match="inf and NaN cannot be quantized"):
            functional.quantize_4bit(x.astype(dtype))


@pytest.mark.parametrize("blocksize", [0, 32, 63, 65, 96, 8192, -64])
def test_bad_blocksize_gives_native_status(native: _native.NativeLibrary, blocksize: int) -> None:
    for name, args in raw_quantize_calls(np.ones(100, np.float32), blocksize=64):
        args = tuple(blocksize if i == 4 else a for i, a in enumerate(args)) if "blockwise" in name else \
            tuple(blocksize if i == 3 else a for i, a in enumerate(args))
        assert native.status(name, *args) == 1, f"{name} should return BNB_ERROR_INVALID_BLOCKSIZE"


def test_native_errors_become_python_exceptions_with_the_native_message(native: _native.NativeLibrary) -> None:
    x = np.ones(100, np.float32)
    name, args = raw_quantize_calls(x, quant_type=3)[2]
    assert native.status(name, *args) == 2
    with pytest.raises(NativeValueError) as caught:
        native.call(name, *args)
    assert caught.value.status == 2 and caught.value.status_name == "BNB_ERROR_INVALID_QUANT_TYPE"
    assert caught.value.detail == native.last_error() != ""
    assert "bnb_quantize_4bit_fp32 failed with BNB_ERROR_INVALID_QUANT_TYPE (2)" in str(caught.value)
    assert isinstance(caught.value, ValueError)

    name, args = raw_quantize_calls(x)[2]
    assert native.status(name, None, *args[1:]) == 3, "a NULL pointer is BNB_ERROR_INVALID_ARGUMENT"


def test_cpu_library_reports_its_backend_and_version(native: _native.NativeLibrary, repo_root) -> None:
    assert native.backend() == "cpu"
    assert native.version() == (repo_root / "VERSION").read_text().strip()
    assert native.runtime_version() == -1 and native.device_count() == -1
