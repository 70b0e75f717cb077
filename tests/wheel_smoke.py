"""Smoke test of an installed bitsandbytes wheel: run by the pipeline's try-wheels step.

It runs in a clean environment with only the wheel (and numpy) installed, from an empty folder, so the
package and its native library come from the wheel. The native library's 8-bit and 4-bit round trips
must give exactly the codes and values of the numpy reference (bitsandbytes.reference). Exits 0 when
they do; prints what differs otherwise.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import bitsandbytes
from bitsandbytes import functional as F
from bitsandbytes import reference as R


def main() -> int:
    rng = np.random.default_rng(20261204)
    x = (rng.standard_normal(3 * 256 + 77) * 3).astype(np.float32)
    x[5] = 0.0
    problems = []

    codes, absmax = F.quantize_blockwise(x, blocksize=256)
    ref_codes, ref_absmax = R.quantize_blockwise(x, blocksize=256)
    if not (np.array_equal(codes, ref_codes) and np.array_equal(absmax, ref_absmax)):
        problems.append("8-bit codes differ from the reference")
    if not np.array_equal(F.dequantize_blockwise(codes, absmax, blocksize=256), R.dequantize_blockwise(ref_codes, ref_absmax, blocksize=256)):
        problems.append("8-bit values differ from the reference")
    for quant_type in ("nf4", "fp4"):
        packed, absmax4 = F.quantize_4bit(x, blocksize=64, quant_type=quant_type)
        ref_packed, ref_absmax4 = R.quantize_4bit(x, blocksize=64, quant_type=quant_type)
        if not (np.array_equal(packed, ref_packed) and np.array_equal(absmax4, ref_absmax4)):
            problems.append(f"{quant_type} codes differ from the reference")
        values = F.dequantize_4bit(packed, absmax4, x.shape, blocksize=64, quant_type=quant_type)
        if not np.array_equal(values, R.dequantize_4bit(ref_packed, ref_absmax4, x.shape, blocksize=64, quant_type=quant_type)):
            problems.append(f"{quant_type} values differ from the reference")

    library = bitsandbytes.native_library().path
    installed = os.path.realpath(sys.prefix)
    if os.path.commonpath([os.path.realpath(library), installed]) != installed:
        problems.append(f"the library {library} is not the one installed into {sys.prefix}")
    library = library.name
    if problems:
        print(f"bitsandbytes {bitsandbytes.__version__} ({library}): " + "; ".join(problems))
        return 1
    print(f"bitsandbytes {bitsandbytes.__version__}: round trips equal the reference ({library})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
