"""A minimal reader for 64-bit little-endian ELF shared libraries (standard library ``struct`` only).

It reads what the wheel and audit steps check:

- ``needed``, ``runpath``, ``rpath``, ``soname`` from the dynamic section;
- ``exported``: dynamic symbols that are defined, global or weak, with default visibility;
- ``version_requirements``: versions required per library from ``.gnu.version_r``, e.g.
  ``{"libc.so.6": ["GLIBC_2.2.5", "GLIBC_2.34"], "libstdc++.so.6": ["CXXABI_1.3.9", "GLIBCXX_3.4.29"]}``;
- ``cuda_fatbin_entries``: the entries of the ``.nv_fatbin`` section (kind ``ELF`` = SASS or
  ``PTX``, and the ``sm_XX`` arch);
- ``hip_offload_targets``: the ids of the clang offload bundles in ``.hip_fatbin``, e.g.
  ``hipv4-amdgcn-amd-amdhsa--gfx90a``.

Layouts follow the System V ABI / ELF-64 object file format, the GNU symbol versioning spec,
the CUDA fatbin container (header magic 0xBA55ED50) and clang's offload bundle format.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .errors import InputError

# ELF constants
SHT_DYNSYM = 11
SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NULL, DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 14, 15, 29
STB_GLOBAL, STB_WEAK = 1, 2
STV_DEFAULT = 0
SHN_UNDEF = 0

# CUDA fatbin
FATBIN_MAGIC = 0xBA55ED50
FATBIN_KINDS = {1: "PTX", 2: "ELF"}
FATBIN_FLAG_COMPRESSED = 0x2000
FATBIN_FLAG_COMPRESSED_ZSTD = 0x8000

# HIP / clang offload bundles
OFFLOAD_BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_BUNDLE_MAGIC = b"CCOB"
COMPRESSED_UNKNOWN = "compressed-unknown"


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "ELF" (SASS), "PTX" or "kind<N>"
    arch: str  # e.g. "sm_90"
    compressed: bool


@dataclass
class ElfInfo:
    machine: int
    needed: List[str] = field(default_factory=list)
    soname: Optional[str] = None
    runpath: List[str] = field(default_factory=list)
    rpath: List[str] = field(default_factory=list)
    exported: List[str] = field(default_factory=list)
    version_requirements: Dict[str, List[str]] = field(default_factory=dict)
    cuda_fatbin_entries: List[FatbinEntry] = field(default_factory=list)
    hip_offload_targets: List[str] = field(default_factory=list)

    @property
    def sass_archs(self) -> List[str]:
        """The archs with machine code (SASS) in the CUDA fatbin, e.g. ``["sm_75", "sm_90"]``."""
        return sorted({e.arch for e in self.cuda_fatbin_entries if e.kind == "ELF"}, key=_arch_key)

    @property
    def ptx_archs(self) -> List[str]:
        return sorted({e.arch for e in self.cuda_fatbin_entries if e.kind == "PTX"}, key=_arch_key)

    @property
    def gfx_targets(self) -> List[str]:
        """The AMD GPU targets of the HIP bundles, e.g. ``["gfx90a"]`` (features such as :xnack- kept)."""
        targets = set()
        for t in self.hip_offload_targets:
            if t == COMPRESSED_UNKNOWN:
                targets.add(t)
            elif "amdgcn" in t:
                targets.add(t.rsplit("--", 1)[-1])
        return sorted(targets)

    def required_versions(self, prefix: str) -> List[str]:
        """Every required version starting with ``prefix`` (e.g. ``GLIBC_``), over all libraries."""
        found = {v for versions in self.version_requirements.values() for v in versions if v.startswith(prefix)}
        return sorted(found, key=_version_key)

    @property
    def glibc_requirement(self) -> Optional[Tuple[int, int]]:
        """The newest GLIBC_x.y version required, or None when no GLIBC version is required."""
        best: Optional[Tuple[int, int]] = None
        for v in self.required_versions("GLIBC_"):
            m = re.match(r"^GLIBC_(\d+)\.(\d+)", v)
            if m:
                ver = (int(m.group(1)), int(m.group(2)))
                best = ver if best is None or ver > best else best
        return best


def _version_key(v: str) -> Tuple[str, Tuple[int, ...]]:
    name, _, num = v.partition("_")
    return name, tuple(int(x) for x in re.findall(r"\d+", num))


def _arch_key(arch: str) -> Tuple[int, str]:
    m = re.search(r"\d+", arch)
    return (int(m.group()) if m else 0, arch)


# ----------------------------------------------------------------------------------------------


def read_elf(path: Path | str) -> ElfInfo:
    """Read the facts listed in the module docstring from the ELF file at ``path``."""
    data = Path(path).read_bytes()
    return parse_elf(data, str(path))


def parse_elf(data: bytes, name: str = "<bytes>") -> ElfInfo:
    if data[:4] != b"\x7fELF":
        msg = f"{name} is not an ELF file (first bytes {data[:4]!r})"
        raise InputError(msg)
    if data[4] != 2 or data[5] != 1:
        msg = f"{name}: only 64-bit little-endian ELF is supported (class {data[4]}, data {data[5]})"
        raise InputError(msg)
    try:
        return _parse(data)
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        msg = f"{name}: malformed ELF file ({e})"
        raise InputError(msg) from e


def _parse(data: bytes) -> ElfInfo:
    (_type, machine, _version, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum, shentsize, shnum,
     shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    shstr = raw[shstrndx] if shnum else None
    sections = []
    for name_off, sh_type, _f, _addr, offset, size, link, info, _align, entsize in raw:
        name = _cstr(data, shstr[4] + name_off) if shstr else ""
        sections.append(Section(name, sh_type, offset, size, link, info, entsize))

    result = ElfInfo(machine=machine)
    for sec in sections:
        if sec.type == SHT_DYNAMIC:
            _read_dynamic(data, sec, sections[sec.link], result)
        elif sec.type == SHT_DYNSYM:
            result.exported = _read_exports(data, sec, sections[sec.link])
        elif sec.type == SHT_GNU_VERNEED:
            result.version_requirements = _read_verneed(data, sec, sections[sec.link])
        elif sec.name == ".nv_fatbin":
            result.cuda_fatbin_entries = parse_cuda_fatbin(data[sec.offset : sec.offset + sec.size])
        elif sec.name == ".hip_fatbin":
            result.hip_offload_targets = parse_hip_fatbin(data[sec.offset : sec.offset + sec.size])
    return result


def _cstr(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode("utf-8")


def _read_dynamic(data: bytes, sec: Section, strtab: Section, result: ElfInfo) -> None:
    for off in range(sec.offset, sec.offset + sec.size, 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == DT_NULL:
            break
        if tag in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH):
            text = _cstr(data, strtab.offset + val)
            if tag == DT_NEEDED:
                result.needed.append(text)
            elif tag == DT_SONAME:
                result.soname = text
            elif tag == DT_RPATH:
                result.rpath = text.split(":")
            else:
                result.runpath = text.split(":")


def _read_exports(data: bytes, sec: Section, strtab: Section) -> List[str]:
    names = set()
    entsize = sec.entsize or 24
    for off in range(sec.offset + entsize, sec.offset + sec.size, entsize):  # entry 0 is the null symbol
        name_off, info, other, shndx, _value, _size = struct.unpack_from("<IBBHQQ", data, off)
        bind = info >> 4
        if shndx != SHN_UNDEF and bind in (STB_GLOBAL, STB_WEAK) and (other & 3) == STV_DEFAULT and name_off:
            names.add(_cstr(data, strtab.offset + name_off))
    return sorted(names)


def _read_verneed(data: bytes, sec: Section, strtab: Section) -> Dict[str, List[str]]:
    result: Dict[str, List[str]] = {}
    off = sec.offset
    for _ in range(sec.info):  # sh_info = number of Verneed entries
        _ver, cnt, file_off, aux, nxt = struct.unpack_from("<HHIII", data, off)
        library = _cstr(data, strtab.offset + file_off)
        versions = set(result.get(library, []))
        aux_off = off + aux
        for _ in range(cnt):
            _hash, _flags, _other, name_off, aux_next = struct.unpack_from("<IHHII", data, aux_off)
            versions.add(_cstr(data, strtab.offset + name_off))
            aux_off += aux_next
        result[library] = sorted(versions, key=_version_key)
        if not nxt:
            break
        off += nxt
    return dict(sorted(result.items()))


# ----------------------------------------------------------------------------------------------
# CUDA fatbin: a section holds one or more fatbins (one per translation unit), each
#   header:  u32 magic 0xBA55ED50, u16 version, u16 header size, u64 size of the entries
#   entries: u16 kind (1 PTX, 2 ELF), u16 version, u32 header size, u64 payload size,
#            u32 compressed size, u32 -, u16 minor, u16 major, u32 arch (75 = sm_75),
#            u32 name offset, u32 name size, u64 flags (0x2000: compressed), ...
# The entry header stays uncompressed, so compressed entries still report kind and arch.


def parse_cuda_fatbin(section: bytes) -> List[FatbinEntry]:
    entries = []
    pos = 0
    while pos + 16 <= len(section):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", section, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fatbins are 8-byte aligned; skip padding between them
            continue
        entry = pos + header_size
        end = entry + fat_size
        while entry + 48 <= end:
            kind, _ever, eheader, payload = struct.unpack_from("<HHIQ", section, entry)
            arch = struct.unpack_from("<I", section, entry + 28)[0]
            flags = struct.unpack_from("<Q", section, entry + 40)[0]
            compressed = bool(flags & (FATBIN_FLAG_COMPRESSED | FATBIN_FLAG_COMPRESSED_ZSTD))
            entries.append(FatbinEntry(FATBIN_KINDS.get(kind, f"kind{kind}"), f"sm_{arch}", compressed))
            if eheader == 0:
                break
            entry += eheader + payload
        pos = max(end, pos + 16)
    return sorted(set(entries), key=lambda e: (_arch_key(e.arch), e.kind, e.compressed))


# ----------------------------------------------------------------------------------------------
# HIP: ``.hip_fatbin`` holds clang offload bundles, each
#   "__CLANG_OFFLOAD_BUNDLE__", u64 number of entries, then per entry
#   u64 offset, u64 size, u64 id length, id (e.g. "hipv4-amdgcn-amd-amdhsa--gfx90a").
# A compressed bundle starts with "CCOB"; its header lists no targets.


def parse_hip_fatbin(section: bytes) -> List[str]:
    targets = set()
    for m in re.finditer(re.escape(OFFLOAD_BUNDLE_MAGIC), section):
        pos = m.end()
        (count,) = struct.unpack_from("<Q", section, pos)
        pos += 8
        for _ in range(count):
            _offset, _size, id_len = struct.unpack_from("<QQQ", section, pos)
            pos += 24
            targets.add(section[pos : pos + id_len].decode("ascii", errors="replace"))
            pos += id_len
    if COMPRESSED_BUNDLE_MAGIC in section and not targets:
        targets.add(COMPRESSED_UNKNOWN)
    return sorted(targets)
