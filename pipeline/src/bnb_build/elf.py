"""ELF shared libraries: lief (pinned in pipeline/step-requirements.txt) reads the ELF structures; the
two GPU code containers inside them, which no library reads, are parsed here.

What the wheel and audit steps check:

- ``machine``: ``e_machine`` (62 x86-64, 183 AArch64);
- ``needed``, ``runpath``, ``rpath``, ``soname`` from the dynamic section;
- ``exported``: dynamic symbols that are defined, global, weak or unique, with default or protected
  visibility; ``exported_functions``: those of them that are functions (``STT_FUNC``, ``STT_GNU_IFUNC``);
- ``version_requirements``: versions required per library from ``.gnu.version_r``, e.g.
  ``{"libc.so.6": ["GLIBC_2.2.5", "GLIBC_2.34"], "libstdc++.so.6": ["CXXABI_1.3.9", "GLIBCXX_3.4.29"]}``;
- ``cuda_fatbin_entries``: the entries of the ``.nv_fatbin`` section (kind ``ELF`` = SASS or
  ``PTX``, and the ``sm_XX`` arch), read by :func:`parse_cuda_fatbin`;
- ``hip_offload_targets``: the ids of the clang offload bundles in ``.hip_fatbin``, e.g.
  ``hipv4-amdgcn-amd-amdhsa--gfx90a``, read by :func:`parse_hip_fatbin`.

The two containers follow the CUDA fatbin layout (header magic 0xBA55ED50) and clang's offload bundle
format; tests/pipeline/test_bnb_build_elf.py checks both against nvcc's, cuobjdump's and hipcc's output.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .binfmt import check_extents, enum_value, load_lief, unnamed_values
from .errors import InputError

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
    exported_functions: List[str] = field(default_factory=list)
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
    if len(data) < 64 or data[4] not in (1, 2) or data[5] not in (1, 2):  # EI_CLASS 32/64-bit, EI_DATA LSB/MSB
        msg = f"{name}: malformed ELF file (no valid ELF header)"
        raise InputError(msg)
    lief = load_lief()
    with unnamed_values():
        return _read(lief, data, name)


def _read(lief: Any, data: bytes, name: str) -> ElfInfo:
    config = lief.ELF.ParserConfig()
    config.parse_relocations = False
    config.parse_symtab_symbols = False
    config.parse_notes = False
    config.parse_overlay = False
    binary = lief.ELF.parse(data, config)
    if binary is None:
        msg = f"{name}: malformed ELF file (lief could not read it)"
        raise InputError(msg)
    header = binary.header
    if header.numberof_segments == 0 and header.numberof_sections == 0:
        msg = f"{name}: malformed ELF file (no program headers and no sections)"
        raise InputError(msg)
    extents = [(header.section_header_offset, header.numberof_sections * header.section_header_size)]
    extents += [(s.offset, s.size) for s in binary.sections if s.type != lief.ELF.Section.TYPE.NOBITS]
    check_extents(name, "ELF", extents, len(data))
    tag = lief.ELF.DynamicEntry.TAG
    info = ElfInfo(machine=enum_value(binary.header.machine_type)[0])
    for entry in binary.dynamic_entries:
        if entry.tag == tag.NEEDED:
            info.needed.append(entry.name)
        elif entry.tag == tag.SONAME:
            info.soname = entry.name
        elif entry.tag == tag.RPATH:
            info.rpath = entry.rpath.split(":")
        elif entry.tag == tag.RUNPATH:
            info.runpath = entry.runpath.split(":")

    sym = lief.ELF.Symbol
    bindings = (sym.BINDING.GLOBAL, sym.BINDING.WEAK, sym.BINDING.GNU_UNIQUE)
    visible = (sym.VISIBILITY.DEFAULT, sym.VISIBILITY.PROTECTED)
    functions = (sym.TYPE.FUNC, sym.TYPE.GNU_IFUNC)
    exported = [s for s in binary.dynamic_symbols if s.name and s.shndx != 0 and s.binding in bindings and s.visibility in visible]
    info.exported = sorted({s.name for s in exported})
    info.exported_functions = sorted({s.name for s in exported if s.type in functions})

    requirements: Dict[str, set] = {}
    for requirement in binary.symbols_version_requirement:
        versions = requirements.setdefault(requirement.name, set())
        versions.update(aux.name for aux in requirement.get_auxiliary_symbols())
    info.version_requirements = {lib: sorted(v, key=_version_key) for lib, v in sorted(requirements.items())}

    fatbin = binary.get_section(".nv_fatbin")
    if fatbin is not None:
        info.cuda_fatbin_entries = parse_cuda_fatbin(bytes(fatbin.content))
    bundles = binary.get_section(".hip_fatbin")
    if bundles is not None:
        info.hip_offload_targets = parse_hip_fatbin(bytes(bundles.content))
    return info


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
