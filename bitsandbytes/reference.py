"""The numerics of docs/quantization.md in plain numpy.

This module is the executable form of the specification: every native backend must give the
same codes bit for bit and the same dequantized values. It is written for clarity, vectorised
with numpy, and does every computation in float32 exactly as the specification states.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Optional, Tuple

import numpy as np

from . import _checks

# 4-bit code books (docs/quantization.md, "4-bit blockwise").
NF4 = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)
"""NF4[q] is the value of code q (ascending)."""

FP4_MAGNITUDES = np.array(
    [float(Fraction(n, d)) for n, d in [(0, 1), (1, 192), (2, 3), (1, 1), (1, 3), (1, 2), (1, 6), (1, 4)]],
    dtype=np.float32,
)
"""FP4_MAGNITUDES[q & 7] is the magnitude of code q; bit 3 (value 8) is the sign."""

FP4_SIGN = np.uint8(8)
_FP4_CODES_ASCENDING = np.argsort(FP4_MAGNITUDES, kind="stable").astype(np.uint8)  # 0, 1, 6, 7, 4, 5, 2, 3


def create_dynamic_map(signed: bool = True) -> np.ndarray:
    """An 8-bit dynamic map: 256 float32 values, strictly increasing.

    signed=True (the default map): from -1 to 1, 7 exponent bits and a sign. signed=False: from 0
    to 1 with twice as many values per decade (the map of non-negative optimizer state): for
    i = 0..6, the 2**(i + 1) midpoints m of 2**(i + 1) + 1 boundaries in [0.1, 1], as
    m * 10**(i - 6); then 0 and 1. Computed in float64, rounded once to float32.
    """
    values = [0.0, 1.0]
    for i in range(7):
        boundaries = np.linspace(0.1, 1.0, (2**i if signed else 2 ** (i + 1)) + 1)
        midpoints = (boundaries[:-1] + boundaries[1:]) / 2
        scale = 10.0 ** (i - 6)
        values.extend(midpoints * scale)
        if signed:
            values.extend(-midpoints * scale)
    code = np.sort(np.array(values, dtype=np.float64)).astype(np.float32)
    assert code.size == 256 and np.all(np.diff(code) > 0)
    return code


def thresholds(code: np.ndarray) -> np.ndarray:
    """Decision thresholds between neighbouring codes: (c[i] + c[i+1]) * 0.5 in float32."""
    code = np.asarray(code, dtype=np.float32)
    with np.errstate(over="ignore"):  # neighbours beyond half of float32's range add up to +-inf, like in C
        return (code[:-1] + code[1:]) * np.float32(0.5)


def nearest(code: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Position of the nearest code: the number of thresholds strictly below v (ties go low)."""
    return np.searchsorted(thresholds(code), v, side="left")


# ----------------------------------------------------------------------------------------------
# Blocks


def _as_float32(A: np.ndarray) -> np.ndarray:
    """Checked, flattened float32 copy of the input (float16 converts exactly)."""
    _checks.float_input(A)
    _checks.finite(A)
    return np.asarray(A, dtype=np.float32).ravel()


def _normalise(x: np.ndarray, blocksize: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split x into blocks; return v = x / absmax (0 where absmax is 0) and absmax per block."""
    n = x.size
    blocks = np.zeros(_checks.num_blocks(n, blocksize) * blocksize, dtype=np.float32)
    blocks[:n] = x
    blocks = blocks.reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1, initial=np.float32(0))
    divisor = np.where(absmax == 0, np.float32(1), absmax)
    v = blocks / divisor[:, None]
    v[absmax == 0] = 0
    return v.ravel()[:n], absmax.astype(np.float32)


def _round_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round float32 values to dtype (nearest-even); beyond float16's range that gives +-inf."""
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def _per_element(absmax: np.ndarray, n: int, blocksize: int) -> np.ndarray:
    return np.repeat(np.asarray(absmax, dtype=np.float32).ravel(), blocksize)[:n]


# ----------------------------------------------------------------------------------------------
# 8-bit blockwise


def quantize_blockwise(
    A: np.ndarray, code: Optional[np.ndarray] = None, blocksize: int = 4096
) -> Tuple[np.ndarray, np.ndarray]:
    """8-bit codes (uint8, A's shape) and absmax (float32, one per block); code: a map of 256
    float32 values sorted ascending (default: the signed dynamic map)."""
    blocksize = _checks.blocksize(blocksize)
    code = create_dynamic_map() if code is None else _checks.code_map(code)
    v, absmax = _normalise(_as_float32(A), blocksize)
    codes = nearest(code, v).astype(np.uint8)
    return codes.reshape(A.shape), absmax


def dequantize_blockwise(
    codes: np.ndarray,
    absmax: np.ndarray,
    code: Optional[np.ndarray] = None,
    blocksize: int = 4096,
    out_dtype: object = np.float32,
) -> np.ndarray:
    """code[q] * absmax[block] in float32, then rounded to out_dtype; codes' shape."""
    blocksize = _checks.blocksize(blocksize)
    out_dtype = _checks.float_dtype(out_dtype, "out_dtype")
    _checks.uint8_codes(codes, "codes")
    _checks.absmax_for(absmax, codes.size, blocksize)
    code = create_dynamic_map() if code is None else _checks.code_map(code, sorted_ascending=False)
    out = code[codes.ravel()] * _per_element(absmax, codes.size, blocksize)
    return _round_to(out, out_dtype).reshape(codes.shape)


# ----------------------------------------------------------------------------------------------
# 4-bit blockwise


def _pack(q: np.ndarray) -> np.ndarray:
    """Two codes per byte: element 2j in the high nibble, 2j+1 in the low nibble (0 if absent)."""
    padded = np.zeros(_checks.packed_size(q.size) * 2, dtype=np.uint8)
    padded[: q.size] = q
    return (padded[0::2] << 4) | padded[1::2]


def _unpack(packed: np.ndarray, n: int) -> np.ndarray:
    flat = packed.ravel()
    q = np.empty(flat.size * 2, dtype=np.uint8)
    q[0::2] = flat >> 4
    q[1::2] = flat & 0x0F
    return q[:n]


def quantize_4bit(A: np.ndarray, blocksize: int = 64, quant_type: str = "nf4") -> Tuple[np.ndarray, np.ndarray]:
    """Packed 4-bit codes (uint8, ceil(n/2) bytes) and absmax (float32, one per block)."""
    blocksize = _checks.blocksize_4bit(blocksize)
    quant_type = _checks.quant_type(quant_type)
    v, absmax = _normalise(_as_float32(A), blocksize)
    if quant_type == "nf4":
        q = nearest(NF4, v).astype(np.uint8)
    else:
        sign = np.where(v < 0, FP4_SIGN, np.uint8(0))
        q = _FP4_CODES_ASCENDING[nearest(np.sort(FP4_MAGNITUDES), np.abs(v))] | sign
    return _pack(q), absmax


def dequantize_4bit(
    packed: np.ndarray,
    absmax: np.ndarray,
    shape: _checks.ShapeLike,
    blocksize: int = 64,
    quant_type: str = "nf4",
    out_dtype: object = np.float32,
) -> np.ndarray:
    """Values of the packed codes times absmax of their block, in float32, then out_dtype."""
    blocksize = _checks.blocksize_4bit(blocksize)
    quant_type = _checks.quant_type(quant_type)
    out_dtype = _checks.float_dtype(out_dtype, "out_dtype")
    shape = _checks.shape(shape)
    n = int(np.prod(shape, dtype=np.int64))
    _checks.uint8_codes(packed, "packed")
    if packed.size != _checks.packed_size(n):
        raise ValueError(f"packed has {packed.size} byte(s) but shape {shape} needs {_checks.packed_size(n)}")
    _checks.absmax_for(absmax, n, blocksize)
    q = _unpack(packed, n)
    scale = _per_element(absmax, n, blocksize)
    if quant_type == "nf4":
        out = NF4[q] * scale
    else:
        magnitude = FP4_MAGNITUDES[q & 7] * scale
        out = np.where(q & FP4_SIGN, -magnitude, magnitude)
    return _round_to(out, out_dtype).reshape(shape)
