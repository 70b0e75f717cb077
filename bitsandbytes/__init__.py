"""Blockwise 8-bit and 4-bit quantization of numpy arrays on CPU, CUDA and ROCm.

    >>> import numpy as np, bitsandbytes as bnb
    >>> packed, absmax = bnb.functional.quantize_4bit(np.random.rand(1024).astype(np.float32))
    >>> restored = bnb.functional.dequantize_4bit(packed, absmax, shape=(1024,))

`bitsandbytes.native_library()` says which native library is used and why; the environment
variables BNB_CUDA_VERSION / BNB_ROCM_VERSION (e.g. ``130``) pick one explicitly.
`bitsandbytes.cpu_isa()` says which instruction set the CPU kernels use (``BNB_CPU_ISA=scalar``,
``avx2``, ``avx512`` or ``neon`` forces one; every one gives the same results).
`bitsandbytes.reference` computes the same results in plain numpy. `bitsandbytes.build_info()`
says which version and commit an installed pre-release wheel was built from.
"""

from __future__ import annotations

from . import functional, reference
from ._loader import LibraryChoice
from ._native import cpu_isa, native_library
from ._version import build_info, package_version
from .errors import LibraryFallbackWarning, LibraryLoadError, LibraryNotFoundError, NativeError, NativeValueError

__version__ = package_version()

__all__ = [
    "LibraryChoice",
    "LibraryFallbackWarning",
    "LibraryLoadError",
    "LibraryNotFoundError",
    "NativeError",
    "NativeValueError",
    "__version__",
    "build_info",
    "cpu_isa",
    "functional",
    "native_library",
    "reference",
]
