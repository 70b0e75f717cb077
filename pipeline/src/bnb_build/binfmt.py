"""Readers for Windows PE/COFF DLLs and Mach-O dylibs, on lief (pinned in pipeline/step-requirements.txt).

What the wheel and audit steps check on libraries of the cross-built platforms:

- PE (``.dll``): the COFF machine (``x64``, ``arm64``), whether it is a DLL, the export table's names
  (and which of them are functions: the address lies in an executable section, or the export is
  forwarded), the DLLs of the import and delay-load tables, and the COFF time stamp;
- Mach-O (``.dylib``; a fat file's first slice): the CPU type (``arm64``, ``x86_64``), the file type,
  the exported symbols (the leading ``_`` of C names removed; split into C names and C++
  ``_Z``-mangled names, without the two the linker adds to every dylib, ``__mh_dylib_header`` and
  ``__dso_handle``), the dylibs it loads, and the minimum OS version (``LC_BUILD_VERSION`` /
  ``LC_VERSION_MIN_MACOSX``).

It also holds the naming rules the audit applies to every format: which exported names are a
library's own C functions (:func:`is_c_symbol`) and which are the C runtime's (:func:`c_runtime_exports`).

lief is imported on first use (:func:`load_lief`), so the modules importing this one load without it.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from .errors import InputError, ToolNotFound

_LIEF: Any = None


def load_lief() -> Any:
    """The lief module, with its own logging off (the readers here report what is wrong with a file)."""
    global _LIEF
    if _LIEF is None:
        try:
            import lief
        except ImportError:
            msg = (
                f"lief is not installed for {sys.executable}; the wheel and audit steps read libraries with it: "
                "python3 -m pip install -c pipeline/step-requirements.txt lief (the version pinned there)"
            )
            raise ToolNotFound(msg) from None
        lief.logging.disable()
        _LIEF = lief
    return _LIEF


@contextlib.contextmanager
def unnamed_values() -> Iterator[None]:
    """Around reading with lief: for a field value it has no name for (an unknown machine, symbol
    binding, dynamic tag...) lief returns a plain int and warns; the readers take the number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def enum_value(value: Any) -> Tuple[int, Optional[str]]:
    """The number and name of an enum field lief read (name None when lief has none for it)."""
    return int(value), getattr(value, "name", None)


def check_extents(name: str, fmt: str, extents: Iterable[Tuple[int, int]], size: int) -> None:
    """Raise InputError when a part of the file (offset, size) lies past its end: lief reads a
    truncated file as far as it goes and leaves the rest out without saying so."""
    for offset, length in extents:
        if length and offset + length > size:
            msg = f"{name}: malformed {fmt} file (truncated: a part at offset {offset:#x} ends at {offset + length:#x}, the file has {size:#x} bytes)"
            raise InputError(msg)


# ----------------------------------------------------------------------------------------------
# Naming rules

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TOOLCHAIN_PREFIXES = ("unw_",)
"""Exported C names that belong to a runtime the toolchain links statically, not to the library:
libunwind's API (zig's libc++ for Windows brings it, and a DLL without export annotations exports it)."""


def is_c_symbol(name: str) -> bool:
    """Whether an exported function name (Mach-O's leading ``_`` removed) is one of the library's own
    C functions: a C identifier that does not start with ``_`` and not a statically linked runtime's
    (:data:`TOOLCHAIN_PREFIXES`).

    C reserves identifiers starting with ``_`` to the implementation, so the rule leaves out C++
    names (``_Z...``; MSVC's ``?...`` are no C identifiers), the CUDA runtime's registration code
    (``__cudaRegisterLinkedBinary_*``, ``__fatbinwrap_*``), the ELF linker's ``_init``, ``_fini``,
    ``__bss_start``, ``_edata``, ``_end`` and mingw's ``_CRT_INIT``.
    """
    return bool(_C_IDENTIFIER.match(name)) and not name.startswith("_") and not name.startswith(TOOLCHAIN_PREFIXES)


def c_symbols(functions: Iterable[str]) -> List[str]:
    """The library's own C functions among ``functions`` (:func:`is_c_symbol`), sorted."""
    return sorted({n for n in functions if is_c_symbol(n)})


C_RUNTIME_FUNCTIONS = frozenset(
    """
    abort abs acos acosf acosh acoshf acoshl acosl asctime asctime_s asin asinf asinh asinhf asinhl asinl
    at_quick_exit atan atan2 atan2f atan2l atanf atanh atanhf atanhl atanl atexit atof atoi atol atoll bsearch
    bsearch_s btowc c16rtomb c32rtomb cabs cabsf cabsl cacos cacosf cacosh cacoshf cacoshl cacosl calloc carg cargf
    cargl casin casinf casinh casinhf casinhl casinl catan catanf catanh catanhf catanhl catanl cbrt cbrtf cbrtl ccos
    ccosf ccosh ccoshf ccoshl ccosl ceil ceilf ceill cexp cexpf cexpl chdir chgsign chmod chsize cimag cimagf cimagl
    clearerr clearerr_s clock clog clog10 clog10f clog10l clogf clogl close conj conjf conjl copysign copysignf
    copysignl cos cosf cosh coshf cosl cpow cpowf cpowl cproj cprojf cprojl creal crealf creall creat creat64 csin
    csinf csinh csinhf csinhl csinl csqrt csqrtf csqrtl ctan ctanf ctanh ctanhf ctanhl ctanl ctime cwait difftime
    div dup dup2 ecvt eof erf erfc erfcf erfcl erff erfl execl execle execlp execlpe execv execve execvp execvpe
    exit exp exp2 exp2f exp2l expf expl expm1 expm1f expm1l fabs fabsf fclose fcloseall fcvt fdim fdimf fdiml fdopen
    feclearexcept fegetenv fegetexceptflag fegetround feholdexcept feof ferror fesetenv fesetexceptflag fesetround
    fetestexcept fflush fgetc fgetchar fgetpos fgetpos64 fgets fgetwc fgetwchar fgetws filelength fileno finite
    floor floorf floorl fma fmaf fmal fmax fmaxf fmaxl fmin fminf fminl fmod fmodf fmodl fopen fopen64 fopen_s
    fpclass fprintf fprintf_s fputc fputchar fputs fputwc fputwchar fputws fread fread_s free freopen freopen64
    freopen_s frexp fscanf fscanf_s fseek fseeko fseeko64 fsetpos fsetpos64 fstat fstat32 fstat32i64 fstat64
    fstat64i32 ftell ftello ftello64 ftime ftruncate fwide fwprintf fwrite fwscanf gcvt getc getch getchar getche
    getcwd getenv getenv_s getpid gets gets_s getw getwc getwchar gmtime heapwalk hypot ilogb ilogbf ilogbl imaxabs
    imaxdiv is_wctype isalnum isalpha isascii isatty isblank iscntrl iscsym iscsymf isdigit isgraph isleadbyte
    islower isprint ispunct isspace isupper iswalnum iswalpha iswascii iswblank iswcntrl iswdigit iswgraph iswlower
    iswprint iswpunct iswspace iswupper iswxdigit isxdigit itoa j0 j1 jn kbhit labs ldexp ldiv lfind lgamma lgammaf
    lgammal llabs lldiv llrint llrintf llrintl llround llroundf llroundl localeconv localtime log log10 log10f
    log10l log1p log1pf log1pl log2 log2f log2l logb logbf logbl logf logl longjmp lrint lrintf lrintl lround
    lroundf lroundl lsearch lseek lseek64 ltoa malloc mblen mbrlen mbrtoc16 mbrtoc32 mbrtowc mbsinit mbsrtowcs
    mbsrtowcs_s mbstowcs mbstowcs_s mbtowc memccpy memchr memcmp memcpy memcpy_s memicmp memmove memmove_s memset
    mkdir mktemp mktime modf modff nan nanf nanl nearbyint nearbyintf nearbyintl nextafter nextafterf nextafterl
    nexttoward nexttowardf nexttowardl norm normf norml open open64 pclose perror popen pow powf powl printf
    printf_s putc putch putchar putenv puts putw putwc putwchar qsort qsort_s quick_exit raise rand rand_s read
    realloc remainder remainderf remainderl remove remquo remquof remquol rename rewind rint rintf rintl rmdir rmtmp
    round roundf roundl scalbln scalblnf scalblnl scalbn scalbnf scalbnl scanf scanf_s searchenv set_terminate
    set_unexpected setbuf setjmp setlocale setmode setvbuf signal sin sinf sinh sinhf sinl snprintf snprintf_s sopen
    spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp spawnvpe sprintf sprintf_s sqrt sqrtf srand sscanf
    sscanf_s stat stat32 stat32i64 stat64 stat64i32 strcasecmp strcat strcat_s strchr strcmp strcmpi strcoll strcpy
    strcpy_s strcspn strdup strerror strerror_s strftime stricmp stricoll strlen strlwr strncasecmp strncat
    strncat_s strncmp strncpy strncpy_s strnicmp strnlen strnset strpbrk strrchr strrev strset strspn strstr strtod
    strtof strtoimax strtok strtok_s strtol strtold strtoll strtoul strtoull strtoumax strupr strxfrm swab swprintf
    swscanf system tan tanf tanh tanhf tanl tell tempnam terminate tgamma tgammaf tgammal time timespec_get tmpfile
    tmpfile64 tmpfile_s tmpnam tmpnam_s toascii tolower toupper towlower towupper trunc truncf truncl umask
    unexpected ungetc ungetch ungetwc unlink utime vfprintf vfprintf_s vfscanf vfwprintf vfwscanf vprintf vprintf_s
    vscanf vsnprintf vsnprintf_s vsprintf vsprintf_s vsscanf vswprintf vswscanf vwprintf vwscanf wcrtomb wcrtomb_s
    wcscat wcscat_s wcschr wcscmp wcscmpi wcscoll wcscpy wcscpy_s wcscspn wcsdup wcsftime wcsicmp wcsicoll wcslen
    wcslwr wcsncat wcsncat_s wcsncmp wcsncpy wcsncpy_s wcsnicmp wcsnlen wcsnset wcspbrk wcsrchr wcsrev wcsrtombs
    wcsrtombs_s wcsset wcsspn wcsstr wcstod wcstof wcstoimax wcstok wcstok_s wcstol wcstold wcstoll wcstombs
    wcstombs_s wcstoul wcstoull wcstoumax wcsupr wcsxfrm wctob wctomb wctomb_s wctrans wctype wmemchr wmemcmp
    wmemcpy wmemcpy_s wmemmove wmemmove_s wmemset wpopen wprintf write wscanf wstat wstat32 wstat32i64 wstat64
    wstat64i32 y0 y1 yn
    """.split()
)
"""The C runtime's functions a DLL must not export: every name without a leading ``_`` that the UCRT
exports (its api sets ``api-ms-win-crt-*.dll``, as mingw-w64's import definitions list them, which
include msvcrt's POSIX names), and the C standard functions that the UCRT headers or mingw-w64's
static CRT define instead (the ``printf``/``scanf`` families, ``atexit``, ``at_quick_exit``, the
``wmem*`` functions, ``btowc``, ``wctob``, ``mbsinit``, ``fwide``)."""

C_RUNTIME_PREFIXES = ("_CRT_", "__mingw_")
"""The mingw-w64 CRT's own symbols (``_CRT_INIT``, ``__mingw_module_is_dll``), which a DLL exports
when nothing in it is marked for export."""


def c_runtime_exports(names: Iterable[str]) -> List[str]:
    """The C runtime's symbols among a DLL's exported ``names`` (see :data:`C_RUNTIME_FUNCTIONS`)."""
    return sorted({n for n in names if n in C_RUNTIME_FUNCTIONS or n.startswith(C_RUNTIME_PREFIXES)})


# ----------------------------------------------------------------------------------------------
# PE

# Windows DLLs every supported Windows has (the UCRT's api sets since Windows 10), plus the Visual C++
# runtime DLLs that CPython itself ships next to python.exe. Anything else must come with the wheel.
WINDOWS_SYSTEM_DLLS = (
    "kernel32.dll", "ntdll.dll", "kernelbase.dll", "advapi32.dll", "user32.dll", "gdi32.dll", "shell32.dll",
    "ole32.dll", "oleaut32.dll", "ws2_32.dll", "bcrypt.dll", "crypt32.dll", "secur32.dll", "version.dll",
    "ucrtbase.dll", "msvcrt.dll", "synchronization.dll", "dbghelp.dll", "psapi.dll", "setupapi.dll",
)  # fmt: skip
PYTHON_SHIPPED_DLLS = ("vcruntime140.dll", "vcruntime140_1.dll")
_WINDOWS_API_SET = re.compile(r"^(api|ext)-ms-win-[a-z0-9-]+\.dll$")

_PE_MACHINES = {"AMD64": "x64", "ARM64": "arm64", "I386": "x86", "ARMNT": "arm"}


@dataclass
class PeInfo:
    machine: str  # "x64", "arm64", or "0x...." when unknown
    is_dll: bool
    timestamp: int
    exported: List[str] = field(default_factory=list)
    exported_functions: List[str] = field(default_factory=list)
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
    lief = load_lief()
    with unnamed_values():
        return _read_pe(lief, data, name)


def _read_pe(lief: Any, data: bytes, name: str) -> PeInfo:
    binary = lief.PE.parse(data)
    if binary is None:
        msg = f"{name}: malformed PE file (no PE headers could be read)"
        raise InputError(msg)
    check_extents(name, "PE", ((s.pointerto_raw_data, s.sizeof_raw_data) for s in binary.sections), len(data))
    header = binary.header
    number, known = enum_value(header.machine)
    machine = _PE_MACHINES.get(known or "", f"{number:#06x}")
    info = PeInfo(machine, header.has_characteristic(lief.PE.Header.CHARACTERISTICS.DLL), header.time_date_stamps)
    if binary.has_exports:
        entries = [e for e in binary.get_export().entries if e.name]
        info.exported = sorted({e.name for e in entries})
        info.exported_functions = sorted({e.name for e in entries if e.is_forwarded or _in_code(lief, binary, e.address)})
    info.imports = [i.name for i in binary.imports] + [d.name for d in binary.delay_imports]
    return info


def _in_code(lief: Any, binary: Any, rva: int) -> bool:
    section = binary.section_from_rva(rva)
    return section is not None and section.has_characteristic(lief.PE.Section.CHARACTERISTICS.MEM_EXECUTE)


# ----------------------------------------------------------------------------------------------
# Mach-O

MH_DYLIB = 6
LINKER_DEFINED = ("_mh_dylib_header", "__dso_handle")  # __mh_dylib_header, ___dso_handle without one "_"
_MACHO_CPUS = {"ARM64": "arm64", "X86_64": "x86_64"}
_DYLIB_LOADS = ("LOAD_DYLIB", "LOAD_WEAK_DYLIB", "REEXPORT_DYLIB", "LOAD_UPWARD_DYLIB", "LAZY_LOAD_DYLIB")

# What every macOS has: the system libraries in /usr/lib (libSystem, libc++, libobjc...) and the frameworks.
MACOS_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/Frameworks/")


@dataclass
class MachOInfo:
    cpu: str  # "arm64", "x86_64", or "0x..." when unknown
    filetype: int
    exported: List[str] = field(default_factory=list)  # C names
    exported_cxx: List[str] = field(default_factory=list)  # C++ names, e.g. operator new of a static libc++
    exported_functions: List[str] = field(default_factory=list)  # exported names in code sections (C and C++)
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
    lief = load_lief()
    with unnamed_values():
        return _read_macho(lief, data, name)


def _read_macho(lief: Any, data: bytes, name: str) -> MachOInfo:
    fat = lief.MachO.parse(data) if data[:4] in (b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe") else None
    if fat is None or fat.size == 0:
        msg = f"{name} is not a 64-bit little-endian Mach-O file (first bytes {data[:4]!r})"
        raise InputError(msg)
    binary = fat.at(0)
    check_extents(name, "Mach-O", ((s.file_offset, s.file_size) for s in binary.segments), binary.original_size)
    header = binary.header
    cpu, known = enum_value(header.cpu_type)
    info = MachOInfo(_MACHO_CPUS.get(known or "", f"{cpu & 0xFFFFFFFF:#x}"), enum_value(header.file_type)[0])
    for command in binary.libraries:
        kind = enum_value(command.command)[1]
        if kind == "ID_DYLIB":
            info.install_name = command.name
        elif kind in _DYLIB_LOADS:
            info.dylibs.append(command.name)
    if binary.has_build_version:
        info.min_os = _version(binary.build_version.minos)
    elif binary.has_version_min:
        info.min_os = _version(binary.version_min.version)
    sections = list(binary.sections)
    names, functions = set(), set()
    for symbol in binary.exported_symbols:
        short = symbol.name[1:] if symbol.name.startswith("_") else symbol.name
        if short in LINKER_DEFINED:
            continue
        names.add(short)
        if _macho_in_code(lief, binary, sections, symbol):
            functions.add(short)
    info.exported = sorted(n for n in names if not n.startswith("_Z"))
    info.exported_cxx = sorted(n for n in names if n.startswith("_Z"))
    info.exported_functions = sorted(functions)
    return info


def _version(parts: List[int]) -> Tuple[int, int]:
    return (int(parts[0]), int(parts[1])) if len(parts) >= 2 else (int(parts[0]), 0)


def _macho_in_code(lief: Any, binary: Any, sections: List[Any], symbol: Any) -> bool:
    """Whether an exported symbol lies in a section of machine instructions (a function, not data)."""
    index = symbol.numberof_sections  # n_sect, 1-based; 0 when only the export trie lists the symbol
    if 0 < index <= len(sections):
        section = sections[index - 1]
    else:
        section = binary.section_from_virtual_address(symbol.value)
    flags = lief.MachO.Section.FLAGS
    return section is not None and (section.has(flags.PURE_INSTRUCTIONS) or section.has(flags.SOME_INSTRUCTIONS))


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
