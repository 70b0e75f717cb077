"""Minimal readers for Windows PE/COFF DLLs and Mach-O dylibs (standard library ``struct`` only).

What the wheel and audit steps check on libraries of the cross-built platforms:

- PE (``.dll``): the COFF machine (``x64`` 0x8664, ``arm64`` 0xAA64), the export table's names, the
  DLLs of the import table and of the delay-load table, and the COFF time stamp;
- Mach-O (``.dylib``, 64-bit, thin or the first slice of a fat file): the CPU type (``arm64``,
  ``x86_64``), the file type, the exported symbols (the export trie of ``LC_DYLD_INFO_ONLY`` /
  ``LC_DYLD_EXPORTS_TRIE``, else the external defined symbols of ``LC_SYMTAB``; the leading ``_`` of C
  names removed), split into C names and C++ (``_Z``-mangled) names, without the two the linker adds
  to every dylib (``__mh_dylib_header``, ``__dso_handle``), the dylibs it loads, and the minimum OS
  version (``LC_BUILD_VERSION`` / ``LC_VERSION_MIN_MACOSX``).

Layouts follow the Microsoft PE/COFF specification and Apple's ``<mach-o/loader.h>``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import InputError

# ----------------------------------------------------------------------------------------------
# PE

PE_MACHINES = {0x8664: "x64", 0xAA64: "arm64", 0x14C: "x86", 0x1C4: "arm"}
PE32_PLUS = 0x20B
DIR_EXPORT, DIR_IMPORT, DIR_DELAY_IMPORT = 0, 1, 13

# Windows DLLs every supported Windows has (the UCRT's api sets since Windows 10), plus the Visual C++
# runtime DLLs that CPython itself ships next to python.exe. Anything else must come with the wheel.
WINDOWS_SYSTEM_DLLS = (
    "kernel32.dll", "ntdll.dll", "kernelbase.dll", "advapi32.dll", "user32.dll", "gdi32.dll", "shell32.dll",
    "ole32.dll", "oleaut32.dll", "ws2_32.dll", "bcrypt.dll", "crypt32.dll", "secur32.dll", "version.dll",
    "ucrtbase.dll", "msvcrt.dll", "synchronization.dll", "dbghelp.dll", "psapi.dll", "setupapi.dll",
)  # fmt: skip
PYTHON_SHIPPED_DLLS = ("vcruntime140.dll", "vcruntime140_1.dll")
_WINDOWS_API_SET = re.compile(r"^(api|ext)-ms-win-[a-z0-9-]+\.dll$")


@dataclass
class PeInfo:
    machine: str  # "x64", "arm64", or "0x...." when unknown
    is_dll: bool
    timestamp: int
    exported: List[str] = field(default_factory=list)
    imports: List[str] = field(default_factory=list)  # DLL names as written (import and delay-load tables)


def is_windows_system_dll(name: str) -> bool:
    """Whether every Windows 10+ machine with CPython has ``name`` (case-insensitive)."""
    lower = name.lower()
    return lower in WINDOWS_SYSTEM_DLLS or lower in PYTHON_SHIPPED_DLLS or bool(_WINDOWS_API_SET.match(lower))


def read_pe(path: Path | str) -> PeInfo:
    return parse_pe(Path(path).read_bytes(), str(path))


def parse_pe(data: bytes, name: str = "<bytes>") -> PeInfo:
    if data[:2] != b"MZ":
        msg = f"{name} is not a PE file (first bytes {data[:2]!r})"
        raise InputError(msg)
    try:
        return _parse_pe(data, name)
    except (struct.error, IndexError, ValueError) as e:
        msg = f"{name}: malformed PE file ({e})"
        raise InputError(msg) from e


def _parse_pe(data: bytes, name: str) -> PeInfo:
    (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe_offset : pe_offset + 4] != b"PE\0\0":
        msg = f"{name}: no PE signature at offset {pe_offset:#x}"
        raise InputError(msg)
    coff = pe_offset + 4
    machine, nsections, timestamp, _symtab, _nsyms, opt_size, characteristics = struct.unpack_from("<HHIIIHH", data, coff)
    opt = coff + 20
    (magic,) = struct.unpack_from("<H", data, opt)
    if magic != PE32_PLUS:
        msg = f"{name}: only PE32+ (64-bit) images are supported (optional header magic {magic:#x})"
        raise InputError(msg)
    (ndirs,) = struct.unpack_from("<I", data, opt + 108)
    dirs = [struct.unpack_from("<II", data, opt + 112 + 8 * i) for i in range(min(ndirs, 16))]
    sections = []
    for i in range(nsections):
        off = opt + opt_size + 40 * i
        vsize, vaddr, raw_size, raw_ptr = struct.unpack_from("<IIII", data, off + 8)
        sections.append((vaddr, max(vsize, raw_size), raw_ptr))

    def at(rva: int) -> int:
        for vaddr, size, raw in sections:
            if vaddr <= rva < vaddr + size:
                return raw + rva - vaddr
        msg = f"RVA {rva:#x} is in no section"
        raise ValueError(msg)

    def cstr(rva: int) -> str:
        start = at(rva)
        return data[start : data.index(b"\0", start)].decode("ascii", errors="replace")

    info = PeInfo(PE_MACHINES.get(machine, f"{machine:#06x}"), bool(characteristics & 0x2000), timestamp)
    if len(dirs) > DIR_EXPORT and dirs[DIR_EXPORT][0]:
        off = at(dirs[DIR_EXPORT][0])
        _nfunctions, nnames, _functions_rva, names_rva = struct.unpack_from("<IIII", data, off + 20)
        names = [cstr(struct.unpack_from("<I", data, at(names_rva) + 4 * i)[0]) for i in range(nnames)]
        info.exported = sorted(set(names))
    imports: List[str] = []
    if len(dirs) > DIR_IMPORT and dirs[DIR_IMPORT][0]:
        off = at(dirs[DIR_IMPORT][0])
        while True:
            _lookup, _time, _chain, name_rva, _iat = struct.unpack_from("<IIIII", data, off)
            if name_rva == 0:
                break
            imports.append(cstr(name_rva))
            off += 20
    if len(dirs) > DIR_DELAY_IMPORT and dirs[DIR_DELAY_IMPORT][0]:
        off = at(dirs[DIR_DELAY_IMPORT][0])
        while True:
            _attrs, name_rva = struct.unpack_from("<II", data, off)
            if name_rva == 0:
                break
            imports.append(cstr(name_rva))
            off += 32
    info.imports = imports
    return info


# ----------------------------------------------------------------------------------------------
# Mach-O

MH_MAGIC_64 = 0xFEEDFACF
FAT_MAGIC = 0xCAFEBABE
MACHO_CPUS = {0x0100000C: "arm64", 0x01000007: "x86_64"}
MH_DYLIB = 6
LC_SYMTAB = 0x2
LC_LOAD_DYLIB, LC_ID_DYLIB = 0xC, 0xD
LC_LOAD_WEAK_DYLIB, LC_REEXPORT_DYLIB, LC_LOAD_UPWARD_DYLIB, LC_LAZY_LOAD_DYLIB = 0x80000018, 0x8000001F, 0x80000023, 0x20
LC_DYLD_INFO_ONLY, LC_DYLD_EXPORTS_TRIE = 0x80000022, 0x80000033
LC_VERSION_MIN_MACOSX, LC_BUILD_VERSION = 0x24, 0x32
N_EXT, N_TYPE, N_SECT, N_PEXT, N_STAB = 0x01, 0x0E, 0x0E, 0x10, 0xE0
_LOADS = (LC_LOAD_DYLIB, LC_LOAD_WEAK_DYLIB, LC_REEXPORT_DYLIB, LC_LOAD_UPWARD_DYLIB, LC_LAZY_LOAD_DYLIB)

LINKER_DEFINED = ("_mh_dylib_header", "__dso_handle")  # __mh_dylib_header, ___dso_handle without one "_"

# What every macOS has: the system libraries in /usr/lib (libSystem, libc++, libobjc...) and the frameworks.
MACOS_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/Frameworks/")


@dataclass
class MachOInfo:
    cpu: str  # "arm64", "x86_64", or "0x..." when unknown
    filetype: int
    exported: List[str] = field(default_factory=list)  # C names
    exported_cxx: List[str] = field(default_factory=list)  # C++ names, e.g. operator new of a static libc++
    dylibs: List[str] = field(default_factory=list)
    install_name: Optional[str] = None
    min_os: Optional[Tuple[int, int]] = None  # (major, minor), e.g. (14, 0)

    @property
    def is_dylib(self) -> bool:
        return self.filetype == MH_DYLIB


def is_macos_system_dylib(path: str) -> bool:
    return path.startswith(MACOS_SYSTEM_PREFIXES)


def read_macho(path: Path | str) -> MachOInfo:
    return parse_macho(Path(path).read_bytes(), str(path))


def parse_macho(data: bytes, name: str = "<bytes>") -> MachOInfo:
    try:
        if struct.unpack_from(">I", data, 0)[0] == FAT_MAGIC:
            nfat = struct.unpack_from(">I", data, 4)[0]
            if nfat < 1:
                raise ValueError("empty fat file")
            _cpu, _sub, offset, size, _align = struct.unpack_from(">IIIII", data, 8)
            data = data[offset : offset + size]
        if struct.unpack_from("<I", data, 0)[0] != MH_MAGIC_64:
            msg = f"{name} is not a 64-bit little-endian Mach-O file (first bytes {data[:4]!r})"
            raise InputError(msg)
        return _parse_macho(data)
    except (struct.error, IndexError, ValueError) as e:
        msg = f"{name}: malformed Mach-O file ({e})"
        raise InputError(msg) from e


def _version(encoded: int) -> Tuple[int, int]:
    return encoded >> 16, (encoded >> 8) & 0xFF


def _parse_macho(data: bytes) -> MachOInfo:
    _magic, cputype, _sub, filetype, ncmds, _size, _flags, _reserved = struct.unpack_from("<IiIIIIII", data, 0)
    info = MachOInfo(MACHO_CPUS.get(cputype & 0xFFFFFFFF, f"{cputype & 0xFFFFFFFF:#x}"), filetype)
    trie: Optional[Tuple[int, int]] = None
    symtab: Optional[Tuple[int, int, int, int]] = None
    off = 32
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", data, off)
        if cmd in _LOADS or cmd == LC_ID_DYLIB:
            (name_off,) = struct.unpack_from("<I", data, off + 8)
            text = data[off + name_off : off + size].split(b"\0", 1)[0].decode("utf-8", errors="replace")
            if cmd == LC_ID_DYLIB:
                info.install_name = text
            else:
                info.dylibs.append(text)
        elif cmd == LC_SYMTAB:
            symtab = struct.unpack_from("<IIII", data, off + 8)
        elif cmd == LC_DYLD_INFO_ONLY:
            export_off, export_size = struct.unpack_from("<II", data, off + 40)
            if export_size:
                trie = (export_off, export_size)
        elif cmd == LC_DYLD_EXPORTS_TRIE:
            trie = struct.unpack_from("<II", data, off + 8)
        elif cmd == LC_BUILD_VERSION:
            _platform, minos = struct.unpack_from("<II", data, off + 8)
            info.min_os = _version(minos)
        elif cmd == LC_VERSION_MIN_MACOSX and info.min_os is None:
            info.min_os = _version(struct.unpack_from("<I", data, off + 8)[0])
        off += size
    if trie is not None:
        names = _read_trie(data[trie[0] : trie[0] + trie[1]])
    elif symtab is not None:
        names = _read_symtab(data, *symtab)
    else:
        names = []
    names = {n[1:] if n.startswith("_") else n for n in names} - set(LINKER_DEFINED)
    info.exported = sorted(n for n in names if not n.startswith("_Z"))
    info.exported_cxx = sorted(n for n in names if n.startswith("_Z"))
    return info


def _uleb(data: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _read_trie(trie: bytes) -> List[str]:
    names: List[str] = []
    stack = [(0, "")]
    seen = set()
    while stack:
        node, prefix = stack.pop()
        if node in seen or node >= len(trie):
            continue
        seen.add(node)
        info_size, pos = _uleb(trie, node)
        if info_size:
            names.append(prefix)
        pos += info_size
        count = trie[pos]
        pos += 1
        for _ in range(count):
            end = trie.index(b"\0", pos)
            label = trie[pos:end].decode("utf-8", errors="replace")
            child, pos = _uleb(trie, end + 1)
            stack.append((child, prefix + label))
    return names


def _read_symtab(data: bytes, symoff: int, nsyms: int, stroff: int, _strsize: int) -> List[str]:
    names = []
    for i in range(nsyms):
        strx, ntype, sect, _desc, _value = struct.unpack_from("<IBBHQ", data, symoff + 16 * i)
        if ntype & N_STAB or not ntype & N_EXT or ntype & N_PEXT or (ntype & N_TYPE) != N_SECT or not sect:
            continue
        start = stroff + strx
        names.append(data[start : data.index(b"\0", start)].decode("utf-8", errors="replace"))
    return names


# ----------------------------------------------------------------------------------------------


def exported_symbols(data: bytes, fmt: str, name: str = "<bytes>") -> List[str]:
    """The exported C names of an ELF, PE or Mach-O library (``fmt`` from ``platforms.binary_format``)."""
    if fmt == "PE":
        return parse_pe(data, name).exported
    if fmt == "Mach-O":
        return parse_macho(data, name).exported
    from . import elf

    return elf.parse_elf(data, name).exported


def architecture(data: bytes, fmt: str, name: str = "<bytes>") -> str:
    """The CPU a PE or Mach-O library is for, in the names platform ids use (x64/arm64, arm64/x86_64)."""
    return parse_pe(data, name).machine if fmt == "PE" else parse_macho(data, name).cpu
