"""Find the GPU runtimes of this machine, with torch when it is installed, else through ctypes.

Nothing here raises: a runtime that cannot be loaded or asked is simply not reported.
torch is imported only when it is installed; without it the CUDA runtime (libcudart) and the
HIP runtime (libamdhip64) are loaded with ctypes and asked for their version and device count.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import site
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from ._loader import Runtime

# Sonames, newest first. The first that loads and sees a device wins, so a runtime too new for
# the installed driver (it reports no device) gives way to an older one.
_CUDART_NAMES = {
    "linux": ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"],
    "win32": ["cudart64_13.dll", "cudart64_12.dll", "cudart64_110.dll"],
}
# Where the pip wheels of the CUDA runtime put it, relative to site-packages.
_CUDART_WHEEL_FILES = {
    "linux": ["nvidia/cu13/lib/libcudart.so.13", "nvidia/cuda_runtime/lib/libcudart.so.12",
              "nvidia/cuda_runtime/lib/libcudart.so.11.0"],
    "win32": ["nvidia/cu13/bin/cudart64_13.dll", "nvidia/cuda_runtime/bin/cudart64_12.dll"],
}
_HIP_NAMES = {
    "linux": ["libamdhip64.so.7", "libamdhip64.so.6", "libamdhip64.so.5", "libamdhip64.so"],
    "win32": ["amdhip64_7.dll", "amdhip64_6.dll", "amdhip64.dll"],
}


def detect_runtimes() -> List[Runtime]:
    """GPU runtimes found here; those with devices come first (see `_loader.choose_library`)."""
    runtimes: List[Runtime] = []
    if importlib.util.find_spec("torch") is not None:
        runtimes += _from_torch()
    if not any(r.devices for r in runtimes):
        for found in (_cuda_via_ctypes(), _hip_via_ctypes()):
            if found is not None:
                runtimes.append(found)
    return sorted(runtimes, key=lambda r: r.devices == 0)


def _from_torch() -> List[Runtime]:
    try:
        import torch  # pyright: ignore[reportMissingImports] - only reached when torch is installed
    except Exception:  # a broken torch installation must not break this package
        return []
    for kind, text in (("rocm", getattr(torch.version, "hip", None)), ("cuda", getattr(torch.version, "cuda", None))):
        version = parse_dotted_version(text)
        if version is not None:
            try:
                devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
            except Exception:
                devices = 0
            return [Runtime(kind, version[0], version[1], devices, f"torch {torch.__version__}")]
    return []


def parse_dotted_version(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'12.8' -> (12, 8); '6.3.42131-fa1d09cbd' -> (6, 3); None for anything else."""
    match = re.match(r"^(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else None


def cuda_version_from_int(value: int) -> Tuple[int, int]:
    """cudaRuntimeGetVersion encodes major * 1000 + minor * 10: 12080 -> (12, 8)."""
    return value // 1000, (value % 1000) // 10


def hip_version_from_int(value: int) -> Tuple[int, int]:
    """hipRuntimeGetVersion encodes major * 10_000_000 + minor * 100_000 + patch: 60342131 -> (6, 3)."""
    return value // 10_000_000, (value // 100_000) % 100


def _cuda_via_ctypes() -> Optional[Runtime]:
    return _probe("cuda", _candidates(_CUDART_NAMES, _CUDART_WHEEL_FILES, []), "cudaRuntimeGetVersion",
                  "cudaGetDeviceCount", cuda_version_from_int)


def _hip_via_ctypes() -> Optional[Runtime]:
    rocm_dirs = [os.environ.get("ROCM_PATH", ""), "/opt/rocm"]
    extra = [str(Path(d) / "lib" / "libamdhip64.so") for d in rocm_dirs if d and sys.platform.startswith("linux")]
    return _probe("rocm", _candidates(_HIP_NAMES, {}, extra), "hipRuntimeGetVersion", "hipGetDeviceCount",
                  hip_version_from_int)


def _candidates(names: dict, wheel_files: dict, extra: List[str]) -> Iterator[str]:
    platform = "win32" if sys.platform.startswith("win") else "linux" if sys.platform.startswith("linux") else ""
    for relative in wheel_files.get(platform, []):
        for directory in _site_packages():
            path = Path(directory) / relative
            if path.is_file():
                yield str(path)
    yield from names.get(platform, [])
    yield from extra


def _site_packages() -> List[str]:
    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    user = getattr(site, "getusersitepackages", lambda: None)()
    return dirs + ([user] if isinstance(user, str) else [])


def _probe(kind: str, candidates: Iterator[str], version_fn: str, count_fn: str,
           decode: Callable[[int], Tuple[int, int]]) -> Optional[Runtime]:
    """The first candidate library that reports a device, else the first that loads at all."""
    first: Optional[Runtime] = None
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
            version, count = ctypes.c_int(0), ctypes.c_int(0)
            if getattr(lib, version_fn)(ctypes.byref(version)) != 0 or version.value <= 0:
                continue
            devices = count.value if getattr(lib, count_fn)(ctypes.byref(count)) == 0 else 0
        except (OSError, AttributeError):
            continue
        major, minor = decode(version.value)
        runtime = Runtime(kind, major, minor, max(devices, 0), Path(candidate).name)
        if runtime.devices > 0:
            return runtime
        first = first or runtime
    return first
