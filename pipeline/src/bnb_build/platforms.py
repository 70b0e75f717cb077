"""Platform ids, native library file names and wheel platform tags.

Glossary:

- platform id: ``<os>-<arch>`` as in docs/contracts.md, e.g. ``linux-x86_64``. Build outputs live in
  ``<out>/<os>/<arch>/``.
- library: the native library file, ``libbitsandbytes_<variant><suffix>``, e.g.
  ``libbitsandbytes_cuda130.so``; the suffix depends on the platform's OS.
- platform tag: the last part of a wheel name, e.g. ``manylinux_2_28_x86_64`` or ``win_amd64``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import UsageError


@dataclass(frozen=True)
class Platform:
    id: str
    os: str
    arch: str
    library_suffix: str
    binary_format: str  # "ELF", "PE" or "Mach-O"
    elf_machine: Optional[int] = None  # e_machine of ELF libraries for this platform
    binary_arch: Optional[str] = None  # PE machine / Mach-O CPU of its libraries, as binfmt names them


PLATFORMS = {
    p.id: p
    for p in (
        Platform("linux-x86_64", "linux", "x86_64", ".so", "ELF", elf_machine=62),
        Platform("linux-aarch64", "linux", "aarch64", ".so", "ELF", elf_machine=183),
        Platform("windows-x64", "windows", "x64", ".dll", "PE", binary_arch="x64"),
        Platform("windows-arm64", "windows", "arm64", ".dll", "PE", binary_arch="arm64"),
        Platform("macos-arm64", "macos", "arm64", ".dylib", "Mach-O", binary_arch="arm64"),
    )
}

BACKENDS = ("cpu", "cuda", "hip", "xpu")

LIBRARY_PREFIX = "libbitsandbytes_"

_LIBRARY_NAME = re.compile(r"^libbitsandbytes_[a-z]+[0-9]*$")


def get_platform(platform_id: str) -> Platform:
    """The platform for an id; raises UsageError listing the allowed ids."""
    try:
        return PLATFORMS[platform_id]
    except KeyError:
        allowed = ", ".join(PLATFORMS)
        msg = f"unknown platform {platform_id!r}; allowed: {allowed}"
        raise UsageError(msg) from None


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        msg = f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}"
        raise UsageError(msg)
    return backend


def check_library_name(name: str, platform: Platform) -> str:
    """Check a library file name such as ``libbitsandbytes_cuda128.so`` for ``platform``."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or "." + suffix != platform.library_suffix or not _LIBRARY_NAME.match(stem):
        msg = (
            f"library name {name!r} is not allowed for {platform.id}: expected "
            f"libbitsandbytes_<variant>{platform.library_suffix}, e.g. libbitsandbytes_cpu{platform.library_suffix}"
        )
        raise UsageError(msg)
    return name


def is_library_file(name: str, platform: Platform) -> bool:
    return name.startswith(LIBRARY_PREFIX) and name.endswith(platform.library_suffix)


def binary_format(head: bytes) -> Optional[str]:
    """The executable format of a file from its first bytes: "ELF", "PE", "Mach-O" or None."""
    if head[:4] == b"\x7fELF":
        return "ELF"
    if head[:2] == b"MZ":
        return "PE"
    if head[:4] in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return "Mach-O"
    return None


# ----------------------------------------------------------------------------------------------
# Wheel platform tags

_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class PlatformTag:
    tag: str
    platform_id: str
    glibc: Optional[Tuple[int, int]]  # the glibc a manylinux tag promises; None for other tags


def parse_platform_tag(tag: str) -> PlatformTag:
    """Which platform a (single) wheel platform tag is for, and the glibc it promises."""
    m = re.match(r"^manylinux_(\d+)_(\d+)_(x86_64|aarch64)$", tag)
    if m:
        return PlatformTag(tag, f"linux-{m.group(3)}", (int(m.group(1)), int(m.group(2))))
    m = re.match(r"^(manylinux1|manylinux2010|manylinux2014)_(x86_64|aarch64)$", tag)
    if m:
        return PlatformTag(tag, f"linux-{m.group(2)}", _LEGACY_MANYLINUX[m.group(1)])
    m = re.match(r"^linux_(x86_64|aarch64)$", tag)
    if m:
        return PlatformTag(tag, f"linux-{m.group(1)}", None)
    if tag == "win_amd64":
        return PlatformTag(tag, "windows-x64", None)
    if tag == "win_arm64":
        return PlatformTag(tag, "windows-arm64", None)
    if re.match(r"^macosx_\d+_\d+_arm64$", tag):
        return PlatformTag(tag, "macos-arm64", None)
    msg = (
        f"unknown wheel platform tag {tag!r}; allowed: manylinux_<major>_<minor>_<x86_64|aarch64>, "
        "linux_<arch>, win_amd64, win_arm64, macosx_<major>_<minor>_arm64"
    )
    raise UsageError(msg)


def check_platform_tag(tag: str, platform: Platform) -> PlatformTag:
    parsed = parse_platform_tag(tag)
    if parsed.platform_id != platform.id:
        msg = f"platform tag {tag!r} is for {parsed.platform_id}, not for {platform.id}"
        raise UsageError(msg)
    return parsed


def manylinux_tag(glibc: Tuple[int, int], platform: Platform) -> str:
    return f"manylinux_{glibc[0]}_{glibc[1]}_{platform.arch}"
