"""The CPU library built from this checkout, through bitsandbytes.functional, against bitsandbytes.reference.

Codes and absmax must be equal bit for bit, and dequantized values equal (compared as bit patterns,
so even the sign of zero counts).
"""

from __future__ import annotations

import numpy as np
import pytest

from bitsandbytes import _native, functional, reference
from bitsandbytes.errors import NativeValueError

from ._support import INPUTS, KINDS, check, code_maps

BLOCKSIZES = [64, 128, 256, 512, 1024, 2048, 4096]
BLOCKSIZES_4BIT = [32, *BLOCKSIZES]  # 4-bit also takes blocksize 32
KIND_BLOCKSIZES = [(kind, b) for kind in KINDS for b in (BLOCKSIZES if kind == "8bit" else BLOCKSIZES_4BIT)]
RNG = np.random.default_rng(7)

pytestmark = pytest.mark.usefixtures("native")


@pytest.mark.parametrize(("kind", "blocksize"), KIND_BLOCKSIZES)
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
    for blocksize in (64, 256) if kind == "8bit" else (32, 64, 256):
        check(x, kind, blocksize)


@pytest.mark.parametrize("name", sorted(code_maps()))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_any_sorted_code_map(name: str, dtype: type) -> None:
    code = code_maps()[name]
    x = np.concatenate([
        INPUTS["normal"](700), np.abs(INPUTS["normal"](300)), INPUTS["on-thresholds"](500), INPUTS["zeros-in-blocks"](200),
        np.resize(code, 600) / np.float32(max(1.0, float(np.abs(code).max()))),  # every code value, and its neighbourhood
    ]).astype(dtype)  # fmt: skip
    x[::64] = 1
    for blocksize in (64, 4096):
        check(x, "8bit", blocksize, code=code)


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


@pytest.mark.parametrize("quantize", [functional.quantize_blockwise, functional.quantize_4bit], ids=["blockwise", "4bit"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_input_is_reported_with_the_first_bad_value(quantize, dtype: type, bad: float) -> None:
    x = np.ones((2, 100), dtype)
    x[0, [3, 7]] = bad
    x[1, 50] = bad
    with pytest.raises(ValueError, match=r"A holds 3 non-finite value\(s\) \(first: .* at flat index 3\): inf and NaN cannot be quantized"):
        quantize(x, 64)


@pytest.mark.parametrize("blocksize", [0, 16, 32, 63, 65, 96, 8192, -64])
def test_bad_blocksize_gives_native_status(native: _native.NativeLibrary, blocksize: int) -> None:
    for name, args in raw_quantize_calls(np.ones(100, np.float32), blocksize=64):
        if "4bit" in name and blocksize == 32:
            continue  # 4-bit takes 32 (test_4bit_blocksize_32_is_valid_natively)
        args = tuple(blocksize if i == 4 else a for i, a in enumerate(args)) if "blockwise" in name else \
            tuple(blocksize if i == 3 else a for i, a in enumerate(args))
        assert native.status(name, *args) == 1, f"{name} should return BNB_ERROR_INVALID_BLOCKSIZE"
        assert "power of two in [" + ("64" if "blockwise" in name else "32") + ", 4096]" in native.last_error()


def test_4bit_blocksize_32_is_valid_natively(native: _native.NativeLibrary) -> None:
    for name, args in raw_quantize_calls(np.ones(100, np.float32), blocksize=32):
        if "4bit" in name:
            assert native.status(name, *args) == 0, native.last_error()


@pytest.mark.parametrize(("bad", "message"), [
    (lambda c: c[::-1].copy(), "is below code[0] = 1: the code map must be sorted ascending"),
    (lambda c: np.where(np.arange(256) == 7, np.float32(np.nan), c).astype(np.float32), "code[7] is nan"),
    (lambda c: np.where(np.arange(256) == 255, np.float32(np.inf), c).astype(np.float32), "code[255] is inf"),
])  # fmt: skip
def test_native_quantizers_refuse_a_code_map_that_is_not_sorted_or_finite(native: _native.NativeLibrary, bad, message: str) -> None:
    code = bad(reference.create_dynamic_map())
    for name, args in raw_quantize_calls(np.ones(100, np.float32))[:2]:
        assert native.status(name, code, *args[1:]) == 3, f"{name} should return BNB_ERROR_INVALID_ARGUMENT"
        assert message in native.last_error() and name in native.last_error()


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
