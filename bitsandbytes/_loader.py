"""Which packaged native library to load.

`choose_library` is a pure function of the packaged file names, the detected GPU runtimes and the
environment, so every rule below is unit-tested without a GPU. Detecting the runtimes is the job
of `_detect`; loading the file is the job of `_native`.

Rules, in order:
1. ``BNB_CUDA_VERSION`` / ``BNB_ROCM_VERSION`` (digits only, e.g. ``130`` for CUDA 13.0) load
   exactly that packaged library, whatever was detected.
2. Without GPU libraries in the package, the CPU library.
3. The first detected runtime with at least one device: the library built for its exact version;
   else the newest one of the same major that is not newer than the runtime; else the oldest
   newer one of the same major (both with a LibraryFallbackWarning). If the package has
   libraries of that GPU kind but none for its major, that is an error: never a cross-major
   fallback. If it has none of that kind at all, the CPU library.
4. No runtime with a device: the CPU library.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from .errors import LibraryFallbackWarning, LibraryNotFoundError

GPU_KINDS = ("cuda", "rocm")
OVERRIDE_VARIABLES = {"cuda": "BNB_CUDA_VERSION", "rocm": "BNB_ROCM_VERSION"}
VISIBILITY_VARIABLES = {"cuda": "CUDA_VISIBLE_DEVICES", "rocm": "HIP_VISIBLE_DEVICES"}
KIND_NAMES = {"cuda": "CUDA", "rocm": "ROCm"}

_LIBRARY_NAME = re.compile(r"^libbitsandbytes_(?P<kind>cpu|cuda|rocm|xpu)(?P<digits>[0-9]*)\.(?:so|dylib|dll)$")


@dataclass(frozen=True)
class Runtime:
    """A GPU runtime found on this machine."""

    kind: str  # "cuda" or "rocm"
    major: int
    minor: int
    devices: int
    source: str  # where it was found, e.g. "libcudart.so.13" or "torch"

    def describe(self) -> str:
        devices = f"{self.devices} device" + ("" if self.devices == 1 else "s")
        return f"the {KIND_NAMES[self.kind]} {self.major}.{self.minor} runtime ({self.source}, {devices})"


@dataclass(frozen=True)
class LibraryChoice:
    """The native library the package loads, and why (returned by `bitsandbytes.native_library()`)."""

    path: Path
    backend: str  # "cpu", "cuda" or "rocm"
    reason: str


@dataclass(frozen=True)
class _Packaged:
    """A library file of the package, described by its name."""

    name: str
    kind: str
    version: Optional[Tuple[int, int]]  # (major, minor) of cuda/rocm libraries

    @property
    def major(self) -> int:
        return self.sort_key[0]

    @property
    def sort_key(self) -> Tuple[int, int]:
        """(major, minor) of a GPU library; (-1, -1) for the others."""
        return self.version or (-1, -1)

    @property
    def digits(self) -> str:
        return self.name.split(".")[0][len("libbitsandbytes_") + len(self.kind):]


def library_suffix(platform: str = sys.platform) -> str:
    if platform.startswith("win"):
        return ".dll"
    if platform == "darwin":
        return ".dylib"
    return ".so"


def list_packaged(directory: Path) -> List[str]:
    """Names of the native libraries for this platform in a package directory, sorted."""
    suffix = library_suffix()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith(suffix) and _LIBRARY_NAME.match(n))


def _parse(name: str) -> Optional[_Packaged]:
    match = _LIBRARY_NAME.match(name)
    if match is None:
        return None
    kind, digits = match["kind"], match["digits"]
    if kind in GPU_KINDS:
        if len(digits) <= MAJOR_DIGITS[kind]:
            return None
        return _Packaged(name, kind, version_from_digits(kind, digits))
    if kind == "cpu" and digits:
        return None
    return _Packaged(name, kind, None)


# How many leading digits of a library name are the major version: CUDA majors have two digits
# (11, 12, 13), ROCm majors one (6, 7), so cuda130 is 13.0 and rocm714 is 7.14.
MAJOR_DIGITS = {"cuda": 2, "rocm": 1}


def version_from_digits(kind: str, digits: str) -> Tuple[int, int]:
    """('cuda', '130') -> (13, 0); ('rocm', '72') -> (7, 2); ('rocm', '714') -> (7, 14)."""
    width = MAJOR_DIGITS[kind]
    return int(digits[:width]), int(digits[width:])


def has_gpu_library(names: Sequence[str]) -> bool:
    return any(p.kind in GPU_KINDS for p in map(_parse, names) if p is not None)


def choose_library(
    package_dir: Path, names: Sequence[str], runtimes: Sequence[Runtime], environ: Mapping[str, str]
) -> LibraryChoice:
    """Pick one of the packaged libraries `names` (files in `package_dir`); see the module docstring."""
    packaged = [p for p in map(_parse, names) if p is not None]

    def chosen(lib: _Packaged, reason: str) -> LibraryChoice:
        return LibraryChoice(Path(package_dir) / lib.name, lib.kind, reason)

    def listing() -> str:
        files = ", ".join(p.name for p in packaged) or "none"
        return f"Packaged libraries in {package_dir}: {files}."

    override = _read_override(environ)
    if override is not None:
        kind, digits = override
        variable = OVERRIDE_VARIABLES[kind]
        for lib in packaged:
            if lib.kind == kind and lib.digits == digits:
                return chosen(lib, f"{variable}={digits} selects it.")
        raise LibraryNotFoundError(
            f"{variable}={digits} asks for libbitsandbytes_{kind}{digits}, which is not packaged. {listing()} "
            f"Set {variable} to the version of one of them, or unset it to choose automatically."
        )

    if not packaged:
        raise LibraryNotFoundError(
            f"No native library (libbitsandbytes_*{library_suffix()}) is packaged in {package_dir}. "
            "Install a bitsandbytes wheel, or build the CPU library: pip install . from a checkout."
        )
    cpu = next((lib for lib in packaged if lib.kind == "cpu"), None)

    def cpu_or_error(reason: str) -> LibraryChoice:
        if cpu is None:
            raise LibraryNotFoundError(f"No CPU library is packaged and {reason[0].lower()}{reason[1:]} {listing()}")
        return chosen(cpu, reason)

    if not any(lib.kind in GPU_KINDS for lib in packaged):
        return cpu_or_error("No CUDA or ROCm library is packaged.")

    runtime = next((r for r in runtimes if r.devices > 0), None)
    if runtime is None:
        checked = "; ".join(r.describe() for r in runtimes)
        return cpu_or_error(
            f"No GPU runtime with a device was found ({checked})." if checked else "No CUDA or ROCm runtime was found."
        )

    same_kind = [lib for lib in packaged if lib.kind == runtime.kind and lib.version is not None]
    if not same_kind:
        return cpu_or_error(f"Found {runtime.describe()}, but no {KIND_NAMES[runtime.kind]} library is packaged.")

    wanted = (runtime.major, runtime.minor)
    for lib in same_kind:
        if lib.version == wanted:
            return chosen(lib, f"It matches {runtime.describe()}.")

    same_major = sorted((lib for lib in same_kind if lib.major == runtime.major), key=lambda lib: lib.sort_key)
    if not same_major:
        variable = OVERRIDE_VARIABLES[runtime.kind]
        versions = ", ".join(lib.digits for lib in same_kind)
        raise LibraryNotFoundError(
            f"No packaged library fits {runtime.describe()}: libraries of another major version are never used. "
            f"{listing()} Install a bitsandbytes build for {KIND_NAMES[runtime.kind]} {runtime.major}, "
            f"set {variable} to one of {versions} to load a packaged library anyway, "
            f"or hide the GPUs ({VISIBILITY_VARIABLES[runtime.kind]}=) to use the CPU library."
        )
    older = [lib for lib in same_major if lib.sort_key < wanted]
    lib = older[-1] if older else same_major[0]
    relation = "the newest one older than the runtime" if older else "the oldest one newer than the runtime"
    reason = (
        f"Found {runtime.describe()} but no library built for it; {lib.name} is {relation} "
        f"among the packaged {KIND_NAMES[runtime.kind]} {runtime.major} libraries."
    )
    warnings.warn(
        f"{reason} Set {OVERRIDE_VARIABLES[runtime.kind]} to choose another one. {listing()}",
        LibraryFallbackWarning,
        stacklevel=2,
    )
    return chosen(lib, reason)


def _read_override(environ: Mapping[str, str]) -> Optional[Tuple[str, str]]:
    """(kind, digits) from BNB_CUDA_VERSION / BNB_ROCM_VERSION, or None when neither is set."""
    given = [(kind, var, environ[var]) for kind, var in OVERRIDE_VARIABLES.items() if var in environ]
    if len(given) > 1:
        both = " and ".join(f"{var}={value!r}" for _, var, value in given)
        raise ValueError(f"{both} are both set: set at most one of them")
    if not given:
        return None
    kind, variable, value = given[0]
    if not re.fullmatch(r"[0-9]{2,}", value):
        example = "130 for CUDA 13.0" if kind == "cuda" else "72 for ROCm 7.2"
        raise ValueError(
            f"{variable}={value!r} is not valid: give the major and minor version as digits only, "
            f"without a dot (e.g. {variable}={example})"
        )
    return kind, value
