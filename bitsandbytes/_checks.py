"""Argument checks shared by `reference` and `functional`.

Each check raises with a message that names the bad value and says what is allowed.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np

MIN_BLOCKSIZE = 64
MIN_BLOCKSIZE_4BIT = 32
MAX_BLOCKSIZE = 4096
ALLOWED_BLOCKSIZES = tuple(2**k for k in range(6, 13))  # 64, 128, ..., 4096 (8-bit)
ALLOWED_BLOCKSIZES_4BIT = (MIN_BLOCKSIZE_4BIT, *ALLOWED_BLOCKSIZES)  # 32, 64, ..., 4096
CODE_SIZE = 256
QUANT_TYPES = ("nf4", "fp4")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))

ShapeLike = Union[int, Tuple[int, ...]]


def blocksize(value: object, allowed_sizes: Tuple[int, ...] = ALLOWED_BLOCKSIZES) -> int:
    """A power of two in [64, 4096] (8-bit), or one of allowed_sizes ([32, 4096] for 4-bit)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) not in allowed_sizes:
        allowed = ", ".join(str(b) for b in allowed_sizes)
        raise ValueError(
            f"blocksize={value!r} is not supported: use a power of two from {allowed_sizes[0]} to {allowed_sizes[-1]} ({allowed})"
        )
    return int(value)


def blocksize_4bit(value: object) -> int:
    """A power of two in [32, 4096]."""
    return blocksize(value, ALLOWED_BLOCKSIZES_4BIT)


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
    if np.isfinite(A).all():  # the common case, without the temporary arrays below
        return
    bad = ~np.isfinite(A)
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (first: {A.ravel()[first]!r} at flat index {first}): "
            "inf and NaN cannot be quantized"
        )


def code_map(code: object, name: str = "code", *, sorted_ascending: bool = True) -> np.ndarray:
    """An 8-bit code map: 256 finite float32 values, sorted ascending when it is used to quantize
    (equal neighbours are allowed). Returned C-contiguous."""
    if not isinstance(code, np.ndarray) or code.dtype != np.float32:
        got = code.dtype if isinstance(code, np.ndarray) else type(code).__name__
        raise TypeError(f"{name} must be a numpy.ndarray of {CODE_SIZE} float32 values, got {got}")
    if code.shape != (CODE_SIZE,):
        raise ValueError(f"{name} has shape {code.shape}: an 8-bit code map holds {CODE_SIZE} values, shape ({CODE_SIZE},)")
    bad = ~np.isfinite(code)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{first}] is {float(code[first])!r}: a code map holds finite values")
    if sorted_ascending:
        falling = np.flatnonzero(code[1:] < code[:-1])
        if falling.size:
            i = int(falling[0]) + 1
            raise ValueError(
                f"{name} is not sorted ascending: {name}[{i}] = {float(code[i])!r} is below {name}[{i - 1}] = {float(code[i - 1])!r}; "
                f"pass numpy.sort({name})"
            )
    return np.ascontiguousarray(code)


def output(array: object, name: str, dtype: np.dtype, shape: Tuple[int, ...]) -> np.ndarray:
    """A writeable, C-contiguous numpy array of dtype and shape, to write results into."""
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise TypeError(f"{name} must be a numpy.ndarray of {dtype}, got {got}")
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, but the result has shape {shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (strides {array.strides}): pass a C-contiguous array")
    if not array.flags.writeable:
        raise ValueError(f"{name} is read-only: pass a writeable array")
    return array


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
