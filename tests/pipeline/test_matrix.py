"""bitsandbytes_ci.core.matrix: the support matrix data and its validation.

The expectations below are copied from the workflow we replace (design/seed-workflow.md), not computed
by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bitsandbytes_ci.core.errors import MatrixError
from bitsandbytes_ci.core.matrix import default_matrix_path, load_matrix

LINUX_X64, LINUX_ARM, WIN_X64, WIN_ARM, MAC_ARM = "linux-x86_64", "linux-aarch64", "windows-x64", "windows-arm64", "macos-arm64"
ALL_PLATFORMS = [LINUX_X64, LINUX_ARM, WIN_X64, WIN_ARM, MAC_ARM]

SEED_CUDA = ["11.8.0", "12.1.1", "12.4.1", "12.6.3", "12.8.1", "13.0.2", "13.2.0"]
SEED_VERSIONS = {
    "cuda": {LINUX_X64: SEED_CUDA, LINUX_ARM: SEED_CUDA, WIN_X64: SEED_CUDA, WIN_ARM: ["13.4.1"], MAC_ARM: []},
    "rocm": {LINUX_X64: ["6.4.4", "7.0.2", "7.1.1", "7.2.4", "7.14.0"], LINUX_ARM: [], WIN_X64: ["7.2.1", "7.14.0"], WIN_ARM: [], MAC_ARM: []},
    "xpu": {LINUX_X64: ["2025", "2026"], LINUX_ARM: [], WIN_X64: ["2025", "2026"], WIN_ARM: [], MAC_ARM: []},
}
SEED_PLAT_TAGS = {
    LINUX_X64: "manylinux_2_28_x86_64",  # the seed says 2_24; its glibc 2.28 images can only honour 2_28
    LINUX_ARM: "manylinux_2_28_aarch64",
    WIN_X64: "win_amd64",
    WIN_ARM: "win_arm64",
    MAC_ARM: "macosx_14_0_arm64",
}
CUDA_ARCHS = [  # (platform, version, seed arch list)
    (LINUX_X64, "11.8.0", "60;70;75;80;86;89;90"),
    (LINUX_X64, "12.4.1", "60;70;75;80;86;89;90"),
    (LINUX_X64, "12.6.3", "60;70;75;80;86;89;90"),
    (LINUX_X64, "12.8.1", "70;75;80;86;89;90;100;120"),
    (LINUX_X64, "13.0.2", "75;80;86;89;90;100;120"),
    (LINUX_X64, "13.2.0", "75;80;86;89;90;100;120"),
    (WIN_X64, "12.4.1", "60;70;75;80;86;89;90"),
    (WIN_X64, "13.2.0", "75;80;86;89;90;100;120"),
    (LINUX_ARM, "11.8.0", "75;80;90"),
    (LINUX_ARM, "12.6.3", "75;80;90"),
    (LINUX_ARM, "12.8.1", "75;80;90;100;120"),
    (LINUX_ARM, "13.0.2", "75;80;90;100;110;120;121"),
    (WIN_ARM, "13.4.1", "121"),
]
ROCM_BASE = ["gfx90a", "gfx942", "gfx1100", "gfx1101", "gfx1102", "gfx1103"]
ROCM_64 = ["gfx1150", "gfx1151", "gfx1152", "gfx1153", "gfx1200", "gfx1201"]
ROCM_714 = ["gfx908", "gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036", "gfx1250"]


@pytest.fixture(scope="module")
def matrix():
    return load_matrix()


def write_variant(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """A copy of the built-in matrix with exact text replacements (each must match once)."""
    text = default_matrix_path().read_text(encoding="utf-8")
    for old, new in replacements:
        assert text.count(old) == 1, f"test fixture out of date: {old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    path = tmp_path / "matrix.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    return str(info.value)


# ---- every row of the seed is present --------------------------------------------------------------


def test_platforms_are_the_seed_platforms(matrix) -> None:
    assert list(matrix.platforms) == ALL_PLATFORMS
    assert {p: matrix.platforms[p].plat_tag for p in ALL_PLATFORMS} == SEED_PLAT_TAGS
    assert matrix.platforms[MAC_ARM].deployment_target == "14.0"
    assert matrix.platforms[LINUX_X64].dagger_platform == "linux/amd64"
    assert matrix.platforms[LINUX_ARM].dagger_platform == "linux/arm64"
    assert [matrix.platforms[p].runner for p in ALL_PLATFORMS] == ["container", "container", "native-runner", "native-runner", "cross"]


def test_cpu_builds_every_platform_with_the_zig_toolchain(matrix) -> None:
    zig = matrix.toolchains["zig"]
    assert matrix.cpu.toolchain == "zig"
    # trees using OpenMP build Linux CPU libraries with gcc in the manylinux image instead (plan.py)
    assert matrix.cpu.openmp_toolchain == "gcc" and matrix.cpu.vendor == ("libgomp.so.1",)
    assert zig.targets == {LINUX_X64: "x86_64-linux-gnu.2.17", LINUX_ARM: "aarch64-linux-gnu.2.17", WIN_X64: "x86_64-windows-gnu",
                           WIN_ARM: "aarch64-windows-gnu", MAC_ARM: "aarch64-macos"}  # fmt: skip
    assert zig.image == matrix.wheel.image and zig.dagger_platform == "linux/amd64"
    assert (Path(__file__).resolve().parents[2] / "pipeline/src/bnb_build/cmake" / zig.toolchain_file).is_file(), "the pipeline's own file"
    for platform in ALL_PLATFORMS:
        assert matrix.cross_toolchain(matrix.cpu, platform) is zig
        assert matrix.cross_toolchain(matrix.cuda, platform) is None


def test_a_cross_platform_needs_a_toolchain_for_each_family(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('toolchain = "zig"                     # every', 'toolchain = "zag"                     # every'))
    assert "unknown toolchain 'zag'" in load_error(path)
    path = write_variant(tmp_path, ('windows-arm64 = "aarch64-windows-gnu", macos-arm64 = "aarch64-macos" }', 'windows-arm64 = "aarch64-windows-gnu" }'))
    assert "macos-arm64: the platform builds with a cross toolchain" in load_error(path)


@pytest.mark.parametrize("family", ["cuda", "rocm", "xpu"])
@pytest.mark.parametrize("platform", ALL_PLATFORMS)
def test_versions_per_platform_match_the_seed(matrix, family: str, platform: str) -> None:
    assert matrix.family(family).versions_on(platform) == SEED_VERSIONS[family][platform]


def test_cpu_builds_on_every_platform(matrix) -> None:
    assert all(matrix.cpu.versions_on(p) == [None] for p in ALL_PLATFORMS)


@pytest.mark.parametrize(("platform", "version", "archs"), CUDA_ARCHS)
def test_cuda_arch_lists_match_the_seed(matrix, platform: str, version: str, archs: str) -> None:
    assert ";".join(matrix.cuda.archs_for(platform, version)) == archs


def test_cuda_12_9_falls_under_the_12_8_rule(matrix) -> None:
    assert ";".join(matrix.cuda.archs_for(LINUX_X64, "12.9.0")) == "70;75;80;86;89;90;100;120"
    assert ";".join(matrix.cuda.archs_for(LINUX_ARM, "12.9.1")) == "75;80;90;100;120"


def test_rocm_targets_are_cumulative_as_in_the_seed(matrix) -> None:
    assert set(matrix.rocm.archs_for(LINUX_X64, "6.4.4")) == set(ROCM_BASE + ROCM_64)
    for version in ("7.0.2", "7.1.1", "7.2.4"):
        assert set(matrix.rocm.archs_for(LINUX_X64, version)) == set(ROCM_BASE + ROCM_64 + ["gfx950"])
    assert set(matrix.rocm.archs_for(LINUX_X64, "7.14.0")) == set(ROCM_BASE + ROCM_64 + ["gfx950"] + ROCM_714)


def test_rocm_build_settings(matrix) -> None:
    assert matrix.rocm.backend == "hip"
    assert matrix.rocm.build_type == "MinSizeRel"
    assert matrix.rocm.cmake_defines == {"CMAKE_HIP_FLAGS": "--offload-compress"}


def test_images_per_backend_and_platform(matrix) -> None:
    for version in SEED_CUDA:
        for platform in (LINUX_X64, LINUX_ARM):
            assert matrix.cuda.image_for(platform, version) == f"nvidia/cuda:{version}-devel-rockylinux8"
    for version in ("6.4.4", "7.0.2", "7.1.1", "7.2.4"):
        assert matrix.rocm.image_for(LINUX_X64, version) == f"rocm/dev-ubuntu-22.04:{version}-complete"
    assert matrix.rocm.image_for(LINUX_X64, "7.14.0") == "rocm/dev-ubuntu-22.04:7.14.0-full"
    assert matrix.xpu.image_for(LINUX_X64, "2025") == "intel/deep-learning-essentials:2025.1.3-0-devel-ubuntu22.04"
    assert matrix.xpu.image_for(LINUX_X64, "2026") == "intel/deep-learning-essentials:2026.0.0-devel-ubuntu22.04"
    assert matrix.cpu.image_for(LINUX_X64, None) == "quay.io/pypa/manylinux_2_28_x86_64:latest", "the OpenMP trees' gcc image"
    assert matrix.cpu.image_for(LINUX_ARM, None) == "quay.io/pypa/manylinux_2_28_aarch64:latest"
    assert matrix.wheel.image.startswith("python:3.12-")


def test_xpu_images_get_the_seed_apt_packages(matrix) -> None:
    installs = " ".join(matrix.xpu.setup)
    for package in ("cmake", "bison", "intel-fw-gpu", "intel-ocloc"):
        assert package in installs.split()


def test_cuda_linux_images_use_gcc_toolset_11(matrix) -> None:
    assert any("gcc-toolset-11" in step for step in matrix.cuda.setup)


def test_no_family_updates_its_image_at_build_time(matrix) -> None:
    # The image digest pins the system; `dnf update` / `apt-get upgrade` would make bytes depend on the day.
    for name, family in matrix.families():
        for step in family.setup:
            assert " update --" not in step and "upgrade" not in step and "dnf -y update" not in step, (name, step)


@pytest.mark.parametrize(
    ("family", "version", "platform", "name"),
    [
        ("cpu", None, LINUX_X64, "libbitsandbytes_cpu.so"),
        ("cpu", None, MAC_ARM, "libbitsandbytes_cpu.dylib"),
        ("cpu", None, WIN_ARM, "libbitsandbytes_cpu.dll"),
        ("cuda", "12.8.1", LINUX_X64, "libbitsandbytes_cuda128.so"),
        ("cuda", "13.4.1", WIN_ARM, "libbitsandbytes_cuda134.dll"),
        ("rocm", "6.4.4", LINUX_X64, "libbitsandbytes_rocm64.so"),
        ("rocm", "7.14.0", LINUX_X64, "libbitsandbytes_rocm714.so"),
        ("xpu", "2025", LINUX_X64, "libbitsandbytes_xpu2025.so"),
        ("xpu", "2026", WIN_X64, "libbitsandbytes_xpu2026.dll"),
    ],
)
def test_library_names(matrix, family: str, version: str | None, platform: str, name: str) -> None:
    assert matrix.library_name(matrix.family(family), version, platform) == name


def test_every_used_image_is_in_the_lock_file(matrix) -> None:
    from bitsandbytes_ci.core.image_lock import load_lock

    lock = load_lock(default_matrix_path().with_name("images.lock.toml"))
    assert sorted(lock) == matrix.images_in_use(), "regenerate images.lock.toml (lock-images) after changing images"


def test_xpu_has_an_audit_exemption_with_a_reason(matrix) -> None:
    assert "GLIBCXX" in (matrix.xpu.audit_exemption or "")


# ---- one-line changes ---------------------------------------------------------------------------------


def test_adding_cuda_13_4_on_linux_is_one_line(tmp_path: Path) -> None:
    path = write_variant(
        tmp_path,
        ('{ version = "13.4.1", platforms = ["windows-arm64"] }',
         '{ version = "13.4.1", platforms = ["linux-x86_64", "linux-aarch64", "windows-arm64"] }'),
    )  # fmt: skip
    matrix = load_matrix(path)
    assert matrix.cuda.versions_on(LINUX_X64)[-1] == "13.4.1"
    assert matrix.cuda.image_for(LINUX_ARM, "13.4.1") == "nvidia/cuda:13.4.1-devel-rockylinux8"
    assert ";".join(matrix.cuda.archs_for(LINUX_ARM, "13.4.1")) == "75;80;90;100;110;120;121"


# ---- invalid matrices are rejected with instructions --------------------------------------------------


def test_duplicate_version_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('{ version = "12.1.1"', '{ version = "11.8.0"'))
    message = load_error(path)
    assert "'11.8.0' appears twice" in message


def test_two_versions_with_one_library_name_are_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('{ version = "12.1.1"', '{ version = "11.8.1"'))
    message = load_error(path)
    assert "11.8.0" in message and "11.8.1" in message and "cuda118" in message


def test_missing_image_is_rejected(tmp_path: Path) -> None:
    path = write_variant(
        tmp_path,
        ('{ platforms = ["linux-x86_64", "linux-aarch64"], image = "nvidia/cuda:{version}-devel-rockylinux8", size_gb = 9 }',
         '{ platforms = ["linux-x86_64"], image = "nvidia/cuda:{version}-devel-rockylinux8", size_gb = 9 }'),
    )  # fmt: skip
    message = load_error(path)
    assert "cuda 11.8.0 on linux-aarch64 has no image" in message
    assert "cuda.images" in message


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('build_type = "MinSizeRel"', 'build_typ = "MinSizeRel"'))
    message = load_error(path)
    assert "rocm" in message
    assert "unknown key 'build_typ' (did you mean 'build_type'?)" in message
    assert "allowed: backend, variant, build_type" in message


def test_unknown_platform_is_rejected_with_a_suggestion(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('{ version = "13.4.1", platforms = ["windows-arm64"] }', '{ version = "13.4.1", platforms = ["windows-arm"] }'))
    message = load_error(path)
    assert "unknown platform 'windows-arm'" in message
    assert "did you mean 'windows-arm64'?" in message


def test_arch_below_what_cuda_13_builds_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('since = "13.0", archs = "75;80;86;89;90;100;120" }', 'since = "13.0", archs = "70;75;80;86;89;90;100;120" }'))
    message = load_error(path)
    assert "cuda 13.0.2 cannot build 70" in message
    assert "75;80;86" in message  # names what it can build


def test_arch_above_what_cuda_11_8_builds_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('since = "11.8", archs = "60;70;75;80;86;89;90" }', 'since = "11.8", archs = "60;70;75;80;86;89;90;100" }'))
    message = load_error(path)
    assert "cuda 11.8.0 cannot build 100" in message


@pytest.mark.parametrize("bad", ["75;;80", "sm_75", "75;75", "75,80"])
def test_malformed_arch_list_is_rejected(tmp_path: Path, bad: str) -> None:
    path = write_variant(tmp_path, ('archs = "75;80;90" }', f'archs = "{bad}" }}'))
    message = load_error(path)
    assert repr(bad) in message or "repeats" in message


def test_malformed_rocm_target_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('since = "7.0", archs = "gfx950" }', 'since = "7.0", archs = "950" }'))
    assert "'950' not understood" in load_error(path)


def test_image_with_a_digest_in_the_matrix_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('image = "python:3.12-slim-bookworm"   # Linux', 'image = "python:3.12-slim-bookworm@sha256:' + "0" * 64 + '"   # Linux'))
    assert "put the digest in images.lock.toml" in load_error(path)


def test_source_under_pipeline_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('common = ["CMakeLists.txt", "VERSION"', 'common = ["pipeline/src/**", "CMakeLists.txt", "VERSION"'))
    assert "under pipeline/" in load_error(path)


def test_missing_matrix_file_is_explained(tmp_path: Path) -> None:
    assert "does not exist" in load_error(tmp_path / "nope.toml")


# ---- the lock file ----------------------------------------------------------------------------------


def test_lock_file_digest_pins_an_image(tmp_path: Path) -> None:
    path = write_variant(tmp_path)
    digest = "sha256:" + "ab" * 32
    (tmp_path / "images.lock.toml").write_text(f'[images]\n"nvidia/cuda:12.8.1-devel-rockylinux8" = "{digest}"\n', encoding="utf-8")
    matrix = load_matrix(path)
    assert matrix.pinned("nvidia/cuda:12.8.1-devel-rockylinux8") == (f"nvidia/cuda:12.8.1-devel-rockylinux8@{digest}", True)
    assert matrix.pinned("nvidia/cuda:13.0.2-devel-rockylinux8") == ("nvidia/cuda:13.0.2-devel-rockylinux8", False)


def test_lock_file_with_a_bad_digest_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path)
    (tmp_path / "images.lock.toml").write_text('[images]\n"python:3.12-slim-bookworm" = "sha256:xyz"\n', encoding="utf-8")
    assert "sha256:<64 hex digits>" in load_error(path)


def test_matrix_is_frozen(matrix) -> None:
    with pytest.raises(Exception, match="frozen"):
        matrix.cuda.build_type = "Debug"


def test_a_native_runner_toolkit_without_an_install_rule_is_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('{ platforms = ["windows-arm64"], since = "13.4", method = "nvidia-redist"',
                                    '{ platforms = ["windows-x64"], since = "13.4", method = "nvidia-redist"'))  # fmt: skip
    message = load_error(path)
    assert "cuda 13.4.1 on windows-arm64 builds on a native runner, and no cuda.native_installs rule says how to install it there" in message


def test_install_rules_need_what_their_method_needs(tmp_path: Path) -> None:
    path = write_variant(tmp_path, ('method = "intel-installer", url = "https://registrationcenter-download.intel.com/akdlm/IRC_NAS/d2148e15',
                                    'method = "intel-installer", urx = "https://registrationcenter-download.intel.com/akdlm/IRC_NAS/d2148e15'))  # fmt: skip
    message = load_error(path)
    assert "unknown key 'urx' (did you mean 'url'?)" in message


def test_ci_runners_and_image_sizes_are_data(tmp_path: Path) -> None:
    matrix = load_matrix()
    assert matrix.ci.linux_runners == {"linux/amd64": "ubuntu-latest", "linux/arm64": "ubuntu-24.04-arm"}
    assert matrix.cuda.image_size_for("linux-aarch64", "12.8.1") == 9 and matrix.rocm.image_size_for("linux-x86_64", "7.14.0") == 32
    path = write_variant(tmp_path, ('native_runners = { windows-x64 = "windows-latest"', 'native_runners = { linux-x86_64 = "windows-latest"'))
    assert "ci.native_runners: 'linux-x86_64' is not a platform built outside containers" in load_error(path)
    path = write_variant(tmp_path, (', size_gb = 9 }', ' }'))
    assert "required key 'size_gb' is missing" in load_error(path)
