"""Blockwise 8-bit and 4-bit quantization, computed by the native library.

Same results as `bitsandbytes.reference` (bit for bit), much faster. Arguments are checked here,
before the native call, so a mistake gives a message naming the bad value and what is allowed.
Inputs must be C-contiguous numpy arrays; float32 and float16 are supported.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from . import _checks, _native, reference

_DYNAMIC_MAP = reference.create_dynamic_map()


def _float_input(A: object) -> np.ndarray:
    A = _checks.float_input(A)
    if A.size == 0:
        raise ValueError(f"A is empty (shape {A.shape}): there is nothing to quantize")
    _contiguous(A, "A")
    _checks.finite(A)
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


def _suffix(dtype: np.dtype) -> str:
    return "fp16" if dtype == np.float16 else "fp32"


def _raw(array: np.ndarray) -> np.ndarray:
    """float16 crosses the C ABI as raw 16-bit patterns."""
    return array.view(np.uint16) if array.dtype == np.float16 else array


def quantize_blockwise(A: np.ndarray, blocksize: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
    """8-bit codes of A (uint8, A's shape) with the dynamic map, and absmax (float32, one per block)."""
    A = _float_input(A)
    blocksize = _checks.blocksize(blocksize)
    codes = np.empty(A.shape, dtype=np.uint8)
    absmax = np.empty(_checks.num_blocks(A.size, blocksize), dtype=np.float32)
    _native.library().call(
        f"bnb_quantize_blockwise_{_suffix(A.dtype)}", _DYNAMIC_MAP, _raw(A), absmax, codes, blocksize, A.size
    )
    return codes, absmax


def dequantize_blockwise(
    codes: np.ndarray, absmax: np.ndarray, blocksize: int = 4096, *, out_dtype: object = np.float32
) -> np.ndarray:
    """Values of 8-bit codes (codes' shape), in out_dtype (float32 or float16)."""
    codes = _codes_input(codes, "codes")
    if codes.size == 0:
        raise ValueError(f"codes is empty (shape {codes.shape}): there is nothing to dequantize")
    blocksize = _checks.blocksize(blocksize)
    out_dtype = _checks.float_dtype(out_dtype, "out_dtype")
    absmax = _absmax_input(absmax, codes.size, blocksize)
    out = np.empty(codes.shape, dtype=out_dtype)
    _native.library().call(
        f"bnb_dequantize_blockwise_{_suffix(out_dtype)}", _DYNAMIC_MAP, codes, absmax, _raw(out), blocksize, codes.size
    )
    return out


def quantize_4bit(A: np.ndarray, blocksize: int = 64, quant_type: str = "nf4") -> Tuple[np.ndarray, np.ndarray]:
    """Packed 4-bit codes of A (uint8, ceil(n / 2) bytes, first element in the high nibble) and absmax."""
    A = _float_input(A)
    blocksize = _checks.blocksize(blocksize)
    quant_type = _checks.quant_type(quant_type)
    packed = np.empty(_checks.packed_size(A.size), dtype=np.uint8)
    absmax = np.empty(_checks.num_blocks(A.size, blocksize), dtype=np.float32)
    _native.library().call(
        f"bnb_quantize_4bit_{_suffix(A.dtype)}", _raw(A), absmax, packed, blocksize, A.size,
        _native.QUANT_TYPE_CODES[quant_type],
    )
    return packed, absmax


def dequantize_4bit(
    packed: np.ndarray,
    absmax: np.ndarray,
    shape: _checks.ShapeLike,
    blocksize: int = 64,
    quant_type: str = "nf4",
    *,
    out_dtype: object = np.float32,
) -> np.ndarray:
    """Values of packed 4-bit codes as an array of `shape`, in out_dtype (float32 or float16)."""
    packed = _codes_input(packed, "packed")
    shape = _checks.shape(shape)
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:
        raise ValueError(f"shape={shape} is empty: there is nothing to dequantize")
    if packed.size != _checks.packed_size(n):
        raise ValueError(
            f"packed has {packed.size} byte(s) but shape {shape} ({n} values, two per byte) needs {_checks.packed_size(n)}"
        )
    blocksize = _checks.blocksize(blocksize)
    quant_type = _checks.quant_type(quant_type)
    out_dtype = _checks.float_dtype(out_dtype, "out_dtype")
    absmax = _absmax_input(absmax, n, blocksize)
    out = np.empty(shape, dtype=out_dtype)
    _native.library().call(
        f"bnb_dequantize_4bit_{_suffix(out_dtype)}", packed, absmax, _raw(out), blocksize, n,
        _native.QUANT_TYPE_CODES[quant_type],
    )
    return out
