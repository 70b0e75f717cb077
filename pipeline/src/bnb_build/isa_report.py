"""Which instruction set extensions a native library's code uses, measured against the CPU floor.

A wheel claims to run on every CPU of its platform's floor (a level of :mod:`bnb_build.cpu_levels`).
A compiler given ``-mavx512f`` for a whole target may put AVX-512 anywhere, a static constructor
included, and the library then dies with SIGILL while it loads on an older CPU; a build machine that
has the extension never sees it. This module disassembles the code sections of an ELF shared object
or a PE DLL and says, per instruction, which CPU extensions it needs:

- x86-64: iced-x86 (the CPUID features of each instruction);
- AArch64: capstone (the instruction groups it reports). Capstone 5 puts CRC32, the cryptography
  extensions and pointer authentication in groups, but not LSE atomics, FP16 arithmetic, dot product
  or SVE: those pass unseen, so an arm64 report is a lower bound.

lief (pinned like both in pipeline/step-requirements.txt) reads the files. Each extension belongs to
the first level that includes it (``cpu_levels.EXTENSIONS``); one no level includes is above every floor.

*Load-time code* is what runs while the library loads, before it can check the CPU: the functions
of ``.preinit_array``, ``.init_array`` and ``.ctors``, ``DT_INIT`` (ELF); the entry point (the C
runtime's start-up that calls DllMain), the TLS callbacks and the MinGW constructor list
``__CTOR_LIST__`` (PE); and everything these reach through direct calls and jumps (not through
function pointers). Code above the floor there is a failure whatever the library does at run time.
Code above the floor elsewhere is listed, and is a failure unless the tree declares that its library
checks the CPU at run time before running it (``runtime-dispatch``).

``describe_code_address`` says what is at one address of a library, for a try that died with SIGILL.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from . import cpu_levels
from .binfmt import load_lief, unnamed_values
from .errors import InputError, ToolNotFound

# ----------------------------------------------------------------------------------------------
# Data (the extensions each level adds: cpu_levels.EXTENSIONS)

AARCH64_HINT_SPACE_PAC = frozenset(
    ("paciasp", "autiasp", "pacibsp", "autibsp", "paciaz", "autiaz", "pacibz", "autibz", "pacia1716", "autia1716",
     "pacib1716", "autib1716", "xpaclri")  # fmt: skip
)
"""Pointer authentication instructions encoded in the HINT space: NOPs on a core without it."""

_AARCH64_GROUP_NAMES = {"FULLFP16": "FP16", "DOTPROD": "DotProd", "V8_1A": "Armv8.1-A", "V8_3A": "Armv8.3-A", "V8_4A": "Armv8.4-A"}
_AARCH64_NOT_EXTENSIONS = frozenset(("INVALID", "JUMP", "CALL", "RET", "INT", "PRIVILEGE", "BRANCH_RELATIVE", "ENDING"))

_X86 = "x86-64"
_ARM64 = "arm64"
_LEVELS = {_X86: cpu_levels.X86_64_LEVELS, _ARM64: cpu_levels.AARCH64_LEVELS}
_ARCH_OF_PLATFORM_ARCH = {"x86_64": _X86, "x64": _X86, "aarch64": _ARM64, "arm64": _ARM64}


def _level_of() -> Dict[Tuple[str, str], int]:
    table: Dict[Tuple[str, str], int] = {}
    for arch, levels in _LEVELS.items():
        for index, level in enumerate(levels):
            for extension in cpu_levels.EXTENSIONS[level]:
                table[(arch, extension)] = index
    return table


_LEVEL_OF = _level_of()


def extension_level(arch: str, extension: str) -> Optional[str]:
    """The first CPU level of `arch` (``x86-64``, ``arm64``) that has `extension` (a disassembler's
    name, e.g. ``AVX512BW``), None when no level has it."""
    index = _LEVEL_OF.get((arch, extension))
    return None if index is None else _LEVELS[arch][index]


def display_name(extension: str) -> str:
    """A readable name: ``AVX512BW`` -> ``AVX-512BW``, ``AVX512_VNNI`` -> ``AVX-512 VNNI``, ``SSE4_1`` -> ``SSE4.1``."""
    if extension in _AARCH64_GROUP_NAMES:
        return _AARCH64_GROUP_NAMES[extension]
    if extension.startswith("AVX512_"):
        return "AVX-512 " + extension[len("AVX512_"):]
    if extension.startswith("AVX512"):
        return "AVX-512" + extension[len("AVX512"):]
    if extension.startswith("SSE4_"):
        return "SSE4." + extension[len("SSE4_"):]
    return extension


# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Instruction:
    address: int  # relative to the library's load address (ELF virtual address, PE RVA)
    mnemonic: str
    extensions: Tuple[str, ...]  # beyond the arch's first level, the disassembler's names


@dataclass(frozen=True)
class Finding:
    """Code above the floor in one function: per extension above the floor, its first instruction there."""

    function: str
    examples: Tuple[Tuple[str, Instruction], ...]  # (extension, first instruction needing it)
    load_time: str = ""  # how it runs while the library loads ("a static constructor", ...), "" if it does not

    @property
    def extensions(self) -> Tuple[str, ...]:
        return tuple(e for e, _ in self.examples)

    @property
    def address(self) -> int:
        return min(ins.address for _, ins in self.examples)

    def describe(self) -> str:
        by_instruction: Dict[Instruction, List[str]] = {}
        for extension, ins in self.examples:
            by_instruction.setdefault(ins, []).append(display_name(extension))
        parts = [f"{ins.mnemonic} ({', '.join(names)}) at 0x{ins.address:x}" for ins, names in by_instruction.items()]
        return f"{self.function}: {'; '.join(parts)}" + (f", {self.load_time}" if self.load_time else "")


@dataclass
class IsaReport:
    library: str
    arch: str = ""  # x86-64 or arm64; "" when not analysed
    floor: Optional[str] = None
    extensions: Dict[str, int] = field(default_factory=dict)  # extension -> instructions using it
    findings: List[Finding] = field(default_factory=list)  # above the floor, per function
    load_time_roots: Tuple[str, ...] = ()  # "symbol: kind"
    has_symbols: bool = True  # a full symbol table: every function has its name
    skipped: str = ""  # why the code was not analysed

    @property
    def load_time_findings(self) -> List[Finding]:
        return [f for f in self.findings if f.load_time]

    @property
    def dispatched_findings(self) -> List[Finding]:
        return [f for f in self.findings if not f.load_time]

    def above_floor(self) -> List[str]:
        return sorted({e for f in self.findings for e in f.extensions}, key=lambda e: self.sort_key(e))

    def sort_key(self, extension: str) -> Tuple[int, str]:
        index = _LEVEL_OF.get((self.arch, extension))
        return (len(_LEVELS.get(self.arch, ())) if index is None else index, extension)

    def violations(self, runtime_dispatch: bool) -> List[str]:
        """Failures naming library, symbol, instruction and extension: load-time code above the
        floor; other code above it unless the library dispatches at run time."""
        floor = self.floor
        problems = [f"{self.library}: load-time code above the CPU floor {floor}: {f.describe()}" for f in self.load_time_findings]
        if not runtime_dispatch:
            dispatched = self.dispatched_findings
            problems += [
                f"{self.library}: code above the CPU floor {floor} and the tree declares no runtime-dispatch: {f.describe()}"
                for f in dispatched[:MAX_LISTED_VIOLATIONS]
            ]
            if len(dispatched) > MAX_LISTED_VIOLATIONS:
                more = len(dispatched) - MAX_LISTED_VIOLATIONS
                problems.append(f"{self.library}: {more} more function(s) with code above the CPU floor {floor} (listed under Instruction sets)")
        return problems


MAX_LISTED_VIOLATIONS = 10
"""Functions above the floor named one violation each (load-time ones: all of them); the rest are counted."""


# ----------------------------------------------------------------------------------------------
# Reading the library


@dataclass
class _Code:
    name: str
    arch: str
    sections: List[Tuple[int, bytes, str]]  # (address, bytes, name) of the executable sections
    stubs: List[Tuple[int, int]]  # address ranges of PLT stubs (calls into other libraries)
    symbols: List[Tuple[int, int, str]]  # (address, size, name) of functions, sorted
    starts: List[int] = field(default_factory=list)  # every known function start, sorted
    roots: List[Tuple[int, str]] = field(default_factory=list)  # load-time entry points: (address, kind)
    symbol_table: bool = False  # a full symbol table (ELF .symtab, PE COFF symbols), not just the exports

    def section_at(self, address: int) -> Optional[Tuple[int, bytes, str]]:
        for section in self.sections:
            if section[0] <= address < section[0] + len(section[1]):
                return section
        return None

    def is_stub(self, address: int) -> bool:
        return any(lo <= address < hi for lo, hi in self.stubs)

    def function_at(self, address: int) -> Tuple[Optional[int], str]:
        """The start and name of the function holding `address` ("sub_<start>" when it has no symbol)."""
        i = bisect.bisect_right(self.symbols, (address, float("inf"), "")) - 1
        k = bisect.bisect_right(self.starts, address) - 1
        start = self.starts[k] if k >= 0 else None
        if i >= 0:
            sym_addr, size, name = self.symbols[i]
            if (size and address < sym_addr + size) or (not size and (start is None or start <= sym_addr)):
                return sym_addr, name
        if start is not None:
            return start, f"sub_{start:x}"
        return None, f"0x{address:x}"


def _read_library(data: bytes, name: str) -> _Code:
    lief = load_lief()
    with unnamed_values():
        if data[:4] == b"\x7fELF":
            return _read_elf(lief, data, name)
        if data[:2] == b"MZ":
            return _read_pe(lief, data, name)
    msg = f"{name} is neither an ELF shared object nor a PE DLL; the ISA report reads those only"
    raise InputError(msg)


def _read_elf(lief: Any, data: bytes, name: str) -> _Code:
    binary = lief.ELF.parse(data)
    if binary is None:
        msg = f"{name}: malformed ELF file (lief could not read it)"
        raise InputError(msg)
    machine = str(binary.header.machine_type).rsplit(".", 1)[-1]
    arch = {"X86_64": _X86, "AARCH64": _ARM64}.get(machine)
    code = _Code(name, arch or machine, [], [], [])
    if arch is None:
        return code
    section_type, flags = lief.ELF.Section.TYPE, lief.ELF.Section.FLAGS
    for s in binary.sections:
        if s.has(flags.EXECINSTR) and s.type != section_type.NOBITS and s.size:
            code.sections.append((s.virtual_address, bytes(s.content), s.name))
            if s.name.startswith((".plt", ".iplt")):
                code.stubs.append((s.virtual_address, s.virtual_address + s.size))
    function_types = {lief.ELF.Symbol.TYPE.FUNC, lief.ELF.Symbol.TYPE.GNU_IFUNC}
    symbols = {}
    for sym in [*binary.symtab_symbols, *binary.dynamic_symbols]:
        if sym.type in function_types and sym.value and sym.shndx != 0:
            symbols.setdefault(sym.value, (sym.value, sym.size, sym.name))
    code.symbols = sorted(symbols.values())
    code.symbol_table = any(True for _ in binary.symtab_symbols)
    relocated = {r.address: r.addend for r in binary.relocations if r.addend}
    pointer = "<Q" if binary.header.identity_class == lief.ELF.Header.CLASS.ELF64 else "<I"
    size = struct.calcsize(pointer)
    kinds = {section_type.PREINIT_ARRAY: "a pre-init function (.preinit_array)", section_type.INIT_ARRAY: "a static constructor"}
    for s in binary.sections:
        kind = kinds.get(s.type) or ("a static constructor (.ctors)" if s.name == ".ctors" else None)
        if kind is None:
            continue
        content = bytes(s.content)
        for offset in range(0, len(content) - size + 1, size):
            (value,) = struct.unpack_from(pointer, content, offset)
            value = relocated.get(s.virtual_address + offset, value)
            if value not in (0, (1 << (8 * size)) - 1):
                code.roots.append((value, kind))
    init = binary.get(lief.ELF.DynamicEntry.TAG.INIT)
    if init is not None and init.value:
        code.roots.append((init.value, "the library's initialization function (DT_INIT)"))
    code.starts = sorted({*symbols, *(f.address for f in binary.functions if f.address), *(r for r, _ in code.roots)})
    return code


def _read_pe(lief: Any, data: bytes, name: str) -> _Code:
    config = lief.PE.ParserConfig()
    config.parse_exceptions = True  # .pdata: where each function starts and ends
    config.parse_rsrc = config.parse_signature = False
    binary = lief.PE.parse(data, config)
    if binary is None:
        msg = f"{name}: malformed PE file (lief could not read it)"
        raise InputError(msg)
    machine = str(binary.header.machine).rsplit(".", 1)[-1]
    arch = {"AMD64": _X86, "ARM64": _ARM64}.get(machine)
    code = _Code(name, arch or machine, [], [], [])
    if arch is None:
        return code
    execute = lief.PE.Section.CHARACTERISTICS.MEM_EXECUTE
    for s in binary.sections:
        if s.has_characteristic(execute) and s.size:
            content = bytes(s.content)[: max(s.virtual_size, 0) or None]
            code.sections.append((s.virtual_address, content, s.name))
    base = binary.optional_header.imagebase
    symbols = {}
    for export in binary.get_export().entries if binary.has_exports else []:
        if export.address and not export.is_extern:
            symbols.setdefault(export.address, (export.address, 0, export.name))
    for sym in binary.symbols:  # the COFF symbol table, where the linker kept one
        section = sym.section
        if sym.section_number > 0 and section is not None and section.has_characteristic(execute) and sym.name:
            rva = section.virtual_address + sym.value
            symbols.setdefault(rva, (rva, 0, sym.name))
    code.symbols = sorted(symbols.values())
    code.symbol_table = len(binary.symbols) > 0
    entry = binary.optional_header.addressof_entrypoint
    if entry:
        code.roots.append((entry, "the DLL entry point (the C runtime start-up that calls DllMain)"))
    if binary.has_tls:
        code.roots += [(va - base, "a TLS callback") for va in binary.tls.callbacks if va]
    code.roots += [(rva, "a static constructor (__CTOR_LIST__)") for rva in _mingw_constructors(binary, code, base)]
    code.starts = sorted({*symbols, *(r for r, _ in code.roots), *(f.address for f in binary.exception_functions if f.address)})
    return code


def _mingw_constructors(binary: Any, code: _Code, base: int) -> List[int]:
    """The functions of MinGW's constructor list ``__CTOR_LIST__``: in a data section, an aligned -1,
    then pointers into code, then 0."""
    found: List[int] = []
    code_starts = {start for start, _, _ in code.sections}
    for section in binary.sections:
        if section.virtual_address in code_starts:
            continue
        words = [w for (w,) in struct.iter_unpack("<Q", bytes(section.content)[: len(section.content) // 8 * 8])]
        for i, word in enumerate(words):
            if word != 0xFFFFFFFFFFFFFFFF:
                continue
            entries = []
            for value in words[i + 1 :]:
                if value == 0 or code.section_at(value - base) is None:
                    break
                entries.append(value - base)
            if entries and i + 1 + len(entries) < len(words) and words[i + 1 + len(entries)] == 0:
                found += entries
    return found


# ----------------------------------------------------------------------------------------------
# Disassembling


@dataclass(frozen=True)
class _Decoded:
    instruction: Instruction
    length: int
    flow: str  # next, call, jump, branch (conditional), stop (return, indirect jump, invalid)
    target: Optional[int]


BACKWARD_COMPATIBLE = frozenset(("tzcnt",))
"""x86 instructions whose encoding runs on CPUs without their extension: ``tzcnt`` is ``rep bsf``,
which a CPU without BMI1 runs as ``bsf`` (the same result for a non-zero operand); compilers emit it
for every target when counting trailing zeros, so it is not code above the floor."""


class _X86Decoder:
    def __init__(self) -> None:
        try:
            import iced_x86
        except ImportError:
            raise ToolNotFound(_missing("iced-x86")) from None
        self._iced = iced_x86
        self._features = {v: k for k, v in vars(iced_x86.CpuidFeature).items() if isinstance(v, int) and not k.startswith("_")}
        self._mnemonics = {v: k.lower() for k, v in vars(iced_x86.Mnemonic).items() if isinstance(v, int) and not k.startswith("_")}
        fc = iced_x86.FlowControl
        self._flow = {fc.NEXT: "next", fc.CALL: "call", fc.UNCONDITIONAL_BRANCH: "jump", fc.CONDITIONAL_BRANCH: "branch",
                      fc.INDIRECT_CALL: "next", fc.INTERRUPT: "next", fc.XBEGIN_XABORT_XEND: "next"}  # fmt: skip
        self._cache: Dict[int, Tuple[str, Tuple[str, ...]]] = {}
        self._decoders: Dict[int, Any] = {}  # section address -> its decoder (made once: it copies the bytes)

    def decode(self, section: Tuple[int, bytes, str], address: int) -> Iterator[_Decoded]:
        start, data, _ = section
        decoder = self._decoders.get(start)
        if decoder is None:
            decoder = self._decoders[start] = self._iced.Decoder(64, data, ip=start)
        decoder.position = address - start
        decoder.ip = address
        while decoder.can_decode:
            yield self._convert(decoder.decode())

    def _convert(self, ins: Any) -> _Decoded:
        code = ins.code
        known = self._cache.get(code)
        if known is None:
            mnemonic = self._mnemonics.get(ins.mnemonic, "?")
            features = () if mnemonic in BACKWARD_COMPATIBLE else \
                tuple(f for f in (self._features[x] for x in ins.cpuid_features()) if (_X86, f) not in _BASELINE)
            known = self._cache[code] = (mnemonic, features)
        if code == 0:  # Code.INVALID
            return _Decoded(Instruction(ins.ip, "(bad)", ()), max(ins.len, 1), "stop", None)
        flow = self._flow.get(ins.flow_control, "stop")
        target = (ins.near_branch_target or None) if flow in ("call", "jump", "branch") else None
        if flow in ("call", "jump", "branch") and not target:
            flow = "next" if flow == "call" else "stop"
        return _Decoded(Instruction(ins.ip, known[0], known[1]), ins.len, flow, target)


class _Arm64Decoder:
    def __init__(self) -> None:
        try:
            import capstone
            from capstone import arm64_const
        except ImportError:
            raise ToolNotFound(_missing("capstone")) from None
        self._cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
        self._cs.detail = True
        self._groups = {v: k[len("ARM64_GRP_"):] for k, v in vars(arm64_const).items() if k.startswith("ARM64_GRP_")}
        self._imm = arm64_const.ARM64_OP_IMM

    def decode(self, section: Tuple[int, bytes, str], address: int) -> Iterator[_Decoded]:
        start, data, _ = section
        offset = address - start
        while offset + 4 <= len(data):
            window = data[offset : offset + 0x10000]  # in windows: a walk from one address reads little
            end = offset + len(window) // 4 * 4
            for ins in self._cs.disasm(window, start + offset):
                yield self._convert(ins)
                offset += 4
            if offset < end:  # an invalid word: literal data, or not decodable
                yield _Decoded(Instruction(start + offset, "(bad)", ()), 4, "stop", None)
                offset += 4

    def _convert(self, ins: Any) -> _Decoded:
        groups = [self._groups.get(g, str(g)) for g in ins.groups]
        mnemonic = ins.mnemonic
        extensions = tuple(
            g for g in groups
            if g not in _AARCH64_NOT_EXTENSIONS and (_ARM64, g) not in _BASELINE and not (g == "PAC" and mnemonic in AARCH64_HINT_SPACE_PAC)
        )  # fmt: skip
        target = next((op.imm for op in ins.operands if op.type == self._imm), None) if ("JUMP" in groups or "CALL" in groups) else None
        if "RET" in groups or mnemonic in ("br", "braa", "brab", "braaz", "brabz"):
            flow = "stop"
        elif "CALL" in groups:
            flow = "call" if target is not None else "next"
        elif "JUMP" in groups:
            flow = ("jump" if mnemonic == "b" else "branch") if target is not None else "stop"
        else:
            flow = "next"
        return _Decoded(Instruction(ins.address, mnemonic, extensions), 4, flow, target)


_BASELINE = frozenset((arch, e) for arch, levels in _LEVELS.items() for e in cpu_levels.EXTENSIONS[levels[0]])


def _missing(package: str) -> str:
    return f"{package} is not installed; the audit's ISA report disassembles with it: python3 -m pip install -c pipeline/step-requirements.txt {package}"


def _decoder(arch: str) -> Any:
    return _X86Decoder() if arch == _X86 else _Arm64Decoder()


def _sweep(code: _Code, decoder: Any) -> Tuple[List[Instruction], List[int]]:
    """Every instruction of the executable sections that needs an extension beyond the arch's first
    level, and the addresses of the ``cpuid`` instructions; the targets of direct calls join the known
    function starts (a library without symbols)."""
    found, cpuid, called = [], [], set()
    for section in code.sections:
        for decoded in decoder.decode(section, section[0]):
            if decoded.instruction.extensions:
                found.append(decoded.instruction)
            elif decoded.instruction.mnemonic == "cpuid":
                cpuid.append(decoded.instruction.address)
            if decoded.flow == "call" and decoded.target is not None and code.section_at(decoded.target) is not None:
                called.add(decoded.target)
    code.starts = sorted(called.union(code.starts))
    return found, cpuid


CPU_CHECK_INSTRUCTIONS = frozenset(("xgetbv",))
"""Instructions that are part of checking the CPU itself: ``xgetbv`` (which register states the
operating system saves) runs only after CPUID reports OSXSAVE. In a function that runs ``cpuid``
(libgcc's ``__cpu_indicator_init``, a library's own CPU detection) it is not code above the floor."""


def _load_time(code: _Code, decoder: Any) -> Dict[int, int]:
    """Instruction address -> the load-time root it is reached from (direct calls, jumps and branches)."""
    reached: Dict[int, int] = {}
    starts = set(code.starts)
    work = [(address, address) for address, _ in code.roots]
    while work:
        address, root = work.pop()
        section = code.section_at(address)
        if address in reached or section is None or code.is_stub(address):
            continue
        for decoded in decoder.decode(section, address):
            here = decoded.instruction.address
            if here in reached or (here != address and here in starts):  # not into the next function (after a call that does not return)
                break
            reached[here] = root
            if decoded.target is not None and decoded.flow in ("call", "jump", "branch"):
                work.append((decoded.target, root))
            if decoded.flow in ("jump", "stop"):
                break
    return reached


# ----------------------------------------------------------------------------------------------
# The report


def analyse(data: bytes, name: str, floor: Optional[str]) -> IsaReport:
    """The ISA report of one library (`name` for messages); `floor`: the platform's CPU level, None: list only."""
    code = _read_library(data, name)
    report = IsaReport(name, floor=floor)
    if code.arch not in _LEVELS:
        report.skipped = f"machine {code.arch} is not analysed (x86-64 and arm64 are)"
        return report
    report.arch = code.arch
    if floor is not None:
        _check_floor(code.arch, floor)
    if not code.sections:
        report.skipped = "no executable sections"
        return report
    decoder = _decoder(code.arch)
    report.has_symbols = code.symbol_table
    instructions, cpuid = _sweep(code, decoder)
    checking = {code.function_at(address)[0] for address in cpuid}  # functions that check the CPU
    reached = _load_time(code, decoder)
    kinds = dict(reversed(code.roots))
    report.load_time_roots = tuple(sorted({f"{code.function_at(r)[1]}: {kinds[r]}" for r, _ in code.roots if code.section_at(r)}))
    floor_index = _LEVELS[code.arch].index(floor) if floor is not None else None
    # per function (its start: two files' local functions may share a name) and load-time phrase
    per_function: Dict[Tuple[Optional[int], str, str], Dict[str, Instruction]] = {}
    for ins in instructions:
        for e in ins.extensions:
            report.extensions[e] = report.extensions.get(e, 0) + 1
        if floor_index is None:
            continue
        above = tuple(e for e in ins.extensions if _LEVEL_OF.get((code.arch, e), len(_LEVELS[code.arch])) > floor_index)
        if not above:
            continue
        start, function = code.function_at(ins.address)
        if ins.mnemonic in CPU_CHECK_INSTRUCTIONS and start in checking:
            continue
        root = reached.get(ins.address)
        load_time = _load_time_phrase(code, root, function, kinds) if root is not None else ""
        first = per_function.setdefault((start, function, load_time), {})
        for e in above:
            first.setdefault(e, ins)
    for (_, function, load_time), first in per_function.items():
        examples = tuple(sorted(first.items(), key=lambda item: report.sort_key(item[0])))
        report.findings.append(Finding(function, examples, load_time))
    report.findings.sort(key=lambda f: (not f.load_time, f.address))
    report.extensions = dict(sorted(report.extensions.items(), key=lambda item: report.sort_key(item[0])))
    return report


def _load_time_phrase(code: _Code, root: int, function: str, kinds: Mapping[int, str]) -> str:
    root_name = code.function_at(root)[1]
    if root_name == function:
        return kinds[root]
    return f"reached from {root_name}, {kinds[root]}"


def _check_floor(arch: str, floor: str) -> None:
    try:
        cpu_levels.check_level(arch.replace("-", "_"), floor)
    except ValueError as e:
        raise InputError(str(e)) from None


def platform_arch(platform_arch_name: str) -> str:
    """The ISA family (``x86-64``, ``arm64``) of a platform's arch (matrix.toml ``arch``)."""
    return _ARCH_OF_PLATFORM_ARCH.get(platform_arch_name, platform_arch_name)


def describe_code_address(library: Path, offset: int, floor: str | None) -> str:
    """What is at `offset` of `library` (relative to where it is loaded: a crash's pc minus the
    library's base, the ELF virtual address or PE RVA): its function, the instruction and the
    extensions it needs, whether it is load-time code, and whether the CPU floor has them, e.g.
    ``libbitsandbytes_cpu.so+0x1055 in _GLOBAL__sub_I_cpu_ops.cpp: vmovdqu8 (AVX-512BW), a static
    constructor; floor x86-64-v3 has no AVX-512BW``."""
    library = Path(library)
    where = f"{library.name}+0x{offset:x}"
    try:
        data = library.read_bytes()
    except OSError as e:
        return f"{where}: {library} cannot be read ({e.strerror or e})"
    code = _read_library(data, library.name)
    if code.arch not in _LEVELS:
        return f"{where}: machine {code.arch} is not analysed (x86-64 and arm64 are)"
    if floor is not None:
        _check_floor(code.arch, floor)
    section = code.section_at(offset)
    if section is None:
        return f"{where}: not in the library's code (executable sections: {', '.join(s[2] for s in code.sections) or 'none'})"
    decoder = _decoder(code.arch)
    _sweep(code, decoder)  # the function starts of a library without symbols
    decoded = next(decoder.decode(section, offset))
    ins = decoded.instruction
    _, function = code.function_at(offset)
    extensions = ", ".join(display_name(e) for e in ins.extensions) or f"baseline {_LEVELS[code.arch][0]}"
    text = f"{where} in {function}: {ins.mnemonic} ({extensions})"
    reached = _load_time(code, decoder)
    kinds = dict(reversed(code.roots))
    root = reached.get(offset)
    text += f", {_load_time_phrase(code, root, function, kinds)}" if root is not None else ", not load-time code"
    if floor is not None:
        index = _LEVELS[code.arch].index(floor)
        above = [e for e in ins.extensions if _LEVEL_OF.get((code.arch, e), len(_LEVELS[code.arch])) > index]
        text += f"; floor {floor} has no {', '.join(display_name(e) for e in above)}" if above else f"; floor {floor} has it"
    return text


# ----------------------------------------------------------------------------------------------
# Markdown


def render(reports: Sequence[IsaReport], runtime_dispatch: bool, cell: Callable[[str], str] = lambda s: s) -> List[str]:
    """The lines of the ISA section of a wheel in audit.md."""
    if not reports:
        return []
    dispatch = ("the tree declares runtime-dispatch: code above the floor outside load-time code is listed"
                if runtime_dispatch else "the tree declares no runtime-dispatch: code above the floor is a violation")  # fmt: skip
    lines = ["", "### Instruction sets", "", f"Load-time code above the CPU floor is a violation; {dispatch}.", ""]
    lines += ["| library | CPU floor | extensions used | above the floor | load-time |", "|---|---|---|---|---|"]
    for r in reports:
        if r.skipped:
            lines.append(f"| {cell(r.library)} | {r.floor or '-'} | {cell(r.skipped)} | - | - |")
            continue
        used = ", ".join(f"{display_name(e)} ({n})" for e, n in r.extensions.items()) or "baseline only"
        above = ", ".join(display_name(e) for e in r.above_floor()) if r.floor else "no floor given"
        load = "ABOVE THE FLOOR" if r.load_time_findings else ("within the floor" if r.floor else "-")
        lines.append(f"| {cell(r.library)} | {r.floor or '-'} | {cell(used)} | {cell(above or 'none')} | {load} |")
    for r in reports:
        if r.skipped or not (r.findings or r.load_time_roots or not r.has_symbols):
            continue
        lines += ["", f"{r.library}:", ""]
        if r.load_time_roots:
            lines.append(f"- load-time entry points: {'; '.join(r.load_time_roots)}")
        if not r.has_symbols:
            lines.append("- no symbol table: functions without an exported name are named sub_<address>")
        lines += [f"- load-time, above the floor: {f.describe()}" for f in r.load_time_findings]
        lines += [f"- above the floor: {f.describe()}" for f in r.dispatched_findings]
    return lines
