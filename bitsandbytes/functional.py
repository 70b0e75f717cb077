"""Blockwise 8-bit and 4-bit quantization, computed by the native library.

Same results as `bitsandbytes.reference` (bit for bit), much faster. Arguments are checked here,
before the native call, so a mistake gives a message naming the bad value and what is allowed.
Inputs must be C-contiguous numpy arrays; float32 and float16 are supported. They are passed to
the library as they are (no copy); inf and NaN are found by the library, and then reported here
with the first bad value. `out=` (and `absmax=` for quantization) write the results into
existing arrays instead of new ones.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _checks, _native, reference

_DYNAMIC_MAP = reference.create_dynamic_map()
_BNB_ERROR_NONFINITE = 4


def _float_input(A: object) -> np.ndarray:
    A = _checks.float_input(A)
    if A.size == 0:
        raise ValueError(f"A is empty (shape {A.shape}): there is nothing to quantize")
    _contiguous(A, "A")
    return A


def _contiguous(array: np.ndarray, name: str) -> None:
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (strides {array.strides}): pass numpy.ascontiguousarray({name})")


def _codes_input(codes: object, name: str) -> np.ndarray:
    codes = _checks.uint8_codes(codes, name)
    _contiguous(codes, name)
    return codes


def _absmax_input(absmax: object, n: int, blocksize: int) -> np.ndarray:
    absmax = _checks.absmax_for(absmax, n, blocksize)
    _contiguous(absmax, "absmax")
    return absmax


def _result(given: Optional[np.ndarray], name: str, dtype: object, shape: Tuple[int, ...]) -> np.ndarray:
    """`given` checked as the array to write into, or a new one."""
    if given is None:
        return np.empty(shape, dtype=dtype)
    return _checks.output(given, name, np.dtype(dtype), shape)  # type: ignore[arg-type]


def _out_dtype(out_dtype: object, out: Optional[np.ndarray]) -> np.dtype:
    """out_dtype, defaulting to out's dtype when out is given, else float32."""
    if out_dtype is not None:
        return _checks.float_dtype(out_dtype, "out_dtype")
    if out is None:
        return np.dtype(np.float32)
    if not isinstance(out, np.ndarray) or out.dtype not in _checks.FLOAT_DTYPES:
        got = out.dtype if isinstance(out, np.ndarray) else type(out).__name__
        raise TypeError(f"out must be a numpy.ndarray of float32 or float16, got {got}")
    return out.dtype


def _suffix(dtype: np.dtype) -> str:
    return "fp16" if dtype == np.float16 else "fp32"


def _raw(array: np.ndarray) -> np.ndarray:
    """float16 crosses the C ABI as raw 16-bit patterns."""
    return array.view(np.uint16) if array.dtype == np.float16 else array


def _quantize(A: np.ndarray, name: str, *args: object) -> None:
    """Run a quantizer; inf or NaN in A becomes the ValueError of `_checks.finite`."""
    library = _native.library()
    status = library.status(name, *args)
    if status == _BNB_ERROR_NONFINITE:
        _checks.finite(A)  # raises, naming the first bad value
    library.check(name, status)


def quantize_blockwise(
    A: np.ndarray,
    blocksize: int = 4096,
    *,
    code: Optional[np.ndarray] = None,
    out: Optional[np.ndarray] = None,
    absmax: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """8-bit codes of A (uint8, A's shape) and absmax (float32, one per block).

    code: the 256-entry code map (float32, sorted ascending); default the signed dynamic map,
    e.g. `reference.create_dynamic_map(signed=False)` for non-negative values. out / absmax:
    arrays to write the codes / absmax into.
    """
    A = _float_input(A)
    blocksize = _checks.blocksize(blocksize)
    code = _DYNAMIC_MAP if code is None else _checks.code_map(code)
    codes = _result(out, "out", np.uint8, A.shape)
    scales = _result(absmax, "absmax", np.float32, (_checks.num_blocks(A.size, blocksize),))
    _quantize(A, f"bnb_quantize_blockwise_{_suffix(A.dtype)}", code, _raw(A), scales, codes, blocksize, A.size)
    return codes, scales


def dequantize_blockwise(
    codes: np.ndarray,
    absmax: np.ndarray,
    blocksize: int = 4096,
    *,
    out_dtype: object = None,
    code: Optional[np.ndarray] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Values of 8-bit codes (codes' shape), in out_dtype (float32, the default, or float16).

    code: the code map the codes were made with (256 finite float32); out: an array to write into
    (its dtype is the default out_dtype).
    """
    codes = _codes_input(codes, "codes")
    if codes.size == 0:
        raise ValueError(f"codes is empty (shape {codes.shape}): there is nothing to dequantize")
    blocksize = _checks.blocksize(blocksize)
    out_dtype = _out_dtype(out_dtype, out)
    absmax = _absmax_input(absmax, codes.size, blocksize)
    code = _DYNAMIC_MAP if code is None else _checks.code_map(code, sorted_ascending=False)
    result = _result(out, "out", out_dtype, codes.shape)
    _native.library().call(
        f"bnb_dequantize_blockwise_{_suffix(out_dtype)}", code, codes, absmax, _raw(result), blocksize, codes.size
    )
    return result


def quantize_4bit(
    A: np.ndarray,
    blocksize: int = 64,
    quant_type: str = "nf4",
    *,
    out: Optional[np.ndarray] = None,
    absmax: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Packed 4-bit codes of A (uint8, ceil(n / 2) bytes, first element in the high nibble) and absmax.

    blocksize: a power of two from 32 to 4096. out / absmax: arrays to write into.
    """
    A = _float_input(A)
    blocksize = _checks.blocksize_4bit(blocksize)
    quant_type = _checks.quant_type(quant_type)
    packed = _result(out, "out", np.uint8, (_checks.packed_size(A.size),))
    scales = _result(absmax, "absmax", np.float32, (_checks.num_blocks(A.size, blocksize),))
    _quantize(
        A, f"bnb_quantize_4bit_{_suffix(A.dtype)}", _raw(A), scales, packed, blocksize, A.size,
        _native.QUANT_TYPE_CODES[quant_type],
    )
    return packed, scales


def dequantize_4bit(
    packed: np.ndarray,
    absmax: np.ndarray,
    shape: _checks.ShapeLike,
    blocksize: int = 64,
    quant_type: str = "nf4",
    *,
    out_dtype: object = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Values of packed 4-bit codes as an array of `shape`, in out_dtype (float32, the default, or float16)."""
    packed = _codes_input(packed, "packed")
    shape = _checks.shape(shape)
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:
        raise ValueError(f"shape={shape} is empty: there is nothing to dequantize")
    if packed.size != _checks.packed_size(n):
        raise ValueError(
            f"packed has {packed.size} byte(s) but shape {shape} ({n} values, two per byte) needs {_checks.packed_size(n)}"
        )
    blocksize = _checks.blocksize_4bit(blocksize)
    quant_type = _checks.quant_type(quant_type)
    out_dtype = _out_dtype(out_dtype, out)
    absmax = _absmax_input(absmax, n, blocksize)
    result = _result(out, "out", out_dtype, shape)
    _native.library().call(
        f"bnb_dequantize_4bit_{_suffix(out_dtype)}", packed, absmax, _raw(result), blocksize, n,
        _native.QUANT_TYPE_CODES[quant_type],
    )
    return result
