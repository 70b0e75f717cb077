"""bitsandbytes_ci.core.plan: matrix -> build jobs, wheel jobs, audit expectations, step argv."""

from __future__ import annotations

import doctest
from collections import Counter
from pathlib import Path

import pytest

from bitsandbytes_ci.core import plan as plan_module
from bitsandbytes_ci.core.errors import SelectionError
from bitsandbytes_ci.core.matrix import default_matrix_path, load_matrix
from bitsandbytes_ci.core.plan import Selection, audit_argv, expectations, plan_jobs, plan_wheels
from bitsandbytes_ci.core.tree import DEFAULT_TREE, read_tree

REPO = Path(__file__).resolve().parents[2]

PLATFORMS = ["linux-x86_64", "linux-aarch64", "windows-x64", "windows-arm64", "macos-arm64"]


@pytest.fixture(scope="module")
def matrix():
    return load_matrix()


@pytest.fixture(scope="module")
def tree():
    """This repository's tree (its [tool.bitsandbytes-ci] settings)."""
    return read_tree(REPO)


@pytest.fixture(scope="module")
def jobs(matrix, tree):
    return plan_jobs(matrix, tree=tree)


def by_id(jobs):
    return {job.id: job for job in jobs}


# ---- the full plan --------------------------------------------------------------------------------


def test_counts_per_backend(jobs) -> None:
    # seed: 5 CPU platforms; 7 CUDA versions x 3 platforms + 13.4.1 on windows-arm64;
    # 5 ROCm versions on Linux + 2 on Windows; oneAPI 2025 and 2026 on Linux x64 and Windows x64.
    assert Counter(job.backend for job in jobs) == {"cpu": 5, "cuda": 22, "hip": 7, "xpu": 4}
    assert len(jobs) == 38


def test_ids_of_one_platform_in_order(matrix) -> None:
    ids = [job.id for job in plan_jobs(matrix, Selection(platforms=("linux-aarch64",)))]
    assert ids == [
        "cpu-linux-aarch64",
        "cuda118-linux-aarch64", "cuda121-linux-aarch64", "cuda124-linux-aarch64", "cuda126-linux-aarch64",
        "cuda128-linux-aarch64", "cuda130-linux-aarch64", "cuda132-linux-aarch64",
    ]  # fmt: skip


def test_ids_are_unique_and_stable(matrix, jobs) -> None:
    ids = [job.id for job in jobs]
    assert len(ids) == len(set(ids))
    assert ids == [job.id for job in plan_jobs(load_matrix())]
    for expected in ("cuda130-linux-x86_64", "cpu-linux-aarch64", "rocm64-linux-x86_64", "rocm714-windows-x64",
                     "xpu2025-linux-x86_64", "xpu2026-windows-x64", "cuda134-windows-arm64", "cpu-macos-arm64"):  # fmt: skip
        assert expected in ids


def test_order_is_platform_then_backend_then_version(jobs) -> None:
    family_order = ["cpu", "cuda", "rocm", "xpu"]

    def key(job):
        version = tuple(int(p) for p in job.version.split(".")) if job.version else ()
        return (PLATFORMS.index(job.platform), family_order.index(job.family), version)

    assert [job.id for job in jobs] == [job.id for job in sorted(jobs, key=key)]


def test_every_seed_toolkit_row_has_a_job(jobs) -> None:
    ids = by_id(jobs)
    for version in ("118", "121", "124", "126", "128", "130", "132"):
        for platform in ("linux-x86_64", "linux-aarch64", "windows-x64"):
            assert f"cuda{version}-{platform}" in ids
    for variant in ("rocm64", "rocm70", "rocm71", "rocm72", "rocm714"):
        assert f"{variant}-linux-x86_64" in ids
    assert ids["rocm72-windows-x64"].version == "7.2.1"
    assert ids["rocm72-linux-x86_64"].version == "7.2.4"
    for platform in PLATFORMS:
        assert f"cpu-{platform}" in ids


def test_container_and_native_jobs(jobs) -> None:
    for job in jobs:
        if job.family == "cpu":  # every platform, with the zig cross toolchain in the Python image on amd64
            assert job.runner == "cross" and job.toolchain == "zig" and job.image == "python:3.12-slim-bookworm"
            assert job.dagger_platform == "linux/amd64" and job.setup == [] and job.env == {}
        elif job.os == "linux":
            assert job.runner == "container" and job.image and job.dagger_platform and job.toolchain is None
        else:
            assert job.runner == "native-runner"
            assert job.image is None and job.dagger_platform is None and not job.image_pinned
            assert job.setup == [] and job.env == {}


def test_images_are_tag_only_until_locked(jobs) -> None:
    job = by_id(jobs)["cuda128-linux-x86_64"]
    assert (job.image, job.image_pinned) == ("nvidia/cuda:12.8.1-devel-rockylinux8", False)


def test_locked_image_carries_its_digest(tmp_path: Path) -> None:
    (tmp_path / "matrix.toml").write_text(default_matrix_path().read_text(encoding="utf-8"), encoding="utf-8")
    digest = "sha256:" + "12" * 32
    (tmp_path / "images.lock.toml").write_text(f'[images]\n"rocm/dev-ubuntu-22.04:7.14.0-full" = "{digest}"\n', encoding="utf-8")
    [job] = plan_jobs(load_matrix(tmp_path / "matrix.toml"), Selection(backends=("rocm",), versions=("7.14.0",), platforms=("linux-x86_64",)))
    assert job.image == f"rocm/dev-ubuntu-22.04:7.14.0-full@{digest}"
    assert job.image_pinned


# ---- cmake arguments, sources and step argv -----------------------------------------------------------


def test_cmake_args_per_backend(jobs) -> None:
    ids = by_id(jobs)
    # the zig toolchain file is the pipeline's own: the native step gets its name (--toolchain), not a path
    assert ids["cpu-linux-x86_64"].cmake_args == ["-DCOMPUTE_BACKEND=cpu", "-DCMAKE_BUILD_TYPE=Release", "-DBNB_ZIG_TARGET=x86_64-linux-gnu.2.17"]
    assert ids["cpu-windows-arm64"].cmake_args == ["-DCOMPUTE_BACKEND=cpu", "-DCMAKE_BUILD_TYPE=Release", "-DBNB_ZIG_TARGET=aarch64-windows-gnu"]
    assert ids["cpu-macos-arm64"].cmake_args == [
        "-DCOMPUTE_BACKEND=cpu", "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_OSX_DEPLOYMENT_TARGET=14.0", "-DBNB_ZIG_TARGET=aarch64-macos",
    ]  # fmt: skip
    assert ids["cpu-macos-arm64"].toolchain_file == "zig.cmake" and ids["cuda124-linux-x86_64"].toolchain_file is None
    assert ids["cuda124-linux-x86_64"].cmake_args == [
        "-DCOMPUTE_BACKEND=cuda", "-DCMAKE_BUILD_TYPE=Release", "-DCOMPUTE_CAPABILITY=60;70;75;80;86;89;90",
    ]  # fmt: skip
    rocm = ids["rocm70-linux-x86_64"].cmake_args
    assert rocm[:2] == ["-DCOMPUTE_BACKEND=hip", "-DCMAKE_BUILD_TYPE=MinSizeRel"]
    assert "-DCMAKE_HIP_FLAGS=--offload-compress" in rocm
    assert "-DBNB_ROCM_ARCH=gfx90a;gfx942;gfx1100;gfx1101;gfx1102;gfx1103;gfx1150;gfx1151;gfx1152;gfx1153;gfx1200;gfx1201;gfx950" in rocm
    assert ids["xpu2026-linux-x86_64"].cmake_args == ["-DCOMPUTE_BACKEND=xpu", "-DCMAKE_BUILD_TYPE=Release"]


def test_arch_lists_in_jobs(jobs) -> None:
    ids = by_id(jobs)
    assert ids["cuda124-linux-x86_64"].archs == ["60", "70", "75", "80", "86", "89", "90"]
    assert ids["cuda128-linux-aarch64"].archs == ["75", "80", "90", "100", "120"]
    assert ids["cuda130-linux-aarch64"].archs == ["75", "80", "90", "100", "110", "120", "121"]
    assert ids["cuda134-windows-arm64"].archs == ["121"]
    rocm714 = ids["rocm714-linux-x86_64"].archs
    for target in ("gfx908", "gfx950", "gfx1250", *(f"gfx103{i}" for i in range(7))):
        assert target in rocm714
    assert ids["cpu-linux-x86_64"].archs == [] and ids["xpu2025-linux-x86_64"].archs == []


COMMON_SOURCES = ["CMakeLists.txt", "VERSION", "cmake/**", "csrc/bitsandbytes.h", "csrc/common/**"]


def test_sources_per_backend(jobs) -> None:
    """Our tree names its subsets ([tool.bitsandbytes-ci.sources]): each job gets exactly those."""
    ids = by_id(jobs)
    assert ids["cpu-linux-x86_64"].sources == [*COMMON_SOURCES, "csrc/cpu/**"]
    assert ids["cuda128-linux-x86_64"].sources == [*COMMON_SOURCES, "csrc/cuda/**"]
    assert ids["rocm64-linux-x86_64"].sources == [*COMMON_SOURCES, "csrc/cuda/**"]
    assert ids["xpu2025-linux-x86_64"].sources == [*COMMON_SOURCES, "csrc/xpu/**"]
    assert all(job.optional_sources == [] for job in jobs)


def test_a_tree_that_names_no_sources_gets_the_defaults_where_present(matrix) -> None:
    [job] = plan_jobs(matrix, Selection(backends=("cuda",), versions=("13.0",), platforms=("linux-x86_64",)), DEFAULT_TREE)
    assert job.sources == [] and job.optional_sources == ["CMakeLists.txt", "VERSION", "cmake/**", "include/**", "csrc/**"]
    [wheel] = plan_wheels(matrix, [job], DEFAULT_TREE)
    assert wheel.sources == ["pyproject.toml", "bitsandbytes/**"]
    assert wheel.optional_sources == ["setup.py", "setup.cfg", "MANIFEST.in", "VERSION", "README.md", "LICENSE"]


def test_cpu_jobs_leave_out_gpu_sources_and_no_job_reads_the_pipeline(jobs) -> None:
    for job in jobs:
        assert not any(s.startswith("pipeline/") or s == "pipeline" for s in job.sources), job.id
        if job.backend == "cpu":
            assert not any(s.startswith(("csrc/cuda", "csrc/xpu")) for s in job.sources), job.id


def test_native_argv_is_the_documented_form(jobs) -> None:
    job = by_id(jobs)["cuda128-linux-x86_64"]
    assert job.native_argv() == [
        "python3", "-m", "bnb_build", "native",
        "--job-id", "cuda128-linux-x86_64", "--backend", "cuda", "--toolkit-version", "12.8.1",
        "--platform", "linux-x86_64", "--library", "libbitsandbytes_cuda128.so",
        "--archs", "70;75;80;86;89;90;100;120",
        "--source", "src", "--out", "out",
        "--", "-DCOMPUTE_BACKEND=cuda", "-DCMAKE_BUILD_TYPE=Release", "-DCOMPUTE_CAPABILITY=70;75;80;86;89;90;100;120",
    ]  # fmt: skip


def test_native_argv_of_a_cpu_job_has_no_version_or_archs(jobs) -> None:
    assert by_id(jobs)["cpu-macos-arm64"].native_argv() == [
        "python3", "-m", "bnb_build", "native", "--job-id", "cpu-macos-arm64", "--backend", "cpu",
        "--platform", "macos-arm64", "--library", "libbitsandbytes_cpu.dylib", "--toolchain", "zig.cmake", "--source", "src", "--out", "out",
        "--", "-DCOMPUTE_BACKEND=cpu", "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_OSX_DEPLOYMENT_TARGET=14.0", "-DBNB_ZIG_TARGET=aarch64-macos",
    ]  # fmt: skip


def test_output_subdir_follows_the_layout(jobs) -> None:
    assert by_id(jobs)["cuda134-windows-arm64"].output_subdir == "windows/arm64"


def test_job_is_frozen_and_serialises(jobs) -> None:
    job = jobs[0]
    with pytest.raises(Exception, match="frozen"):
        job.id = "other"
    assert type(job).model_validate_json(job.model_dump_json()) == job


# ---- selection -------------------------------------------------------------------------------------------


def test_select_by_version_prefix(matrix) -> None:
    ids = [job.id for job in plan_jobs(matrix, Selection(backends=("cuda",), versions=("13",)))]
    assert ids == [
        "cuda130-linux-x86_64", "cuda132-linux-x86_64", "cuda130-linux-aarch64", "cuda132-linux-aarch64",
        "cuda130-windows-x64", "cuda132-windows-x64", "cuda134-windows-arm64",
    ]  # fmt: skip
    assert [job.version for job in plan_jobs(matrix, Selection(backends=("rocm",), versions=("7.1",)))] == ["7.1.1"]


def test_select_rocm_by_backend_name(matrix) -> None:
    assert len(plan_jobs(matrix, Selection(backends=("hip",)))) == len(plan_jobs(matrix, Selection(backends=("rocm",)))) == 7


def test_unknown_version_names_value_and_allowed(matrix) -> None:
    with pytest.raises(SelectionError) as info:
        plan_jobs(matrix, Selection(backends=("cuda",), versions=("12.9",)))
    message = str(info.value)
    assert "'12.9'" in message and "allowed: 11.8.0, 12.1.1, 12.4.1, 12.6.3, 12.8.1, 13.0.2, 13.2.0, 13.4.1" in message


def test_unknown_backend_and_platform_name_the_allowed_ones(matrix) -> None:
    with pytest.raises(SelectionError, match=r"unknown backend 'cuda11' \(did you mean 'cuda'\?\); allowed: cpu, cuda, rocm \(hip\), xpu"):
        plan_jobs(matrix, Selection(backends=("cuda11",)))
    with pytest.raises(SelectionError, match=r"unknown platform 'macos-x86_64'.*allowed: linux-x86_64, linux-aarch64"):
        plan_jobs(matrix, Selection(platforms=("macos-x86_64",)))


def test_selection_matching_no_job_is_an_error(matrix) -> None:
    with pytest.raises(SelectionError, match="matches no job"):
        plan_jobs(matrix, Selection(backends=("rocm",), platforms=("macos-arm64",)))


# ---- arch override (upstream's CUDA_TARGETS) -----------------------------------------------------------


def test_arch_override_replaces_the_list(matrix) -> None:
    [job] = plan_jobs(matrix, Selection(backends=("cuda",), versions=("13.0",), platforms=("linux-x86_64",), archs="75;90"))
    assert job.archs == ["75", "90"]
    assert "-DCOMPUTE_CAPABILITY=75;90" in job.cmake_args
    assert job.native_argv()[job.native_argv().index("--archs") + 1] == "75;90"


def test_arch_override_leaves_cpu_jobs_alone(matrix) -> None:
    jobs = plan_jobs(matrix, Selection(backends=("cpu", "cuda",), platforms=("windows-arm64",), archs="120"))
    assert [(job.id, job.archs) for job in jobs] == [("cpu-windows-arm64", []), ("cuda134-windows-arm64", ["120"])]


@pytest.mark.parametrize(
    ("version", "archs", "expected"),
    [
        ("13.0", "70", "cuda 13.0.2 cannot build 70"),
        ("13.2", "75;70", "cuda 13.2.0 cannot build 70"),
        ("11.8", "90;100", "cuda 11.8.0 cannot build 100"),
        ("12.8", "75;abc", "'abc' not understood"),
        ("12.8", "75;;80", "empty element"),
        ("12.8", "sm_75", "'sm_75' not understood"),
    ],
)
def test_arch_override_is_checked_against_the_toolkit(matrix, version: str, archs: str, expected: str) -> None:
    with pytest.raises(SelectionError) as info:
        plan_jobs(matrix, Selection(backends=("cuda",), versions=(version,), platforms=("linux-x86_64",), archs=archs))
    assert expected in str(info.value)
    assert "--archs" in str(info.value)


def test_rocm_arch_override(matrix) -> None:
    [job] = plan_jobs(matrix, Selection(backends=("rocm",), versions=("6.4",), archs="gfx942"))
    assert "-DBNB_ROCM_ARCH=gfx942" in job.cmake_args
    with pytest.raises(SelectionError, match="'gfx9zz' not understood"):
        plan_jobs(matrix, Selection(backends=("rocm",), versions=("6.4",), archs="gfx9zz"))


def test_arch_override_without_gpu_jobs_is_an_error(matrix) -> None:
    with pytest.raises(SelectionError, match="'75' names cuda archs, and the selection has no such job"):
        plan_jobs(matrix, Selection(backends=("cpu",), archs="75"))


# ---- wheels and audit expectations ----------------------------------------------------------------


def test_one_wheel_per_platform(matrix, jobs, tree) -> None:
    wheels = plan_wheels(matrix, jobs, tree)
    assert [(w.id, w.plat_tag) for w in wheels] == [
        ("wheel-linux-x86_64", "manylinux_2_28_x86_64"),
        ("wheel-linux-aarch64", "manylinux_2_28_aarch64"),
        ("wheel-windows-x64", "win_amd64"),
        ("wheel-windows-arm64", "win_arm64"),
        ("wheel-macos-arm64", "macosx_14_0_arm64"),
    ]
    for wheel in wheels:
        assert wheel.libraries == [job.library for job in jobs if job.platform == wheel.platform]
        assert wheel.build_job_ids == [job.id for job in jobs if job.platform == wheel.platform]
        assert wheel.sources == ["pyproject.toml", "VERSION", "README.md", "bitsandbytes/**"], "our tree names them"
        assert wheel.optional_sources == []
    linux = wheels[0]
    assert linux.image == "python:3.12-slim-bookworm" and linux.runner == "container"
    # packing is pure Python: every wheel is packed in the wheel image (macOS and Windows on amd64)
    assert wheels[4].libraries == ["libbitsandbytes_cpu.dylib"] and wheels[4].image == linux.image
    assert wheels[4].dagger_platform == "linux/amd64" and wheels[4].runner == "cross"


def test_wheel_and_audit_argv(matrix, jobs, tree) -> None:
    wheel = plan_wheels(matrix, jobs, tree)[1]
    assert wheel.wheel_argv() == [
        "python3", "-m", "bnb_build", "wheel", "--platform", "linux-aarch64", "--plat-tag", "manylinux_2_28_aarch64",
        "--libs", "libs", "--source", "src", "--out", "out",
    ]  # fmt: skip
    assert audit_argv() == ["python3", "-m", "bnb_build", "audit", "--wheels", "wheels", "--expect", "expect.json", "--report", "audit.md"]


def test_expectations_for_the_audit(matrix, jobs, tree) -> None:
    expected = expectations(matrix, jobs, tree)
    assert set(expected) == {"wheels", "exemptions", "symbol_parity", "runtime_dispatch"}
    assert expected["symbol_parity"] is True, "our tree declares it"
    assert expectations(matrix, jobs)["symbol_parity"] is False, "a tree that declares nothing is not held to it"
    assert list(expected["wheels"]) == PLATFORMS
    linux = expected["wheels"]["linux-x86_64"]
    assert linux["plat_tag"] == "manylinux_2_28_x86_64"
    assert len(linux["libraries"]) == 15
    assert linux["libraries"]["libbitsandbytes_cuda128.so"] == {"backend": "cuda", "archs": ["70", "75", "80", "86", "89", "90", "100", "120"]}
    assert linux["libraries"]["libbitsandbytes_cpu.so"] == {"backend": "cpu", "archs": []}
    assert "GLIBCXX" in expected["exemptions"]["libbitsandbytes_xpu2025.so"]
    assert "libbitsandbytes_cpu.so" not in expected["exemptions"]


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(plan_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_archs_override_goes_to_the_jobs_of_its_kind(matrix) -> None:
    jobs = plan_jobs(matrix, Selection(backends=("cuda", "rocm"), versions=("13.0", "7.2"), platforms=("linux-x86_64",), archs="75;gfx90a"))
    archs = {job.id: job.archs for job in jobs}
    assert archs == {"cuda130-linux-x86_64": ["75"], "rocm72-linux-x86_64": ["gfx90a"]}


def test_cuda_only_override_leaves_rocm_jobs_their_matrix_lists(matrix) -> None:
    jobs = plan_jobs(matrix, Selection(backends=("cuda", "rocm"), versions=("13.0", "7.2"), platforms=("linux-x86_64",), archs="75"))
    rocm = next(job for job in jobs if job.backend == "hip")
    assert rocm.archs == list(matrix.rocm.archs_for("linux-x86_64", "7.2.4"))
    assert next(job for job in jobs if job.backend == "cuda").archs == ["75"]


def test_override_of_a_kind_the_selection_lacks_is_an_error(matrix) -> None:
    with pytest.raises(SelectionError, match="'gfx90a' names hip archs, and the selection has no such job"):
        plan_jobs(matrix, Selection(backends=("cuda",), archs="gfx90a"))
