"""Fixtures of the native library tests: real CMake builds of each backend, once per session.

Backends whose toolchain this machine lacks are skipped with the reason. Helpers are handed out
as fixtures (tests import nothing from here).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADER = REPO_ROOT / "csrc" / "bitsandbytes.h"
LIBRARY_SUFFIX = {"linux": ".so", "darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")


def _cmake() -> str:
    """The pinned CMake of the test environment first (like tests/conftest.py), else PATH."""
    venv_cmake = Path(sys.executable).parent / "cmake"
    found = str(venv_cmake) if venv_cmake.exists() else shutil.which("cmake")
    if found is None:
        pytest.fail("cmake not found: install tests/requirements.txt (it pins cmake)")
    return found


@dataclass(frozen=True)
class Build:
    """A configure + build: its folders, its combined output and, when it succeeded, the library."""

    source_dir: Path
    build_dir: Path
    output_dir: Path
    returncode: int
    log: str

    @property
    def library(self) -> Path:
        assert self.returncode == 0, f"the build failed:\n{self.log}"
        libraries = sorted(self.output_dir.glob(f"libbitsandbytes_*{LIBRARY_SUFFIX}"))
        assert len(libraries) == 1, f"expected one library in {self.output_dir}, found {libraries}"
        return libraries[0]


def cmake_build(root: Path, *defines: str, env: dict[str, str] | None = None, source: Path = REPO_ROOT) -> Build:
    """Configures and builds into root/build, library into root/lib; stops after a failed step."""
    build_dir, output_dir = root / "build", root / "lib"
    run_env = {**os.environ, **(env or {})}
    steps = [
        [_cmake(), "-S", str(source), "-B", str(build_dir), "-G", "Ninja", f"-DBNB_OUTPUT_DIR={output_dir}", *defines],
        [_cmake(), "--build", str(build_dir), "--parallel", "2"],
    ]
    log = ""
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=run_env, check=False)
        log += f"$ {' '.join(step)}\n{done.stdout}{done.stderr}"
        if done.returncode != 0:
            return Build(source, build_dir, output_dir, done.returncode, log)
    return Build(source, build_dir, output_dir, 0, log)


def abi_symbols() -> set[str]:
    """The function names csrc/bitsandbytes.h declares with BNB_API."""
    return set(re.findall(r"^BNB_API\s+[^(]*?\b(bnb_\w+)\s*\(", HEADER.read_text(), flags=re.MULTILINE))


def exported_symbols(library: Path) -> set[str]:
    """Defined global/weak symbols of the dynamic symbol table."""
    with library.open("rb") as f:
        dynsym = ELFFile(f).get_section_by_name(".dynsym")
        return {
            s.name
            for s in dynsym.iter_symbols()
            if s.name and s["st_shndx"] != "SHN_UNDEF" and s["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")
        }


def needed_libraries(library: Path) -> list[str]:
    with library.open("rb") as f:
        for section in ELFFile(f).iter_sections():
            if isinstance(section, DynamicSection):
                return [tag.needed for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
    return []


def elf_section(library: Path, name: str) -> bytes | None:
    with library.open("rb") as f:
        section = ELFFile(f).get_section_by_name(name)
        return None if section is None else section.data()


class NativeLibrary:
    """ctypes view of the C ABI; arrays are numpy arrays (host memory, like the ABI wants)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        for name in ("bnb_backend", "bnb_version", "bnb_last_error", "bnb_cpu_isa"):
            getattr(self.lib, name).restype = ctypes.c_char_p
        self.lib.bnb_cpu_set_isa.argtypes = [ctypes.c_char_p]
        self.lib.bnb_cpu_set_threads.argtypes = [ctypes.c_int]
        p, i, n = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
        for name in ("quantize_blockwise", "dequantize_blockwise"):
            for dtype in ("fp32", "fp16"):
                getattr(self.lib, f"bnb_{name}_{dtype}").argtypes = [p, p, p, p, i, n]
        for name in ("quantize_4bit", "dequantize_4bit"):
            for dtype in ("fp32", "fp16"):
                getattr(self.lib, f"bnb_{name}_{dtype}").argtypes = [p, p, p, i, n, i]

    def text(self, name: str) -> str:
        return getattr(self.lib, name)().decode()

    def call(self, name: str, *args: object) -> int:
        """Calls bnb_<name>; numpy arrays become their data pointers."""
        converted = [a.ctypes.data if hasattr(a, "ctypes") else a for a in args]
        return getattr(self.lib, f"bnb_{name}")(*converted)


@pytest.fixture(scope="session")
def cmake() -> str:
    return _cmake()


@pytest.fixture(scope="session")
def native_build():
    """cmake_build(root, *defines, env=..., source=...) -> Build."""
    return cmake_build


@pytest.fixture(scope="session")
def abi_names() -> set[str]:
    names = abi_symbols()
    assert len(names) == 17, f"parsed {sorted(names)} from {HEADER}"
    return names


class Elf:
    """ELF inspection helpers (pyelftools), handed to tests as the `elf` fixture."""

    exported = staticmethod(exported_symbols)
    needed = staticmethod(needed_libraries)
    section = staticmethod(elf_section)


@pytest.fixture(scope="session")
def elf() -> type[Elf]:
    return Elf


@pytest.fixture(scope="session")
def load_library():
    """load_library(path) -> NativeLibrary."""
    return NativeLibrary


@pytest.fixture(scope="session")
def cpu_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    build = cmake_build(tmp_path_factory.mktemp("native-cpu"), "-DCOMPUTE_BACKEND=cpu")
    assert build.returncode == 0, build.log
    return build


# --- CUDA ---------------------------------------------------------------------------------------


def find_nvcc() -> str | None:
    """nvcc from CUDACXX, /usr/local/cuda or PATH."""
    for candidate in (os.environ.get("CUDACXX"), "/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def nvcc() -> str:
    found = find_nvcc()
    if found is None:
        pytest.skip("no nvcc: set CUDACXX, install CUDA in /usr/local/cuda or put nvcc on PATH")
    return found


@pytest.fixture(scope="session")
def nvcc_version(nvcc: str) -> tuple[int, int]:
    output = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", output)
    assert match, f"cannot read the release from `nvcc --version`:\n{output}"
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="session")
def cuda_build(tmp_path_factory: pytest.TempPathFactory, nvcc: str) -> Build:
    build = cmake_build(
        tmp_path_factory.mktemp("native-cuda"), "-DCOMPUTE_BACKEND=cuda", "-DCOMPUTE_CAPABILITY=75;90",
        env={"CUDACXX": nvcc},
    )
    assert build.returncode == 0, build.log
    return build


# --- HIP (Debian's ROCm 5.2 toolchain, pipeline/src/bnb_build/cmake/debian-rocm.cmake) ------------------------

DEBIAN_ROCM_TOOLCHAIN = REPO_ROOT / "pipeline" / "src" / "bnb_build" / "cmake" / "debian-rocm.cmake"


@dataclass(frozen=True)
class HipToolchain:
    env: dict[str, str]
    version_header: Path  # hip/hip_version.h of that ROCm


@pytest.fixture(scope="session")
def hip_toolchain() -> HipToolchain:
    """/opt/rocm as it is, else Debian's packages through the pipeline's debian-rocm.cmake."""
    opt_rocm = Path("/opt/rocm")
    if (opt_rocm / "lib" / "cmake" / "hip-lang").is_dir():
        return HipToolchain({"HIP_PLATFORM": "amd"}, opt_rocm / "include" / "hip" / "hip_version.h")
    debian_header = Path("/usr/include/hip/hip_version.h")
    if shutil.which("clang++-15") and debian_header.is_file():
        env = {"HIP_PLATFORM": "amd", "CMAKE_TOOLCHAIN_FILE": str(DEBIAN_ROCM_TOOLCHAIN)}
        return HipToolchain(env, debian_header)
    pytest.skip("no HIP toolchain: needs /opt/rocm, or Debian's `apt-get install hipcc libamdhip64-dev`")


@pytest.fixture(scope="session")
def hip_version(hip_toolchain: HipToolchain) -> tuple[int, int]:
    text = hip_toolchain.version_header.read_text()
    major = re.search(r"#define HIP_VERSION_MAJOR (\d+)", text)
    minor = re.search(r"#define HIP_VERSION_MINOR (\d+)", text)
    assert major and minor, f"no HIP_VERSION_MAJOR/MINOR in {hip_toolchain.version_header}"
    return int(major.group(1)), int(minor.group(1))


@pytest.fixture(scope="session")
def hip_build(tmp_path_factory: pytest.TempPathFactory, hip_toolchain: HipToolchain) -> Build:
    build = cmake_build(
        tmp_path_factory.mktemp("native-hip"), "-DCOMPUTE_BACKEND=hip", "-DBNB_ROCM_ARCH=gfx90a",
        env=hip_toolchain.env,
    )
    assert build.returncode == 0, build.log
    return build
