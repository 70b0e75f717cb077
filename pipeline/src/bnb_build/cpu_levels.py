"""CPU levels: the names a CPU floor is given in, in order, and the QEMU CPU model that emulates each.

A platform's CPU floor (the support matrix, or a tree's ``[tool.bitsandbytes-ci]``) is the oldest CPU
its wheels claim to run on. It is one of these levels; the try runs the wheel under user-mode QEMU
with the level's model, and the audit's ISA report refuses code above it. Standard library only.

x86-64 levels are the psABI's micro-architecture levels. QEMU 7.2's TCG (Debian 12's
``qemu-user-static``) has no AVX-512, so x86-64-v4 has no model: such a floor is checked statically
only. Armv8 levels: Armv8.0-A has Advanced SIMD (NEON) everywhere; Armv8.2-A adds FP16 arithmetic,
dot product (8.4 optional in 8.2 cores) and more.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

X86_64_LEVELS: Tuple[str, ...] = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")
AARCH64_LEVELS: Tuple[str, ...] = ("armv8-a", "armv8.2-a")

LEVELS_BY_ARCH: Dict[str, Tuple[str, ...]] = {
    "x86_64": X86_64_LEVELS,
    "x64": X86_64_LEVELS,
    "aarch64": AARCH64_LEVELS,
    "arm64": AARCH64_LEVELS,
}
"""A platform's arch (matrix.toml `arch`) -> the levels a floor of it may name, oldest first."""

QEMU_CPU: Dict[str, Optional[str]] = {
    "x86-64": "qemu64",  # SSE2, no SSSE3/SSE4
    "x86-64-v2": "Nehalem-v1",  # SSE4.2, POPCNT, CX16
    "x86-64-v3": "Haswell-v4",  # AVX2, FMA, BMI1/2, F16C, MOVBE (Haswell, no TSX, IBRS)
    "x86-64-v4": None,  # QEMU 7.2 TCG emulates no AVX-512
    "armv8-a": "cortex-a53",  # Armv8.0-A
    "armv8.2-a": "neoverse-n1",  # Armv8.2-A with FP16 and dot product
}
"""A level -> the `-cpu` model of `qemu-<arch>-static` at that level, None where QEMU has none."""

QEMU_BINARY: Dict[str, str] = {"x86_64": "qemu-x86_64-static", "x64": "qemu-x86_64-static", "aarch64": "qemu-aarch64-static", "arm64": "qemu-aarch64-static"}
"""A platform's arch -> Debian's user-mode emulator for it (package qemu-user-static)."""


EXTENSIONS: Dict[str, Tuple[str, ...]] = {
    # iced-x86 CpuidFeature names. x86-64: the psABI baseline and what every x86-64 CPU decodes
    # (multi-byte NOPs; ENDBR64 of CET_IBT and PAUSE are NOPs on CPUs without them).
    "x86-64": ("INTEL8086", "INTEL186", "INTEL286", "INTEL386", "INTEL486", "X64", "CMOV", "CX8", "CPUID", "TSC",
               "FPU", "FPU287", "FPU387", "MMX", "SSE", "SSE2", "FXSR", "SYSCALL", "SEP", "CLFSH", "PAUSE",
               "MULTIBYTENOP", "CET_IBT"),
    "x86-64-v2": ("CMPXCHG16B", "POPCNT", "SSE3", "SSSE3", "SSE4_1", "SSE4_2"),
    "x86-64-v3": ("AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA", "LZCNT", "MOVBE", "XSAVE"),
    "x86-64-v4": ("AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL"),
    # capstone ARM64_GRP_* names (the instruction groups that name an extension).
    "armv8-a": ("INT", "FPARMV8", "NEON"),
    "armv8.2-a": ("V8_1A", "LSE", "RDM", "CRC", "FULLFP16", "DOTPROD"),
}  # fmt: skip
"""A CPU level -> the extensions it adds to the level before it (the first: what every CPU of the arch has)."""


def check_level(arch: str, level: str) -> str:
    """`level` when it is a level of `arch`; otherwise ValueError naming both and the allowed levels."""
    allowed = LEVELS_BY_ARCH.get(arch)
    if allowed is None:
        msg = f"no CPU levels are known for arch {arch!r} (known: {', '.join(sorted(LEVELS_BY_ARCH))})"
        raise ValueError(msg)
    if level not in allowed:
        msg = f"CPU floor {level!r} is not a level of {arch} (allowed: {', '.join(allowed)})"
        raise ValueError(msg)
    return level


def level_index(arch: str, level: str) -> int:
    """The position of `level` among `arch`'s levels (0 = the oldest)."""
    return LEVELS_BY_ARCH[arch].index(check_level(arch, level))
