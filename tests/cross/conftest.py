"""Fixtures of the cross-build tests: one `bnb-ci build-all --backend cpu` per session (five platforms
with the zig toolchain), the round-trip program cross-compiled per target, and the emulators.

zig builds libc/libc++ once per target into ZIG_GLOBAL_CACHE_DIR (tests/conftest.py points it at
.bnb-cache/zig, which outlives the session); a cold cache costs minutes per target, a warm one seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADER = REPO_ROOT / "csrc" / "bitsandbytes.h"
ROUNDTRIP_C = Path(__file__).resolve().with_name("roundtrip.c")
BNB_CI = Path(sys.executable).parent / "bnb-ci"
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")  # Debian's libc6-arm64-cross

PLATFORMS = {
    # platform id: (wheel tag, library path below libs/, zig target of the round-trip program)
    "linux-x86_64": ("manylinux_2_28_x86_64", "linux/x86_64/libbitsandbytes_cpu.so", "x86_64-linux-gnu.2.17"),
    "linux-aarch64": ("manylinux_2_28_aarch64", "linux/aarch64/libbitsandbytes_cpu.so", "aarch64-linux-gnu.2.17"),
    "windows-x64": ("win_amd64", "windows/x64/libbitsandbytes_cpu.dll", "x86_64-windows-gnu"),
    "windows-arm64": ("win_arm64", "windows/arm64/libbitsandbytes_cpu.dll", "aarch64-windows-gnu"),
    "macos-arm64": ("macosx_14_0_arm64", "macos/arm64/libbitsandbytes_cpu.dylib", "aarch64-macos.14.0"),
}

N, BLOCKSIZE = 1000, 64  # not a multiple of the block size: the last block is partial


def zig_available() -> bool:
    done = subprocess.run([sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True, check=False)
    return done.returncode == 0


@dataclass(frozen=True)
class CrossRun:
    out: Path
    stdout: str
    returncode: int
    seconds: float

    def library(self, platform: str) -> Path:
        return self.out / "libs" / PLATFORMS[platform][1]


@pytest.fixture(scope="session")
def cross_build(tmp_path_factory: pytest.TempPathFactory) -> CrossRun:
    """`bnb-ci build-all --backend cpu` of this checkout: every CPU library, five wheels, the audit."""
    if not zig_available():
        pytest.skip(f"ziglang is not installed for {sys.executable} (tests/requirements.txt pins it)")
    root = tmp_path_factory.mktemp("cross")
    env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_TOOLCHAIN_FILE", "SOURCE_DATE_EPOCH")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    argv = [str(BNB_CI), "build-all", "--backend", "cpu", "--source", str(REPO_ROOT), "--cache-dir", str(root / "cache"),
            "--out", str(root / "out")]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, check=False)
    run = CrossRun(root / "out", done.stdout + done.stderr, done.returncode, time.monotonic() - start)
    assert run.returncode == 0, run.stdout[-8000:]
    return run


@pytest.fixture(scope="session")
def abi_names() -> set[str]:
    names = set(re.findall(r"^BNB_API\s+[^(]*?\b(bnb_\w+)\s*\(", HEADER.read_text(), flags=re.MULTILINE))
    assert len(names) == 13, sorted(names)
    return names


@pytest.fixture(scope="session")
def roundtrip_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The round-trip program's input file and the lines it must print, from bitsandbytes.reference."""
    from bitsandbytes import reference

    rng = np.random.default_rng(20)
    a = (rng.standard_normal(N) * 3).astype(np.float32)
    a[::97] = 0.0
    code = reference.create_dynamic_map()
    path = tmp_path_factory.mktemp("roundtrip-input") / "input.bin"
    path.write_bytes(struct.pack("<ii", N, BLOCKSIZE) + code.astype("<f4").tobytes() + a.astype("<f4").tobytes())

    codes, absmax = reference.quantize_blockwise(a, code, BLOCKSIZE)
    d8 = reference.dequantize_blockwise(codes, absmax, code, BLOCKSIZE)
    nf4, nf4_absmax = reference.quantize_4bit(a, BLOCKSIZE, "nf4")
    dnf4 = reference.dequantize_4bit(nf4, nf4_absmax, a.shape, BLOCKSIZE, "nf4")
    fp4, fp4_absmax = reference.quantize_4bit(a, BLOCKSIZE, "fp4")

    def line(label: str, array: np.ndarray) -> str:
        little = array.astype(array.dtype.newbyteorder("<"))
        return f"{label} {little.tobytes().hex()}"

    expected = [
        "backend cpu",
        line("q8.codes", codes), line("q8.absmax", absmax), line("d8", d8),
        line("nf4.codes", nf4), line("nf4.absmax", nf4_absmax), line("dnf4", dnf4),
        line("fp4.codes", fp4), line("fp4.absmax", fp4_absmax),
    ]  # fmt: skip
    return path, expected


@pytest.fixture(scope="session")
def roundtrip_program(tmp_path_factory: pytest.TempPathFactory):
    """target -> the round-trip program cross-compiled for it with zig (built once per target)."""
    if not zig_available():
        pytest.skip(f"ziglang is not installed for {sys.executable}")
    folder = tmp_path_factory.mktemp("roundtrip-programs")
    built: dict[str, Path] = {}

    def build(target: str) -> Path:
        if target not in built:
            out = folder / target / ("roundtrip.exe" if "windows" in target else "roundtrip")
            out.parent.mkdir(parents=True)
            argv = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-O2", "-o", str(out), str(ROUNDTRIP_C)]
            if "linux" in target:
                argv.append("-ldl")
            done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=out.parent, timeout=1800)
            assert done.returncode == 0, done.stdout + done.stderr
            for extra in out.parent.glob("*.pdb"):
                extra.unlink()
            built[target] = out
        return built[target]

    return build


@pytest.fixture(scope="session")
def platforms() -> dict[str, tuple[str, str, str]]:
    return PLATFORMS


@pytest.fixture(scope="session")
def wine64(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """Debian's wine64 and an environment with a fresh prefix in a temporary folder."""
    found = shutil.which("wine64") or next((str(p) for p in (Path("/usr/lib/wine/wine64"),) if p.is_file()), None)
    if found is None:
        pytest.skip("wine64 is not installed (apt-get install wine64): the Windows DLL cannot be run here")
    prefix = tmp_path_factory.mktemp("wineprefix")
    env = {**os.environ, "WINEPREFIX": str(prefix), "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml=", "DISPLAY": ""}
    return found, env


@pytest.fixture(scope="session")
def qemu_aarch64() -> tuple[str, Path]:
    """qemu-user for aarch64 and the aarch64 glibc (loader, libc) the programs need."""
    found = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if found is None:
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
    if not (AARCH64_SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        pytest.skip(f"no aarch64 glibc in {AARCH64_SYSROOT} (apt-get install libc6-arm64-cross)")
    return found, AARCH64_SYSROOT
