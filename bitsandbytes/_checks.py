"""Argument checks shared by `reference` and `functional`.

Each check raises with a message that names the bad value and says what is allowed.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np

MIN_BLOCKSIZE = 64
MAX_BLOCKSIZE = 4096
ALLOWED_BLOCKSIZES = tuple(2**k for k in range(6, 13))  # 64, 128, ..., 4096
QUANT_TYPES = ("nf4", "fp4")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))

ShapeLike = Union[int, Tuple[int, ...]]


def blocksize(value: object) -> int:
    """A power of two in [64, 4096]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) not in ALLOWED_BLOCKSIZES:
        allowed = ", ".join(str(b) for b in ALLOWED_BLOCKSIZES)
        raise ValueError(f"blocksize={value!r} is not supported: use a power of two from 64 to 4096 ({allowed})")
    return int(value)


def quant_type(value: object) -> str:
    """"nf4" or "fp4"."""
    if value not in QUANT_TYPES:
        raise ValueError(f"quant_type={value!r} is not supported: use 'nf4' or 'fp4'")
    return str(value)


def float_dtype(value: object, name: str) -> np.dtype:
    """float32 or float16, given as a numpy dtype or anything numpy accepts as one."""
    try:
        dtype = np.dtype(value)  # type: ignore[call-overload]
    except TypeError:
        dtype = None
    if dtype is None or dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}={value!r} is not supported: use numpy.float32 or numpy.float16")
    return dtype


def float_input(A: object, name: str = "A") -> np.ndarray:
    """A numpy array of float32 or float16."""
    if not isinstance(A, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float16, got {type(A).__name__}")
    if A.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {A.dtype}: only float32 and float16 are supported")
    return A


def finite(A: np.ndarray, name: str = "A") -> None:
    """No inf and no NaN."""
    bad = ~np.isfinite(A)
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (first: {A.ravel()[first]!r} at flat index {first}): "
            "inf and NaN cannot be quantized"
        )


def uint8_codes(codes: object, name: str) -> np.ndarray:
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        got = codes.dtype if isinstance(codes, np.ndarray) else type(codes).__name__
        raise TypeError(f"{name} must be a numpy.ndarray of uint8, got {got}")
    return codes


def absmax_for(absmax: object, n: int, blocksize: int) -> np.ndarray:
    """absmax holds one finite float32 per block of n values."""
    if not isinstance(absmax, np.ndarray) or absmax.dtype != np.float32:
        got = absmax.dtype if isinstance(absmax, np.ndarray) else type(absmax).__name__
        raise TypeError(f"absmax must be a numpy.ndarray of float32, got {got}")
    expected = num_blocks(n, blocksize)
    if absmax.size != expected:
        raise ValueError(
            f"absmax has {absmax.size} value(s) but {n} value(s) in blocks of {blocksize} "
            f"need {expected}: pass the absmax and blocksize used for quantization"
        )
    finite(absmax, "absmax")
    return absmax


def shape(value: object) -> Tuple[int, ...]:
    """A non-negative int or a tuple of them."""
    dims = (value,) if isinstance(value, (int, np.integer)) else value
    if not isinstance(dims, (tuple, list)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims
    ):
        raise ValueError(f"shape={value!r} is not a valid shape: use a tuple of non-negative ints")
    return tuple(int(d) for d in dims)


def num_blocks(n: int, blocksize: int) -> int:
    return -(-n // blocksize)


def packed_size(n: int) -> int:
    """Bytes holding n 4-bit codes."""
    return -(-n // 2)
