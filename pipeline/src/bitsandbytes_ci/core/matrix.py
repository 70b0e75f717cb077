"""The support matrix as typed, validated data.

`load_matrix()` reads matrix.toml (the data) and images.lock.toml (the image digests) and returns a
frozen `Matrix`. Everything the loader accepts is consistent: every platform a row names exists,
every container job has an image, every arch list is well formed and buildable by its toolkit, no
version appears twice. Planning (plan.py) relies on that and never re-checks.

Lookups answer one question each, from the data: which versions a family builds on a platform
(`Family.versions_on`), with which image (`Family.image_for`), for which GPU archs
(`Family.archs_for`), under which library name (`Matrix.library_name`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from bnb_build import cpu_levels
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from . import archs as arch_lists
from .errors import MatrixError, allowed_list, did_you_mean
from .image_lock import DIGEST, load_lock
from .versions import at_least, is_version, short_tag, sort_versions, version_key

MATRIX_FILE = "matrix.toml"
LOCK_FILE = "images.lock.toml"

FAMILIES = ("cpu", "cuda", "rocm", "xpu")
"""The toolkit families, in plan order. Each is one table of matrix.toml."""

Backend = Literal["cpu", "cuda", "hip", "xpu"]
Runner = Literal["container", "native-runner", "cross"]

_IMAGE = re.compile(r"^[a-z0-9]([a-z0-9._/-]|\{arch\})*(:[A-Za-z0-9_.{}-]+)$")
_SOURCE = re.compile(r"^(?!/)(?!.*(^|/)\.\.(/|$))([A-Za-z0-9_.\-/]|\{package\})+(/\*\*)?$")
_EXCLUDED_SOURCE_ROOT = "pipeline/"


class _Strict(BaseModel):
    """Frozen, and unknown keys are rejected with the closest known key as a suggestion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = [name for name in cls.model_fields if not name.startswith("_")]
            for key in data:
                if key not in allowed:
                    msg = f"unknown key {key!r}{did_you_mean(key, allowed)}; allowed: {allowed_list(allowed)}"
                    raise ValueError(msg)
        return data


def _check_version(value: str) -> str:
    if not is_version(value):
        msg = f'version {value!r} is not a dotted number such as "12.8.1"'
        raise ValueError(msg)
    return value


def _check_optional_version(value: str | None) -> str | None:
    return value if value is None else _check_version(value)


def _check_sources(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        if not _SOURCE.match(pattern) or "*" in pattern.removesuffix("/**"):
            msg = f'source pattern {pattern!r} is neither a file path nor "folder/**" relative to the repository root'
            raise ValueError(msg)
        if pattern.startswith(_EXCLUDED_SOURCE_ROOT):
            msg = f"source pattern {pattern!r} is under pipeline/: build inputs never include the pipeline itself"
            raise ValueError(msg)
    return patterns


class Platform(_Strict):
    """Where a library runs and how it is built there."""

    os: Literal["linux", "windows", "macos"]
    arch: str
    plat_tag: str
    runner: Runner
    dagger_platform: Literal["linux/amd64", "linux/arm64"] | None = None
    deployment_target: str | None = None
    cpu_floor: str  # the oldest CPU its wheels run on: a level of bnb_build.cpu_levels (x86-64-v2, armv8-a, ...)

    @model_validator(mode="after")
    def _consistent(self) -> Platform:
        cpu_levels.check_level(self.arch, self.cpu_floor)
        if self.runner == "container" and self.dagger_platform is None:
            msg = "a container platform needs dagger_platform (linux/amd64 or linux/arm64)"
            raise ValueError(msg)
        if self.runner != "container" and self.dagger_platform is not None:
            msg = f"dagger_platform applies to container platforms only, not runner {self.runner!r}"
            raise ValueError(msg)
        if self.deployment_target is not None:
            if self.os != "macos":
                msg = "deployment_target applies to macOS platforms only"
                raise ValueError(msg)
            expected = f"macosx_{self.deployment_target.replace('.', '_')}_{self.arch}"
            if self.plat_tag != expected:
                msg = f"plat_tag {self.plat_tag!r} disagrees with deployment_target {self.deployment_target!r}; expected {expected!r}"
                raise ValueError(msg)
        return self


class LibraryNaming(_Strict):
    prefix: str
    suffix: dict[Literal["linux", "windows", "macos"], str]


class CommonSources(_Strict):
    common: tuple[str, ...]

    check_patterns = field_validator("common")(_check_sources)


class WheelSettings(_Strict):
    image: str
    image_size_gb: float
    sources: tuple[str, ...]
    optional_sources: tuple[str, ...] = ()
    wine_python: str  # a Windows CPython (zip of the embeddable distribution) that try-wheels runs under Wine
    wine_setup: tuple[str, ...] = ()  # commands that install Wine into the wheel image

    check_patterns = field_validator("sources", "optional_sources")(_check_sources)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _check_image(value)


def _check_image(value: str) -> str:
    if "@" in value:
        msg = f"image {value!r} carries a digest; name it by `name:tag` here and put the digest in {LOCK_FILE}"
        raise ValueError(msg)
    if not _IMAGE.match(value):
        msg = f"image {value!r} is not `name:tag` (for example nvidia/cuda:{{version}}-devel-rockylinux8)"
        raise ValueError(msg)
    return value


class CrossToolchain(_Strict):
    """A toolchain that builds other platforms' libraries on Linux: on the host (when its tool is
    installed) and in Dagger (in `image`, on `dagger_platform`, with no emulation). `targets` maps each
    platform it builds for to its target; the job passes `toolchain_file` and the target to CMake."""

    image: str
    image_size_gb: float
    dagger_platform: Literal["linux/amd64", "linux/arm64"]
    toolchain_file: str
    target_define: str
    targets: dict[str, str]

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _check_image(value)

    @field_validator("toolchain_file")
    @classmethod
    def _file(cls, value: str) -> str:
        _check_sources((value,))
        return value


class ImageRule(_Strict):
    """The image for some platforms, from toolkit version `since` on ({version} is filled in)."""

    platforms: tuple[str, ...]
    since: str | None = None
    image: str
    size_gb: float  # approximate unpacked size: decides how CI shards the jobs

    check_since = field_validator("since")(_check_optional_version)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _check_image(value)


class Toolkit(_Strict):
    """One toolkit version and the platforms it is built for."""

    version: str
    platforms: tuple[str, ...]

    check_version = field_validator("version")(_check_version)

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            msg = "platforms is empty; list at least one platform id"
            raise ValueError(msg)
        return value


class ArchRule(_Strict):
    """GPU archs for some platforms (every platform when empty), for toolkit versions from `since` on."""

    platforms: tuple[str, ...] = ()
    since: str
    archs: str

    check_since = field_validator("since")(_check_version)


class NativeInstall(_Strict):
    """How a native runner installs a toolkit (`bnb-ci install-toolkit`), for some platforms, from
    toolkit version `since` on. Placeholders in `url`, `packages`, `args` and `env`: {version}
    (13.0.2), {major_minor} (13.0), and in `env` also {prefix} (what the method reports).

    method "nvidia-installer": download `url` and run it silently with the sub-packages `packages`;
    the toolkit lands in `prefix`. method "nvidia-redist": read NVIDIA's redistributable manifest
    `url` (redistrib_<version>.json), download the archive of each component of `packages` for
    `archive_platform` (checked against the manifest's sha256) and unpack them into `prefix`.
    method "pip": `pip install` of `packages` (plus `args`), then the
    commands of `after`; method "intel-installer": download `url` and run it with `args`, then take
    the environment that `setvars` (a batch file) sets."""

    platforms: tuple[str, ...]
    since: str | None = None
    method: Literal["nvidia-installer", "nvidia-redist", "pip", "intel-installer"]
    url: str | None = None
    archive_platform: str | None = None  # nvidia-redist: the manifest's platform key (e.g. windows-x86_64)
    packages: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    prefix: str | None = None
    setvars: str | None = None
    env: dict[str, str] = {}

    check_since = field_validator("since")(_check_optional_version)

    @model_validator(mode="after")
    def _complete(self) -> NativeInstall:
        if self.method in ("nvidia-installer", "intel-installer") and not self.url:
            msg = f"method {self.method!r} needs `url` (the installer to download)"
            raise ValueError(msg)
        if self.method == "nvidia-redist":
            missing = [name for name in ("url", "packages", "archive_platform", "prefix") if not getattr(self, name)]
            if missing:
                msg = f"method 'nvidia-redist' needs {', '.join(f'`{m}`' for m in missing)} (manifest, components, its platform key, where to unpack)"
                raise ValueError(msg)
        if self.method == "pip" and not self.packages:
            msg = "method 'pip' needs `packages`"
            raise ValueError(msg)
        if self.method == "intel-installer" and not self.setvars:
            msg = "method 'intel-installer' needs `setvars` (the batch file that sets the toolkit's environment)"
            raise ValueError(msg)
        return self


class CiSettings(_Strict):
    """The hosted runners CI uses and what one of them holds (plan.ci_matrix shards the jobs to fit)."""

    linux_runners: dict[Literal["linux/amd64", "linux/arm64"], str]
    native_runners: dict[str, str]
    cpus: int
    memory_gb: float
    disk_gb: float  # free on / of a fresh runner
    disk_after_cleanup_gb: float  # free on / after the workflow's make-room step removed preinstalled tools
    engine_disk_gb: float  # free on the runner's second disk (/mnt), where the make-room step moves the engine's state
    compressed_layers_share: float  # the compressed layers an engine keeps beside an unpacked image, as a share of its size
    build_headroom_gb: float
    large_image_gb: float



class _PlatformRule(Protocol):
    @property
    def platforms(self) -> tuple[str, ...]: ...

    @property
    def since(self) -> str | None: ...


R = TypeVar("R", bound=_PlatformRule)


def latest_rule(rules: Sequence[R], platform: str, version: str | None) -> R | None:
    """Of the `rules` for `platform` that apply to `version` (no `since`, or `since` <= version), the
    one with the highest `since`; None when none applies."""
    applying = [r for r in rules if platform in r.platforms and (r.since is None or (version is not None and at_least(version, r.since)))]
    return max(applying, key=lambda r: version_key(r.since) if r.since else ()) if applying else None


class Family(_Strict):
    """One toolkit family (cpu, cuda, rocm, xpu): how its libraries are configured, built and named."""

    backend: Backend
    variant: str
    build_type: Literal["Release", "MinSizeRel", "RelWithDebInfo", "Debug"]
    arch_define: str | None = None
    cmake_defines: dict[str, str] = {}
    sources: tuple[str, ...] = ()  # added to the common ones; a tree's [tool.bitsandbytes-ci.sources] replaces them
    images: tuple[ImageRule, ...] = ()
    setup: tuple[str, ...] = ()
    env: dict[str, str] = {}
    step_python: str = "python3"  # a Python >= 3.8 of the image (after setup) that runs the step programs
    compile_memory_gb: float = 1  # what one compiler process may take: bounds the compile parallelism
    native_installs: tuple[NativeInstall, ...] = ()
    audit_exemption: str | None = None
    toolchain: str | None = None  # a cross toolchain of [toolchains] for the platforms it has targets for
    openmp_toolchain: Literal["gcc"] | None = None  # for trees using OpenMP: build in `images` instead, where a rule covers the platform
    vendor: tuple[str, ...] = ()  # libraries the wheel step grafts into a wheel when one of this family's libraries needs them
    platforms: tuple[str, ...] = ()
    toolkits: tuple[Toolkit, ...] = ()
    cumulative_arch_rules: bool = False
    arch_rules: tuple[ArchRule, ...] = ()
    toolkit_archs: tuple[ArchRule, ...] = ()

    check_patterns = field_validator("sources")(_check_sources)

    @field_validator("variant")
    @classmethod
    def _variant(cls, value: str) -> str:
        if not re.match(r"^[a-z]+$", value):
            msg = f"variant {value!r} must be lower-case letters (it starts library names and job ids)"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Family:
        if bool(self.platforms) == bool(self.toolkits):
            msg = "give either `platforms` (a family without versions) or `toolkits` (one row per version), not both"
            raise ValueError(msg)
        versions: set[str] = set()
        seen: dict[str, str] = {}
        for toolkit in self.toolkits:
            if toolkit.version in versions:
                msg = f"version {toolkit.version!r} appears twice in toolkits; keep one row per version"
                raise ValueError(msg)
            versions.add(toolkit.version)
            for platform in toolkit.platforms:
                key = f"{short_tag(toolkit.version)}@{platform}"
                if key in seen:
                    msg = (
                        f"versions {seen[key]!r} and {toolkit.version!r} both build {self.variant_for(toolkit.version)}"
                        f" on {platform}; keep one of them"
                    )
                    raise ValueError(msg)
                seen[key] = toolkit.version
        self._check_arch_rules()
        return self

    def _check_arch_rules(self) -> None:
        has_rules = bool(self.arch_rules or self.toolkit_archs)
        if has_rules and self.arch_define is None:
            msg = "arch_rules need arch_define (the CMake cache entry that receives the list)"
            raise ValueError(msg)
        if not has_rules:
            return
        for rule in (*self.arch_rules, *self.toolkit_archs):
            arch_lists.parse_arch_list(rule.archs, self.backend)

    def check_arch_coverage(self) -> None:
        """Every (version, platform) has an arch rule, and its toolkit can build that list (run once
        the platform names are known to be valid)."""
        if self.arch_define is None:
            return
        for toolkit in self.toolkits:
            for platform in toolkit.platforms:
                if not self._rules_for(platform, toolkit.version):
                    msg = f"no arch_rules entry covers {self.variant} {toolkit.version} on {platform}; add one"
                    raise ValueError(msg)
                try:
                    self.check_archs(toolkit.version, self.archs_for(platform, toolkit.version))
                except ValueError as e:
                    msg = f"arch_rules for {platform}: {e}; fix the rule or the toolkit row"
                    raise ValueError(msg) from None

    # ---- lookups ------------------------------------------------------------------------------

    @property
    def versioned(self) -> bool:
        return bool(self.toolkits)

    def all_platforms(self) -> list[str]:
        if not self.versioned:
            return list(self.platforms)
        return list(dict.fromkeys(p for t in self.toolkits for p in t.platforms))

    def versions_on(self, platform: str) -> list[str | None]:
        """The versions built on `platform`, oldest first; [None] for a family without versions."""
        if not self.versioned:
            return [None] if platform in self.platforms else []
        return list(sort_versions(t.version for t in self.toolkits if platform in t.platforms))

    def all_versions(self) -> list[str]:
        return sort_versions(t.version for t in self.toolkits)

    def variant_for(self, version: str | None) -> str:
        """The library variant: "cpu", "cuda128", "rocm64", "xpu2025". Job ids and library names use it."""
        return self.variant if version is None else f"{self.variant}{short_tag(version)}"

    def image_for(self, platform: str, version: str | None) -> str | None:
        """`name:tag` of the image for (platform, version), or None when no rule covers it."""
        rule = self._image_rule(platform, version)
        arch = platform.split("-", 1)[1]
        return None if rule is None else rule.image.replace("{version}", version or "").replace("{arch}", arch)

    def image_size_for(self, platform: str, version: str | None) -> float | None:
        """The approximate unpacked size (GB) of that image, or None when no rule covers it."""
        rule = self._image_rule(platform, version)
        return None if rule is None else rule.size_gb

    def _image_rule(self, platform: str, version: str | None) -> ImageRule | None:
        return latest_rule(self.images, platform, version)

    def native_install_for(self, platform: str, version: str | None) -> NativeInstall | None:
        """How a native runner of `platform` installs this family's toolkit `version`, or None."""
        return latest_rule(self.native_installs, platform, version)

    def _rules_for(self, platform: str, version: str) -> list[ArchRule]:
        rules = sorted(
            (r for r in self.arch_rules if platform in r.platforms and at_least(version, r.since)),
            key=lambda r: version_key(r.since),
        )
        if self.cumulative_arch_rules:
            return rules
        return rules[-1:]

    def archs_for(self, platform: str, version: str | None) -> tuple[str, ...]:
        """The GPU archs built for (platform, version); () for families without arch lists."""
        if version is None or self.arch_define is None:
            return ()
        archs: list[str] = []
        for rule in self._rules_for(platform, version):
            archs.extend(a for a in arch_lists.parse_arch_list(rule.archs, self.backend) if a not in archs)
        return tuple(archs)

    def buildable_archs(self, version: str) -> tuple[str, ...] | None:
        """What the toolkit `version` can compile at all, or None when the data sets no limit."""
        rules = [r for r in self.toolkit_archs if at_least(version, r.since)]
        if not rules:
            return None
        rule = max(rules, key=lambda r: version_key(r.since))
        return arch_lists.parse_arch_list(rule.archs, self.backend)

    def check_archs(self, version: str, archs: tuple[str, ...]) -> tuple[str, ...]:
        """Raise ValueError when the toolkit `version` cannot build one of `archs`."""
        buildable = self.buildable_archs(version)
        if buildable is not None:
            bad = arch_lists.unsupported(archs, buildable)
            if bad:
                msg = (
                    f"{self.variant} {version} cannot build {', '.join(bad)}; it builds {arch_lists.join(buildable)}"
                )
                raise ValueError(msg)
        return archs


class Matrix(_Strict):
    """The whole support matrix; `image_digests` comes from the lock file, not from matrix.toml."""

    schema_version: Literal[1]
    platforms: dict[str, Platform]
    library: LibraryNaming
    sources: CommonSources
    wheel: WheelSettings
    cpu: Family
    cuda: Family
    rocm: Family
    xpu: Family
    toolchains: dict[str, CrossToolchain] = {}
    ci: CiSettings
    image_digests: dict[str, str | None] = {}

    @model_validator(mode="after")
    def _references(self) -> Matrix:
        platform_ids = list(self.platforms)
        for name, family in self.families():
            named = [*family.platforms, *(p for t in family.toolkits for p in t.platforms)]
            named += [p for r in (*family.images, *family.arch_rules, *family.native_installs) for p in r.platforms]
            for platform in named:
                if platform not in self.platforms:
                    msg = f"{name}: unknown platform {platform!r}{did_you_mean(platform, platform_ids)}; allowed: {allowed_list(platform_ids)}"
                    raise ValueError(msg)
            if family.toolchain is not None and family.toolchain not in self.toolchains:
                msg = f"{name}.toolchain: unknown toolchain {family.toolchain!r}{did_you_mean(family.toolchain, list(self.toolchains))}; allowed: {allowed_list(list(self.toolchains))}"
                raise ValueError(msg)
            for platform in family.all_platforms():
                if self.platforms[platform].runner == "cross" and self.cross_toolchain(family, platform) is None:
                    msg = f"{name} on {platform}: the platform builds with a cross toolchain, and {name} names none with a target for it"
                    raise ValueError(msg)
            for rule in family.images:
                for platform in rule.platforms:
                    if self.platforms[platform].runner != "container":
                        msg = f"{name}.images names {platform}, which builds on a {self.platforms[platform].runner}; images apply to container platforms only"
                        raise ValueError(msg)
            for platform in family.all_platforms():
                if self.platforms[platform].runner != "container" or self.cross_toolchain(family, platform) is not None:
                    continue
                for version in family.versions_on(platform):
                    if family.image_for(platform, version) is None:
                        what = f"{name} {version}" if version else name
                        msg = f"{what} on {platform} has no image; {platform} builds in containers, so add a {name}.images entry that covers it"
                        raise ValueError(msg)
            for platform in family.all_platforms():
                if self.platforms[platform].runner != "native-runner" or self.cross_toolchain(family, platform) is not None:
                    continue
                for version in family.versions_on(platform):
                    if family.native_install_for(platform, version) is None:
                        msg = f"{name} {version} on {platform} builds on a native runner, and no {name}.native_installs rule says how to install it there; add one"
                        raise ValueError(msg)
            try:
                family.check_arch_coverage()
            except ValueError as e:
                msg = f"{name}: {e}"
                raise ValueError(msg) from None
        for tc_name, toolchain in self.toolchains.items():
            for platform in toolchain.targets:
                if platform not in self.platforms:
                    msg = f"toolchains.{tc_name}.targets: unknown platform {platform!r}{did_you_mean(platform, platform_ids)}; allowed: {allowed_list(platform_ids)}"
                    raise ValueError(msg)
        for platform, runner in self.ci.native_runners.items():
            if platform not in self.platforms or self.platforms[platform].runner == "container":
                native = [p for p, spec in self.platforms.items() if spec.runner != "container"]
                msg = f"ci.native_runners: {platform!r} is not a platform built outside containers; allowed: {allowed_list(native)}"
                raise ValueError(msg)
        for os_name in {p.os for p in self.platforms.values()}:
            if os_name not in self.library.suffix:
                msg = f"library.suffix has no entry for os {os_name!r}"
                raise ValueError(msg)
        for ref, digest in self.image_digests.items():
            if digest is not None and not DIGEST.match(digest):
                msg = f"digest of {ref!r} is {digest!r}; expected sha256:<64 hex digits>"
                raise ValueError(msg)
        return self

    # ---- lookups ------------------------------------------------------------------------------

    def families(self) -> list[tuple[str, Family]]:
        """(name, family) in plan order: cpu, cuda, rocm, xpu."""
        return [(name, getattr(self, name)) for name in FAMILIES]

    def family(self, name: str) -> Family:
        if name not in FAMILIES:
            msg = f"unknown toolkit family {name!r}{did_you_mean(name, FAMILIES)}; allowed: {allowed_list(FAMILIES)}"
            raise MatrixError(msg)
        return getattr(self, name)

    def cross_toolchain(self, family: Family, platform: str) -> CrossToolchain | None:
        """The cross toolchain that builds `family` for `platform`, or None (built by the platform's runner)."""
        toolchain = self.toolchains.get(family.toolchain) if family.toolchain else None
        return toolchain if toolchain is not None and platform in toolchain.targets else None

    def library_name(self, family: Family, version: str | None, platform: str) -> str:
        """The one place library file names come from: libbitsandbytes_<variant><suffix>."""
        suffix = self.library.suffix[self.platforms[platform].os]
        return f"{self.library.prefix}{family.variant_for(version)}{suffix}"

    def pinned(self, image: str) -> tuple[str, bool]:
        """`name:tag@digest` when the lock file has a digest for `image`, else (`name:tag`, False)."""
        digest = self.image_digests.get(image)
        return (f"{image}@{digest}", True) if digest else (image, False)

    def images_in_use(self) -> list[str]:
        """Every `name:tag` the matrix uses, sorted: the keys the lock file should hold."""
        refs = {self.wheel.image} | {toolchain.image for toolchain in self.toolchains.values()}
        for _, family in self.families():
            for platform in family.all_platforms():
                for version in family.versions_on(platform):
                    image = family.image_for(platform, version)
                    if image is not None:
                        refs.add(image)
        return sorted(refs)


def default_matrix_path() -> Path:
    """The built-in matrix, shipped as package data next to this module."""
    return Path(__file__).resolve().with_name(MATRIX_FILE)


def load_matrix(path: Path | str | None = None, *, lock_path: Path | str | None = None) -> Matrix:
    """Load and validate the matrix; `lock_path` defaults to images.lock.toml next to the matrix file."""
    matrix_path = Path(path) if path is not None else default_matrix_path()
    lock = Path(lock_path) if lock_path is not None else matrix_path.with_name(LOCK_FILE)
    try:
        data = tomllib.loads(matrix_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"matrix file {matrix_path} does not exist; pass an existing file or omit it for the built-in matrix"
        raise MatrixError(msg) from None
    except tomllib.TOMLDecodeError as e:
        msg = f"{matrix_path}: not valid TOML ({e})"
        raise MatrixError(msg) from None
    except UnicodeDecodeError as e:
        msg = f"matrix file {matrix_path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
        raise MatrixError(msg) from None
    except OSError as e:  # a folder, no permission, an I/O error
        msg = f"matrix file {matrix_path} cannot be read: {e.strerror or e}; pass a readable file or omit it for the built-in matrix"
        raise MatrixError(msg) from None
    if "image_digests" in data:
        msg = f"{matrix_path}: image digests belong in {lock.name}, not in the matrix; remove `image_digests`"
        raise MatrixError(msg)
    return matrix_from_data(data, digests=load_lock(lock), origin=str(matrix_path))


def matrix_from_data(data: dict[str, Any], *, digests: dict[str, str | None] | None = None, origin: str = "matrix") -> Matrix:
    """Validate already-parsed matrix data (the same checks as `load_matrix`)."""
    try:
        return Matrix.model_validate({**data, "image_digests": digests or {}})
    except ValidationError as e:
        raise MatrixError(_format_errors(origin, e)) from None


def _format_errors(origin: str, error: ValidationError) -> str:
    lines = [f"{origin}: invalid support matrix ({error.error_count()} problem(s)); fix the file:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        text = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            text = f"unknown key {item['loc'][-1]!r}"
        elif item["type"] == "missing":
            text = f"required key {item['loc'][-1]!r} is missing"
        elif item["type"] == "literal_error":
            text = f"{item['input']!r} is not allowed; {text}"
        lines.append(f"  - {where}: {text}")
    return "\n".join(lines)
