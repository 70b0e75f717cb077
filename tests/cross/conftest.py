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

# The CPU kernels each library can run on this machine (BNB_CPU_ISA), by its architecture: x86_64
# libraries run natively (the AVX sets only where this CPU has them), aarch64 ones under qemu-user,
# which emulates NEON.
X86_ISA_FLAGS = {"avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "f16c"}, "avx2": {"avx2", "f16c"}}


@pytest.fixture(scope="session")
def x86_isas() -> list[str]:
    """scalar, and the AVX kernels this machine's CPU flags (/proc/cpuinfo) allow; best last."""
    try:
        line = next(text for text in Path("/proc/cpuinfo").read_text().splitlines() if text.startswith("flags"))
    except (OSError, StopIteration):
        return ["scalar"]
    flags = set(line.split(":", 1)[1].split())
    return ["scalar"] + [isa for isa in ("avx2", "avx512") if X86_ISA_FLAGS[isa] <= flags]


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
    assert len(names) == 17, sorted(names)
    return names


def write_roundtrip_input(path: Path, a: np.ndarray, blocksize: int, blocksize4: int) -> list[str]:
    """Writes the round-trip program's input for the values `a` and returns the lines it must print
    after its `backend` and `isa` lines, computed with bitsandbytes.reference."""
    from bitsandbytes import reference

    a = np.asarray(a, dtype=np.float32)
    with np.errstate(over="ignore"):
        half = a.astype(np.float16)
    half[~np.isfinite(half)] = np.float16(65504)  # float32 values beyond float16's range
    code = reference.create_dynamic_map()
    header = struct.pack("<iii", a.size, blocksize, blocksize4)
    path.write_bytes(header + code.astype("<f4").tobytes() + a.astype("<f4").tobytes() + half.astype("<f2").tobytes())

    def line(label: str, array: np.ndarray) -> str:
        little = array.astype(array.dtype.newbyteorder("<"))
        return f"{label} {little.tobytes().hex()}"

    lines = []
    for x, tag, out_dtype in ((a, "", np.float32), (half, "h", np.float16)):
        codes, absmax = reference.quantize_blockwise(x, code, blocksize)
        lines += [line(f"q8{tag}.codes", codes), line(f"q8{tag}.absmax", absmax),
                  line(f"d8{tag}", reference.dequantize_blockwise(codes, absmax, code, blocksize, out_dtype))]
        for kind in ("nf4", "fp4"):
            packed, absmax = reference.quantize_4bit(x, blocksize4, kind)
            lines += [line(f"{kind}{tag}.codes", packed), line(f"{kind}{tag}.absmax", absmax),
                      line(f"d{kind}{tag}", reference.dequantize_4bit(packed, absmax, x.shape, blocksize4, kind, out_dtype))]
    return lines


@pytest.fixture(scope="session")
def roundtrip_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The round-trip program's input file and the lines it must print after `backend` and `isa`."""
    rng = np.random.default_rng(20)
    a = (rng.standard_normal(N) * 3).astype(np.float32)
    a[::97] = 0.0
    path = tmp_path_factory.mktemp("roundtrip-input") / "input.bin"
    return path, write_roundtrip_input(path, a, BLOCKSIZE, BLOCKSIZE)


@pytest.fixture(scope="session")
def adversarial_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """Inputs that test every kernel's edge cases: values on and next to every threshold, zeros in
    and as whole blocks, subnormal inputs and normalised values, float32's extremes, partial last
    blocks, 4-bit blocksize 32. name -> (input file, expected lines after `backend` and `isa`)."""
    from bitsandbytes import reference

    rng = np.random.default_rng(21)
    t = np.concatenate([reference.thresholds(reference.create_dynamic_map()), reference.thresholds(reference.NF4),
                        reference.thresholds(np.sort(reference.FP4_MAGNITUDES))])
    t = np.concatenate([t, -t, np.nextafter(t, np.float32(2)), np.nextafter(t, np.float32(-2))]).astype(np.float32)
    on_thresholds = np.resize(t, 3001)
    on_thresholds[::32] = 1.0
    zeros = rng.standard_normal(1000).astype(np.float32)
    zeros[rng.random(1000) < 0.4] = 0.0
    zeros[64:192] = -0.0
    cases = {
        "thresholds": (on_thresholds, 64, 32),
        "zeros": (zeros, 64, 32),
        "subnormal": (np.where(np.arange(777) % 64 == 0, 3e38, rng.standard_normal(777) * 1e-5), 64, 64),
        "denormal-input": (rng.uniform(-1, 1, 517) * 1e-39, 64, 32),
        "extremes": (np.resize(np.array([3.4e38, -3.4e38, 1e-45, -1e-45, 1.0]), 4099), 4096, 4096),
        "wide-range": (rng.standard_normal(2003) * 10.0 ** rng.uniform(-30, 30, 2003), 256, 128),
    }
    folder = tmp_path_factory.mktemp("adversarial-inputs")
    return {name: (folder / f"{name}.bin", write_roundtrip_input(folder / f"{name}.bin", np.asarray(a), bs, bs4))
            for name, (a, bs, bs4) in cases.items()}  # fmt: skip


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
