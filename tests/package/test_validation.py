"""Bad arguments to bitsandbytes.functional are rejected in Python, before any native call,
with a message naming the bad value and what is allowed."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from bitsandbytes import functional

pytestmark = pytest.mark.usefixtures("no_native")

GOOD = np.ones(200, dtype=np.float32)
ABSMAX_64 = np.ones(4, dtype=np.float32)  # 200 values in blocks of 64
CODES = np.zeros(200, dtype=np.uint8)
PACKED = np.zeros(100, dtype=np.uint8)


def raises(exception: type, *fragments: str):
    """pytest.raises that requires every fragment to appear literally in the message."""
    return pytest.raises(exception, match="".join(f"(?=[\\s\\S]*{re.escape(f)})" for f in fragments))


QUANTIZERS = [
    lambda A, **kw: functional.quantize_blockwise(A, **kw),
    lambda A, **kw: functional.quantize_4bit(A, **kw),
]


@pytest.mark.parametrize("quantize", QUANTIZERS, ids=["blockwise", "4bit"])
@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint8, np.complex64])
def test_input_dtype(quantize, dtype: type) -> None:
    with raises(TypeError, f"A has dtype {np.dtype(dtype)}", "only float32 and float16 are supported"):
        quantize(GOOD.astype(dtype))


@pytest.mark.parametrize("quantize", QUANTIZERS, ids=["blockwise", "4bit"])
def test_input_must_be_a_numpy_array(quantize) -> None:
    with raises(TypeError, "A must be a numpy.ndarray of float32 or float16, got list"):
        quantize([1.0, 2.0])


@pytest.mark.parametrize("quantize", QUANTIZERS, ids=["blockwise", "4bit"])
def test_non_contiguous_input(quantize) -> None:
    with raises(ValueError, "A is not C-contiguous (strides (8,))", "numpy.ascontiguousarray(A)"):
        quantize(GOOD[::2])
    with raises(ValueError, "A is not C-contiguous"):
        quantize(np.ones((8, 8), np.float32).T)


@pytest.mark.parametrize("quantize", QUANTIZERS, ids=["blockwise", "4bit"])
def test_empty_input(quantize) -> None:
    with raises(ValueError, "A is empty (shape (0, 3))", "nothing to quantize"):
        quantize(np.zeros((0, 3), np.float32))


@pytest.mark.parametrize("blocksize", [0, 16, 32, 63, 65, 100, 8192, -64, 64.0, "64", True])
def test_blocksize(blocksize: Any) -> None:
    message = (f"blocksize={blocksize!r} is not supported", "power of two from 64 to 4096",
               "(64, 128, 256, 512, 1024, 2048, 4096)")
    with raises(ValueError, *message):
        functional.quantize_blockwise(GOOD, blocksize=blocksize)
    with raises(ValueError, *message):
        functional.dequantize_blockwise(CODES, ABSMAX_64, blocksize=blocksize)
    if blocksize == 32:
        return  # valid for 4-bit (test_4bit_blocksize_32_reaches_the_native_library)
    message_4bit = (f"blocksize={blocksize!r} is not supported", "power of two from 32 to 4096",
                    "(32, 64, 128, 256, 512, 1024, 2048, 4096)")
    with raises(ValueError, *message_4bit):
        functional.quantize_4bit(GOOD, blocksize=blocksize)
    with raises(ValueError, *message_4bit):
        functional.dequantize_4bit(PACKED, ABSMAX_64, GOOD.shape, blocksize=blocksize)


def test_4bit_blocksize_32_reaches_the_native_library() -> None:
    with raises(AssertionError, "the native library was called"):
        functional.quantize_4bit(GOOD, blocksize=32)
    with raises(AssertionError, "the native library was called"):
        functional.dequantize_4bit(PACKED, np.ones(7, np.float32), GOOD.shape, blocksize=32)


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def unsorted_map() -> np.ndarray:
    code = np.linspace(-1, 1, 256).astype(np.float32)
    code[[10, 11]] = code[[11, 10]]
    return code


@pytest.mark.parametrize(("code", "exception", "fragments"), [
    ([0.0] * 256, TypeError, ("code must be a numpy.ndarray of 256 float32 values, got list",)),
    (np.linspace(-1, 1, 256), TypeError, ("code must be a numpy.ndarray of 256 float32 values, got float64",)),
    (np.linspace(-1, 1, 16, dtype=np.float32), ValueError, ("code has shape (16,)", "holds 256 values, shape (256,)")),
    (np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16), ValueError, ("code has shape (16, 16)",)),
    (np.where(np.arange(256) == 5, np.inf, np.linspace(-1, 1, 256)).astype(np.float32), ValueError,
     ("code[5] is", "inf", "a code map holds finite values")),
    (unsorted_map(), ValueError, ("code is not sorted ascending: code[11] =", "is below code[10] =", "numpy.sort(code)")),
])  # fmt: skip
def test_code_map(code: Any, exception: type, fragments: tuple) -> None:
    with raises(exception, *fragments):
        functional.quantize_blockwise(GOOD, blocksize=64, code=code)
    if "sorted" not in fragments[0]:
        with raises(exception, *fragments):
            functional.dequantize_blockwise(CODES, ABSMAX_64, 64, code=code)


def test_dequantize_takes_an_unsorted_code_map() -> None:
    """Dequantization only looks values up: the order of the map does not matter there."""
    with raises(AssertionError, "the native library was called"):
        functional.dequantize_blockwise(CODES, ABSMAX_64, 64, code=unsorted_map())


@pytest.mark.parametrize(("make", "exception", "fragments"), [
    (lambda shape, dtype: np.empty(shape, np.int8), TypeError, ("out must be a numpy.ndarray of",)),
    (lambda shape, dtype: [0] * 4, TypeError, ("out must be a numpy.ndarray of", "got list")),
    (lambda shape, dtype: np.empty((1, *shape), dtype), ValueError, ("out has shape (1,", "but the result has shape")),
    (lambda shape, dtype: np.empty((*shape, 2), dtype)[..., 0], ValueError, ("out is not C-contiguous",)),
    (lambda shape, dtype: read_only(np.empty(shape, dtype)), ValueError, ("out is read-only", "pass a writeable array")),
])  # fmt: skip
def test_output_arrays(make, exception: type, fragments: tuple) -> None:
    calls = [
        (lambda out: functional.quantize_blockwise(GOOD, 64, out=out), (200,), np.uint8),
        (lambda out: functional.quantize_4bit(GOOD, 64, out=out), (100,), np.uint8),
        (lambda out: functional.dequantize_blockwise(CODES, ABSMAX_64, 64, out=out), (200,), np.float32),
        (lambda out: functional.dequantize_4bit(PACKED, ABSMAX_64, GOOD.shape, 64, out=out), (200,), np.float32),
    ]
    for call, shape, dtype in calls:
        with raises(exception, *fragments):
            call(make(shape, dtype))


def test_absmax_output_array() -> None:
    with raises(ValueError, "absmax has shape (3,), but the result has shape (4,)"):
        functional.quantize_blockwise(GOOD, 64, absmax=np.empty(3, np.float32))
    with raises(TypeError, "absmax must be a numpy.ndarray of float32, got float64"):
        functional.quantize_4bit(GOOD, 64, absmax=np.empty(4, np.float64))


def test_out_dtype_must_match_out() -> None:
    with raises(TypeError, "out must be a numpy.ndarray of float32, got float16"):
        functional.dequantize_blockwise(CODES, ABSMAX_64, 64, out_dtype=np.float32, out=np.empty(200, np.float16))


@pytest.mark.parametrize("quant_type", ["int4", "NF4", "", None, 2])
def test_quant_type(quant_type: Any) -> None:
    with raises(ValueError, f"quant_type={quant_type!r} is not supported", "use 'nf4' or 'fp4'"):
        functional.quantize_4bit(GOOD, quant_type=quant_type)
    with raises(ValueError, f"quant_type={quant_type!r} is not supported"):
        functional.dequantize_4bit(PACKED, ABSMAX_64, GOOD.shape, 64, quant_type=quant_type)


@pytest.mark.parametrize("out_dtype", [np.float64, np.int8, "bfloat16"])
def test_out_dtype(out_dtype: object) -> None:
    with raises(TypeError, f"out_dtype={out_dtype!r} is not supported", "numpy.float32 or numpy.float16"):
        functional.dequantize_blockwise(CODES, ABSMAX_64, 64, out_dtype=out_dtype)
    with raises(TypeError, f"out_dtype={out_dtype!r} is not supported"):
        functional.dequantize_4bit(PACKED, ABSMAX_64, GOOD.shape, 64, out_dtype=out_dtype)


def test_codes_dtype_and_layout() -> None:
    with raises(TypeError, "codes must be a numpy.ndarray of uint8, got int8"):
        functional.dequantize_blockwise(CODES.astype(np.int8), ABSMAX_64, 64)
    with raises(ValueError, "codes is not C-contiguous"):
        functional.dequantize_blockwise(np.zeros(400, np.uint8)[::2], ABSMAX_64, 64)
    with raises(TypeError, "packed must be a numpy.ndarray of uint8, got float32"):
        functional.dequantize_4bit(PACKED.astype(np.float32), ABSMAX_64, GOOD.shape, 64)
    with raises(ValueError, "codes is empty"):
        functional.dequantize_blockwise(np.zeros(0, np.uint8), ABSMAX_64[:0], 64)


def test_absmax_must_have_one_finite_float32_per_block() -> None:
    with raises(ValueError, "absmax has 3 value(s) but 200 value(s) in blocks of 64 need 4",
                "pass the absmax and blocksize used for quantization"):
        functional.dequantize_blockwise(CODES, ABSMAX_64[:3], 64)
    with raises(ValueError, "absmax has 4 value(s) but 200 value(s) in blocks of 128 need 2"):
        functional.dequantize_4bit(PACKED, ABSMAX_64, GOOD.shape, 128)
    with raises(TypeError, "absmax must be a numpy.ndarray of float32, got float64"):
        functional.dequantize_blockwise(CODES, ABSMAX_64.astype(np.float64), 64)
    bad = ABSMAX_64.copy()
    bad[2] = np.nan
    with raises(ValueError, "absmax holds 1 non-finite value(s)"):
        functional.dequantize_4bit(PACKED, bad, GOOD.shape, 64)


def test_shape_must_match_the_packed_bytes() -> None:
    with raises(ValueError, "packed has 100 byte(s) but shape (201,) (201 values, two per byte) needs 101"):
        functional.dequantize_4bit(PACKED, ABSMAX_64, (201,), 64)
    with raises(ValueError, "shape=(0, 4) is empty"):
        functional.dequantize_4bit(PACKED, ABSMAX_64, (0, 4), 64)
    with raises(ValueError, "shape=(10, -20) is not a valid shape", "non-negative ints"):
        functional.dequantize_4bit(PACKED, ABSMAX_64, (10, -20), 64)
    with raises(ValueError, "shape='200' is not a valid shape"):
        functional.dequantize_4bit(PACKED, ABSMAX_64, "200", 64)  # type: ignore[arg-type]


def test_valid_arguments_do_reach_the_native_library() -> None:
    """Guards the tests above: with valid arguments the (refusing) native library is called."""
    with raises(AssertionError, "the native library was called"):
        functional.quantize_4bit(GOOD)
