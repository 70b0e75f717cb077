"""The tree being built: its own settings (`[tool.bitsandbytes-ci]` of its pyproject.toml) and what the
pipeline reads from its files (version, package, what its CMake asks for).

The pipeline builds any bitsandbytes-shaped tree: CMake with COMPUTE_BACKEND, a Python package, any
PEP 517 backend. A tree configures the pipeline the way cibuildwheel reads `[tool.cibuildwheel]`: what
it sets overrides the pipeline's defaults (matrix.toml), what it leaves out keeps them, and a tree
with no such table builds with the defaults. Keys are kebab-case; an unknown key is an error with
the closest known key as a suggestion.

    [tool.bitsandbytes-ci]
    package = "bitsandbytes"              # the package folder the libraries go into (default)
    try-script = "tests/wheel_smoke.py"   # run by try-wheels with each wheel installed
    try-index-url = "https://download.pytorch.org/whl/cpu"  # where a try's run-time dependencies come from
    symbol-parity = true                  # libraries of one backend and architecture export the same C symbols
    cpu-toolchain = "auto"                # auto: gcc in the manylinux image on Linux when the CMake uses OpenMP, else zig
    strip = "debug"                       # release builds keep the symbol table ("all": strip it too)
    [tool.bitsandbytes-ci.sources]        # source subsets: each list replaces the default
    common = ["CMakeLists.txt", "cmake/**", "csrc/common/**"]
    cuda = ["csrc/cuda/**"]               # added to common for CUDA jobs (also: cpu, rocm, xpu, wheel)

Source patterns a tree names must each select a file (an error names the pattern otherwise); the
defaults (matrix.toml `[sources]`) are copied where present, so they fit any layout.

Facts (`TreeFacts`) come from the tree's files, never from running it: the version (VERSION, else a
static `[project] version`, else the package's `__version__`, else setup.py's literal version; the
host asks the PEP 517 backend as a last resort, `bnb_build.version`), whether its CMake calls
`find_package(OpenMP)`, and which CUDA toolkit libraries it links (`CUDA::cublas`, ...).
`read_tree(source)` reads them on the host; the Dagger module hands the same texts from the source
Directory to `tree_from_texts`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from bnb_build import inputs
from bnb_build.version import VersionFileError, static_version

from .capabilities import EVERYTHING, Capabilities, read_capabilities
from .errors import PipelineError, allowed_list, did_you_mean

TABLE = "bitsandbytes-ci"
PYPROJECT = "pyproject.toml"
DEFAULT_PACKAGE = "bitsandbytes"
SOURCE_KEYS = ("common", "cpu", "cuda", "rocm", "xpu", "wheel")

CMAKE_FILE = re.compile(r"(^|/)(CMakeLists\.txt|[^/]+\.cmake)$")
CMAKE_SOURCES = ("CMakeLists.txt", "cmake/**", "csrc/**")
"""Where the CMake files read for facts are (the top-level CMakeLists.txt and what it includes)."""
_FIND_OPENMP = re.compile(r"find_package\s*\(\s*OpenMP\b", re.IGNORECASE)
_CUDA_TARGET = re.compile(r"\bCUDA::(\w+)")
CUDA_RUNTIME_TARGETS = {"cudart", "cudart_static", "cuda_driver", "toolkit"}
"""CUDA:: targets every CUDA toolkit provides (not worth a check)."""


class TreeError(PipelineError):
    """The tree is not one the pipeline can build, or its settings are not valid."""

    exit_code = 2


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=_kebab, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = [_kebab(name) for name in cls.model_fields]
            for key in data:
                if key not in allowed and key not in cls.model_fields:  # the field name works in code
                    msg = f"unknown key {key!r}{did_you_mean(str(key), allowed)}; allowed: {allowed_list(allowed)}"
                    raise ValueError(msg)
        return data


def _check_patterns(patterns: tuple[str, ...] | None) -> tuple[str, ...] | None:
    for pattern in patterns or ():
        try:
            inputs.check_pattern(pattern)  # the same rule as the matrix's and the steps'
        except inputs.UsageError as e:
            raise ValueError(str(e)) from None
    return patterns


class TreeSources(_Strict):
    """Source subsets (each replaces the pipeline's default; None keeps it)."""

    common: tuple[str, ...] | None = None
    cpu: tuple[str, ...] | None = None
    cuda: tuple[str, ...] | None = None
    rocm: tuple[str, ...] | None = None
    xpu: tuple[str, ...] | None = None
    wheel: tuple[str, ...] | None = None

    check = field_validator(*SOURCE_KEYS)(_check_patterns)

    def named(self) -> list[str]:
        """Every pattern the tree names."""
        return [p for key in SOURCE_KEYS for p in getattr(self, key) or ()]


class TreeConfig(_Strict):
    """What a tree may set (every field optional; None keeps the pipeline's default)."""

    package: str | None = None
    try_script: str | None = None
    # The index the wheel's run-time dependencies come from in a try (pip --index-url), e.g. upstream
    # CI's https://download.pytorch.org/whl/cpu (CPU torch, without the CUDA wheels of PyPI's).
    try_index_url: str | None = None
    symbol_parity: bool = False
    cpu_toolchain: Literal["auto", "zig", "gcc"] = "auto"
    sources: TreeSources = TreeSources()
    # The oldest CPU per platform id, where it differs from the matrix's `cpu_floor` (a level of
    # bnb_build.cpu_levels, checked against the platform's arch by `cpu_floor`).
    cpu_floor: dict[str, str] = {}
    # The native library checks the CPU at run time before it runs code above the floor (ours does):
    # such code outside load-time code is then listed by the audit, not refused.
    runtime_dispatch: bool = False
    # Shared libraries that the wheel's run-time dependencies provide (upstream's: libgomp.so.1 from
    # torch): not vendored into the wheel, and loaded once in a try.
    runtime_libraries: tuple[str, ...] = ()
    # What release builds strip: "debug" (debug information; the static symbol table stays, so crash
    # reports and the audit's ISA report name functions) or "all" (the symbol table too).
    strip: Literal["debug", "all"] = "debug"

    @field_validator("try_script")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in Path(value).parts or not value.endswith(".py")):
            msg = f"try-script {value!r} must be a .py file given relative to the tree's root"
            raise ValueError(msg)
        return value

    @field_validator("try_index_url")
    @classmethod
    def _index_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?|file)://\S+$", value):
            msg = f"try-index-url {value!r} is not a package index URL (https://..., http://... or file://...)"
            raise ValueError(msg)
        return value

    @field_validator("package")
    @classmethod
    def _package(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            msg = f"package {value!r} is not a Python package name"
            raise ValueError(msg)
        return value


@dataclass(frozen=True)
class TreeFacts:
    """What the pipeline read from the tree's files."""

    config: TreeConfig
    version: str | None
    package: str
    uses_openmp: bool
    cuda_components: tuple[str, ...]  # CUDA:: targets its CMake links beyond the runtime, e.g. ("cublas", "cublasLt")
    capabilities: Capabilities = EVERYTHING  # what its CMake can build (backends, CUDA limits, Windows compiler)

    def named_sources(self) -> list[str]:
        """Every source pattern the tree names, `{package}` replaced by its package folder (as the plan does)."""
        return [p.replace("{package}", self.package) for p in self.config.sources.named()]


DEFAULT_TREE = TreeFacts(TreeConfig(), None, DEFAULT_PACKAGE, False, ())
"""A tree nothing is known about (the plan's defaults)."""


def tree_config_from_text(text: str | None, *, origin: str = PYPROJECT) -> TreeConfig:
    """The `[tool.bitsandbytes-ci]` table of a pyproject.toml's text (None or no table: the defaults)."""
    table = _pyproject(text, origin).get("tool", {}).get(TABLE, {})
    if not isinstance(table, dict):
        msg = f"{origin}: [tool.{TABLE}] must be a table"
        raise TreeError(msg)
    try:
        return TreeConfig.model_validate(table)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or TABLE}: {item['msg'].removeprefix('Value error, ')}" for item in e.errors())
        msg = f"{origin} [tool.{TABLE}]: {problems}"
        raise TreeError(msg) from None


def _pyproject(text: str | None, origin: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = f"{origin}: not valid TOML ({e})"
        raise TreeError(msg) from None


def tree_from_texts(texts: Mapping[str, str], *, origin: str = "the tree") -> TreeFacts:
    """The facts of a tree from the texts of its files that matter (path relative to its root ->
    text): pyproject.toml, VERSION, setup.py, <package>/__init__.py, every CMakeLists.txt and *.cmake.
    Pure: both executors hand it what they read."""
    config = tree_config_from_text(texts.get(PYPROJECT), origin=f"{origin}/{PYPROJECT}")
    package = config.package or DEFAULT_PACKAGE
    try:
        version = static_version(
            version_file=texts.get("VERSION"),
            pyproject=texts.get(PYPROJECT),
            package_init=texts.get(f"{package}/__init__.py"),
            setup_py=texts.get("setup.py"),
            version_origin=f"{origin}/VERSION",
        )
    except VersionFileError as e:
        raise TreeError(str(e)) from None
    cmake = "\n".join(text for path, text in sorted(texts.items()) if CMAKE_FILE.search(path))
    components = sorted({m for m in _CUDA_TARGET.findall(cmake)} - CUDA_RUNTIME_TARGETS)
    return TreeFacts(config, version, package, bool(_FIND_OPENMP.search(cmake)), tuple(components), read_capabilities(texts))


def wanted_files(package: str) -> list[str]:
    """The files (besides the CMake files) whose texts `tree_from_texts` reads."""
    return [PYPROJECT, "VERSION", "setup.py", f"{package}/__init__.py"]


def read_tree(source: Path) -> TreeFacts:
    """The facts of the tree at `source` (host side); refuses a folder that is not a tree to build."""
    root = check_tree(source)
    config = tree_config_from_text(_read(root / PYPROJECT, utf8=True), origin=str(root / PYPROJECT))
    package = config.package or DEFAULT_PACKAGE
    texts = {rel: text for rel in wanted_files(package) if (text := _read(root / rel, utf8=rel in UTF8_FILES)) is not None}
    for rel in inputs.expand_optional(root, CMAKE_SOURCES):
        if CMAKE_FILE.search(rel):
            texts[rel] = _read(root / rel) or ""
    facts = tree_from_texts(texts, origin=str(root))
    check_package(root, facts.package)
    missing = missing_patterns(root, facts.named_sources())
    if missing:
        raise TreeError(patterns_error(missing, root))
    return facts


def check_tree(source: Path) -> Path:
    """`source` as an absolute path, if it holds a CMakeLists.txt (the native library's build)."""
    root = Path(source).absolute()
    if not (root / "CMakeLists.txt").is_file():
        msg = (
            f"--source {root} is not a tree the pipeline can build: it has no CMakeLists.txt (the native "
            "library's build); run bnb-ci from the repository root or pass --source DIR"
        )
        raise TreeError(msg)
    return root


def check_package(root: Path, package: str) -> None:
    if not (root / package / "__init__.py").is_file():
        msg = (
            f"--source {root} has no Python package {package!r} (no {package}/__init__.py) for the libraries to go into; "
            f"name it with `package = \"...\"` under [tool.{TABLE}] of its pyproject.toml"
        )
        raise TreeError(msg)


def missing_patterns(root: Path, patterns: list[str]) -> list[str]:
    """The patterns that select no file under `root`."""
    return [p for p in patterns if not inputs.expand_optional(root, [p])]


def patterns_error(missing: list[str], where: object) -> str:
    return (
        f"[tool.{TABLE}] sources: {', '.join(repr(p) for p in missing)} select(s) no file in {where}; "
        "fix the pattern (an exact file, or a folder followed by /**) or remove it"
    )


UTF8_FILES = (PYPROJECT, "VERSION")
"""Files that must be UTF-8 text when present (TOML is UTF-8; a version is ASCII): anything else is refused, not skipped."""


def _read(path: Path, *, utf8: bool = False) -> str | None:
    """The text of `path`, None when it cannot be read; with `utf8`, text that is not UTF-8 is a TreeError."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        if utf8:
            msg = f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
            raise TreeError(msg) from None
        return None
    except OSError:
        return None
