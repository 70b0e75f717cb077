"""What a tree's build can make, read from its files: which COMPUTE_BACKEND values its CMake knows,
which CUDA versions its CMake refuses, what it expects of a Windows compiler, and whether its PEP 517
backend runs CMake itself. Pure: texts in, facts out; nothing is run.

Glossary
- era: the shape of a tree at one point of its history. bitsandbytes' own history has three that
  matter here: 0.45 (backends cpu, cuda, mps; CUDA 11.0 to 12.x), 0.47 (adds hip; CUDA 11.4 to 12.x;
  setup.py always runs CMake), and later trees (adds xpu; CUDA up to 13.x; `BNB_SKIP_CMAKE`).
  The pipeline never names eras: it reads the facts below, so any tree gets the plan its CMake fits.
- backends: the values of `set_property(CACHE COMPUTE_BACKEND PROPERTY STRINGS ...)`, else the
  `COMPUTE_BACKEND STREQUAL "..."` branches plus cpu (the default). A value the CMake does not know
  may build something else quietly (0.45's `else()` builds the CPU library for any value), so the
  plan drops such jobs instead of running them.
- CUDA limits: an `if`/`elseif` on `CMAKE_CUDA_COMPILER_VERSION` (or `CUDAToolkit_VERSION`,
  `CUDA_VERSION`) with `VERSION_LESS`/`VERSION_GREATER_EQUAL`/... whose first statement is
  `message(FATAL_ERROR ...)`: the versions that branch takes are refused.
- Windows compiler: a tree built with MinGW-style clang (zig) on Windows differs from what its CMake
  was written for when it sets CMAKE_WINDOWS_EXPORT_ALL_SYMBOLS (MinGW then exports CRT symbols
  such as `_CRT_INIT` and `atexit`), branches on `NOT MSVC` (clang takes the non-MSVC branch, e.g.
  AVX-512 flags meant for gcc), or asks for OpenMP (zig has no OpenMP runtime; MSVC links
  VCOMP140.DLL). Such a tree's Windows CPU library is built with MSVC on a Windows runner.

Worked example (upstream 0.45.5's CMakeLists.txt, abridged)::

    set_property(CACHE COMPUTE_BACKEND PROPERTY STRINGS cpu cuda mps)
    if(CMAKE_CUDA_COMPILER_VERSION VERSION_LESS "11.0")
        message(FATAL_ERROR "CUDA Version < 11 is not supported")
    elseif(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL "13.0")
        message(FATAL_ERROR "CUDA Version > 12 is not supported")

    caps = read_capabilities({"CMakeLists.txt": text})
    caps.backends                      # ("cpu", "cuda", "mps")
    caps.cuda_refusal("13.0.2")        # CudaLimit(... message="CUDA Version > 12 is not supported")
    caps.backend_refusal("xpu")        # "its CMake knows COMPUTE_BACKEND cpu, cuda, mps (CMakeLists.txt:...)"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

CMAKE_FILE = re.compile(r"(^|/)(CMakeLists\.txt|[^/]+\.cmake)$")

_STRINGS = re.compile(r"set_property\s*\(\s*CACHE\s+COMPUTE_BACKEND\s+PROPERTY\s+STRINGS\s+([^)]*)\)", re.IGNORECASE)
_BRANCH = re.compile(r"\$?\{?COMPUTE_BACKEND\}?\s+STREQUAL\s+\"?([A-Za-z0-9_]+)\"?")
_CUDA_LIMIT = re.compile(
    r"\b(?:else)?if\s*\(\s*\$?\{?(CMAKE_CUDA_COMPILER_VERSION|CUDAToolkit_VERSION|CUDA_VERSION)\}?\s+"
    r"VERSION_(LESS|LESS_EQUAL|GREATER|GREATER_EQUAL)\s+\"?(\d+(?:\.\d+)*)\"?\s*\)"
    r"(?:\s*#[^\n]*)*\s*message\s*\(\s*FATAL_ERROR\s+\"([^\"]*)\"",
    re.IGNORECASE,
)
_EXPORT_ALL = re.compile(r"\bCMAKE_WINDOWS_EXPORT_ALL_SYMBOLS\b\s+(ON|TRUE|1)\b|WINDOWS_EXPORT_ALL_SYMBOLS\s+(ON|TRUE|1)\b", re.IGNORECASE)
_NOT_MSVC = re.compile(r"\b(?:else)?if\s*\([^)]*\bNOT\s+MSVC\b", re.IGNORECASE)
_FIND_OPENMP = re.compile(r"find_package\s*\(\s*OpenMP\b", re.IGNORECASE)
_COMMENT = re.compile(r"#[^\n]*")


@dataclass(frozen=True)
class CudaLimit:
    """One CUDA version range a tree's CMake refuses: versions `op` `version` (CMake's comparison)."""

    op: str  # LESS, LESS_EQUAL, GREATER, GREATER_EQUAL
    version: str
    message: str  # the FATAL_ERROR text
    where: str  # "CMakeLists.txt:99"

    def refuses(self, version: str) -> bool:
        """Whether CMake's `VERSION_<op>` is true for `version` (missing components count as 0)."""
        a, b = _numbers(version), _numbers(self.version)
        width = max(len(a), len(b))
        a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
        return {"LESS": a < b, "LESS_EQUAL": a <= b, "GREATER": a > b, "GREATER_EQUAL": a >= b}[self.op]


@dataclass(frozen=True)
class WindowsNeed:
    """Why a tree's Windows CPU library needs MSVC: what its CMake does, and where."""

    what: str
    where: str


@dataclass(frozen=True)
class Capabilities:
    """What a tree's build files say it can build (see the module's glossary)."""

    backends: tuple[str, ...] | None = None  # None: its CMake does not say (every backend is planned)
    backends_where: str = ""
    cuda_limits: tuple[CudaLimit, ...] = ()
    windows_needs_msvc: tuple[WindowsNeed, ...] = ()
    wheel_runs_cmake: bool = False  # its PEP 517 backend runs CMake itself, whatever BNB_SKIP_CMAKE says

    def backend_refusal(self, backend: str) -> str | None:
        """Why the tree cannot build `backend` (None: it can)."""
        if self.backends is None or backend in self.backends:
            return None
        return f"its CMake knows COMPUTE_BACKEND {', '.join(self.backends)} ({self.backends_where}), not {backend}"

    def cuda_refusal(self, version: str) -> CudaLimit | None:
        """The first limit of the tree's CMake that refuses CUDA `version` (None: none does)."""
        return next((limit for limit in self.cuda_limits if limit.refuses(version)), None)

    def msvc_reason(self) -> str | None:
        """Why the tree's Windows CPU library is built with MSVC (None: zig builds it as its CMake expects)."""
        if not self.windows_needs_msvc:
            return None
        return "; ".join(f"{need.what} ({need.where})" for need in self.windows_needs_msvc)


EVERYTHING = Capabilities()
"""A tree nothing is known about: every backend and version is planned, zig builds Windows CPU."""


def read_capabilities(texts: Mapping[str, str]) -> Capabilities:
    """The capabilities of a tree from the texts of its files (path relative to its root -> text):
    every CMakeLists.txt and *.cmake, and setup.py when it has one."""
    backends: list[str] | None = None
    backends_where = ""
    branches: list[tuple[str, str]] = []
    limits: list[CudaLimit] = []
    needs: list[WindowsNeed] = []
    for path, raw in sorted(texts.items(), key=lambda item: (item[0] != "CMakeLists.txt", item[0])):
        if not CMAKE_FILE.search(path):
            continue
        text = _COMMENT.sub(lambda m: " " * len(m.group(0)), raw)  # same offsets, no commented-out code
        if backends is None and (m := _STRINGS.search(text)):
            values = [value for v in m.group(1).split() for value in _expand(v.strip('"'), text)]
            if values:
                backends, backends_where = values, _where(path, text, m.start())
        branches += [(m.group(1), _where(path, text, m.start())) for m in _BRANCH.finditer(text)]
        limits += [CudaLimit(m.group(2).upper(), m.group(3), m.group(4), _where(path, text, m.start())) for m in _CUDA_LIMIT.finditer(raw)
                   if not raw[raw.rfind("\n", 0, m.start()) + 1 : m.start()].lstrip().startswith("#")]  # fmt: skip
        if m := _EXPORT_ALL.search(text):
            needs.append(WindowsNeed("it sets CMAKE_WINDOWS_EXPORT_ALL_SYMBOLS, which with MinGW exports the C runtime's symbols", _where(path, text, m.start())))
        if m := _NOT_MSVC.search(text):
            needs.append(WindowsNeed("it branches on NOT MSVC, a branch written for gcc that clang would take", _where(path, text, m.start())))
        if m := _FIND_OPENMP.search(text):
            needs.append(WindowsNeed("it asks for OpenMP, which MSVC provides (VCOMP140.DLL) and zig does not", _where(path, text, m.start())))
    if backends is None and branches:
        backends = list(dict.fromkeys(["cpu", *(name for name, _ in branches)]))
        backends_where = ", ".join(dict.fromkeys(where for _, where in branches))
    return Capabilities(
        backends=tuple(backends) if backends is not None else None,
        backends_where=backends_where,
        cuda_limits=tuple(limits),
        windows_needs_msvc=tuple(needs),
        wheel_runs_cmake=setup_runs_cmake(texts.get("setup.py")),
    )


def setup_runs_cmake(setup_py: str | None) -> bool:
    """Whether a setup.py hands CMake to scikit-build-core's setuptools plugin (`cmake_source_dir`)
    with no way to skip it (no BNB_SKIP_CMAKE): its wheel build compiles the CPU library itself."""
    if not setup_py:
        return False
    code = _COMMENT.sub("", setup_py)
    return "cmake_source_dir" in code and "BNB_SKIP_CMAKE" not in code


def _expand(value: str, text: str) -> list[str]:
    """A STRINGS value: itself, or for `${VAR}` the values of `set(VAR a b c)` in the same file."""
    m = re.fullmatch(r"\$\{(\w+)\}", value)
    if m is None:
        return [value]
    found = re.search(rf"\bset\s*\(\s*{m.group(1)}\s+([^)]*)\)", text, re.IGNORECASE)
    return [v.strip('"') for v in found.group(1).split() if not v.startswith("$")] if found else []


def _where(path: str, text: str, offset: int) -> str:
    return f"{path}:{text.count(chr(10), 0, offset) + 1}"


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))
