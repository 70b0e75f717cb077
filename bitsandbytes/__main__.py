"""`python -m bitsandbytes`: which native library is used and why, then a quantization round trip."""

from __future__ import annotations

import sys

import numpy as np

import bitsandbytes
from bitsandbytes import _native, functional


def main() -> int:
    choice = bitsandbytes.native_library()
    library = _native.library()
    commit = bitsandbytes.build_info().get("commit")
    print(f"bitsandbytes {bitsandbytes.__version__}" + (f" (commit {commit})" if commit else ""))
    print(f"library: {choice.path}")
    print(f"backend: {library.backend()} (library version {library.version()})")
    print(f"reason:  {choice.reason}")
    if library.backend() == "cpu":
        print(f"kernels: {library.cpu_isa() or 'none (see BNB_CPU_ISA)'}, up to {library.cpu_threads()} thread(s)")

    values = np.random.default_rng(0).standard_normal(1 << 16).astype(np.float32)
    codes, absmax = functional.quantize_blockwise(values, blocksize=256)
    error_8bit = np.abs(functional.dequantize_blockwise(codes, absmax, blocksize=256) - values).max()
    packed, absmax = functional.quantize_4bit(values, blocksize=64, quant_type="nf4")
    error_4bit = np.abs(functional.dequantize_4bit(packed, absmax, values.shape, blocksize=64) - values).max()
    print(f"round trip of {values.size} normal values: max error 8-bit {error_8bit:.5f}, 4-bit nf4 {error_4bit:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
