"""ctypes bindings of csrc/bitsandbytes.h, and the library the package uses, loaded on first need.

Importing the package loads nothing: `native_library()` chooses the file on its first call (see
`_loader`), and `library()` loads it on the first call that needs native code.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from . import _detect, _loader
from .errors import LibraryLoadError, NativeError, NativeValueError

PACKAGE_DIR = Path(__file__).resolve().parent

STATUS_NAMES = {
    0: "BNB_OK",
    1: "BNB_ERROR_INVALID_BLOCKSIZE",
    2: "BNB_ERROR_INVALID_QUANT_TYPE",
    3: "BNB_ERROR_INVALID_ARGUMENT",
    4: "BNB_ERROR_NONFINITE",
    5: "BNB_ERROR_NOT_AVAILABLE",
    6: "BNB_ERROR_RUNTIME",
}
_ARGUMENT_ERRORS = {1, 2, 3, 4}  # raised as NativeValueError (also a ValueError)
QUANT_TYPE_CODES = {"fp4": 1, "nf4": 2}

_P, _INT, _N = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
_QUANTIZATION_FUNCTIONS = {
    # name: argument types (every one returns an int status)
    "bnb_quantize_blockwise_fp32": (_P, _P, _P, _P, _INT, _N),
    "bnb_quantize_blockwise_fp16": (_P, _P, _P, _P, _INT, _N),
    "bnb_dequantize_blockwise_fp32": (_P, _P, _P, _P, _INT, _N),
    "bnb_dequantize_blockwise_fp16": (_P, _P, _P, _P, _INT, _N),
    "bnb_quantize_4bit_fp32": (_P, _P, _P, _INT, _N, _INT),
    "bnb_quantize_4bit_fp16": (_P, _P, _P, _INT, _N, _INT),
    "bnb_dequantize_4bit_fp32": (_P, _P, _P, _INT, _N, _INT),
    "bnb_dequantize_4bit_fp16": (_P, _P, _P, _INT, _N, _INT),
}
_INFORMATION_FUNCTIONS = {
    "bnb_backend": ctypes.c_char_p,
    "bnb_version": ctypes.c_char_p,
    "bnb_runtime_version": ctypes.c_int,
    "bnb_device_count": ctypes.c_int,
    "bnb_last_error": ctypes.c_char_p,
    "bnb_cpu_isa": ctypes.c_char_p,
    "bnb_cpu_threads": ctypes.c_int,
}
_SETTING_FUNCTIONS = {
    # name: argument types (every one returns an int status)
    "bnb_cpu_set_isa": (ctypes.c_char_p,),
    "bnb_cpu_set_threads": (_INT,),
}


class NativeLibrary:
    """One loaded library file with the typed functions of the C ABI."""

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path)
        try:
            self._cdll = ctypes.CDLL(str(self.path))
        except OSError as error:
            raise LibraryLoadError(
                f"Could not load {self.path}: {error}. A GPU library needs its runtime (libcudart / libamdhip64) "
                "to be installed; set BNB_CUDA_VERSION / BNB_ROCM_VERSION to pick another packaged library."
            ) from error
        for name, restype in _INFORMATION_FUNCTIONS.items():
            function = getattr(self._cdll, name)
            function.argtypes, function.restype = [], restype
        for name, argtypes in {**_QUANTIZATION_FUNCTIONS, **_SETTING_FUNCTIONS}.items():
            function = getattr(self._cdll, name)
            function.argtypes, function.restype = list(argtypes), ctypes.c_int

    def backend(self) -> str:
        return self._cdll.bnb_backend().decode()

    def version(self) -> str:
        return self._cdll.bnb_version().decode()

    def runtime_version(self) -> int:
        return self._cdll.bnb_runtime_version()

    def device_count(self) -> int:
        return self._cdll.bnb_device_count()

    def last_error(self) -> str:
        return (self._cdll.bnb_last_error() or b"").decode(errors="replace")

    def cpu_isa(self) -> str:
        """Instruction set of the CPU kernels ("avx512", "avx2", "neon", "scalar"); "" on GPU backends."""
        return (self._cdll.bnb_cpu_isa() or b"").decode()

    def set_cpu_isa(self, isa: Optional[str]) -> None:
        """Run the CPU kernels of `isa` from now on (None or "auto": the best this CPU runs)."""
        self.call("bnb_cpu_set_isa", None if isa is None else isa.encode())

    def cpu_threads(self) -> int:
        """The most threads a CPU call uses (BNB_NOT_AVAILABLE, -1, on GPU backends)."""
        return self._cdll.bnb_cpu_threads()

    def set_cpu_threads(self, threads: int) -> None:
        """At most `threads` threads per CPU call; 0: one per CPU the process may use (the default)."""
        self.call("bnb_cpu_set_threads", threads)

    def status(self, name: str, *args: object) -> int:
        """Call a quantization function; numpy arrays are passed as pointers. Returns the status."""
        converted = [a.ctypes.data_as(_P) if isinstance(a, np.ndarray) else a for a in args]
        return getattr(self._cdll, name)(*converted)

    def call(self, name: str, *args: object) -> None:
        """Like `status`, but raises NativeError / NativeValueError unless the status is BNB_OK."""
        self.check(name, self.status(name, *args))

    def check(self, name: str, status: int) -> None:
        """Raises NativeError / NativeValueError for the status `name` returned, unless it is BNB_OK."""
        if status != 0:
            error = NativeValueError if status in _ARGUMENT_ERRORS else NativeError
            raise error(name, status, STATUS_NAMES.get(status, "unknown status"), self.last_error())


_lock = threading.Lock()
_choice: Optional[_loader.LibraryChoice] = None
_loaded: Optional[NativeLibrary] = None


def native_library() -> _loader.LibraryChoice:
    """The native library the package uses (or will load on first need): path, backend and reason.

    Raises LibraryNotFoundError when no packaged library fits, and ValueError for a malformed
    BNB_CUDA_VERSION / BNB_ROCM_VERSION.
    """
    global _choice
    with _lock:
        if _choice is None:
            names = _loader.list_packaged(PACKAGE_DIR)
            runtimes = _detect.detect_runtimes() if _loader.has_gpu_library(names) else []
            _choice = _loader.choose_library(PACKAGE_DIR, names, runtimes, os.environ)
        return _choice


def cpu_isa() -> str:
    """Instruction set of the native CPU kernels in use: "avx512", "avx2" or "scalar" on x86_64,
    "neon" or "scalar" on aarch64; "" with a GPU library. Chosen for this CPU at the first call,
    unless the environment variable BNB_CPU_ISA names one (loads the library)."""
    return library().cpu_isa()


def library() -> NativeLibrary:
    """The loaded native library, chosen and loaded on the first call."""
    global _loaded
    choice = native_library()
    with _lock:
        if _loaded is None:
            _loaded = NativeLibrary(choice.path)
        return _loaded
