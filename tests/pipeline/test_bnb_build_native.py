"""The native step (bnb_build.native): argument checks, CMake arguments, and real builds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from bnb_build_helpers import (
    NVCC,
    check_ok,
    cpu_work_dir,
    native_args,
    prepare_work_dir,
    run_step,
    scratch_dir,
    step_env,
)

from bnb_build import elf, inputs, native
from bnb_build.errors import BuildMismatch, InputError, UsageError

CPU_ARGS = native_args("cpu-linux-x86_64", "cpu", "libbitsandbytes_cpu.so")


# ----------------------------------------------------------------------------------------------
# Arguments (no build)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--platform": "linux-arm64"}, "unknown platform 'linux-arm64'; allowed: linux-x86_64, linux-aarch64"),
        ({"--backend": "rocm"}, "unknown backend 'rocm'; allowed: cpu, cuda, hip, xpu"),
        ({"--library": "libbitsandbytes_cpu.dll"}, "expected libbitsandbytes_<variant>.so"),
        ({"--library": "bitsandbytes_cpu.so"}, "is not allowed for linux-x86_64"),
        ({"--job-id": "a/b"}, "job id 'a/b' is not allowed"),
        ({"--archs": "75"}, "archs apply to cuda and hip only"),
        ({"--out": "src/out"}, "--out src/out is inside --source src"),
    ],
)
def test_bad_options_are_rejected(change: dict, message: str) -> None:
    args = list(CPU_ARGS[1:])
    for option, value in change.items():
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    with pytest.raises(UsageError) as e:
        native.parse_args(args)
    assert message in str(e.value)


def test_cmake_arguments_may_not_contradict_the_job() -> None:
    with pytest.raises(UsageError, match="contradicts the job options, which give -DCOMPUTE_BACKEND=cpu"):
        native.parse_args(CPU_ARGS[1:] + ["--", "-DCOMPUTE_BACKEND=cuda"])
    with pytest.raises(UsageError, match="BNB_OUTPUT_DIR is set by the native step"):
        native.parse_args(CPU_ARGS[1:] + ["--", "-DBNB_OUTPUT_DIR=/tmp/x"])
    same = native.parse_args(CPU_ARGS[1:] + ["--", "-DCOMPUTE_BACKEND:STRING=cpu"])
    assert same.flags == ["-DCOMPUTE_BACKEND:STRING=cpu"], "a repeated define is passed once"


def test_configure_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    job = native.parse_args(
        native_args("cu130-x86_64", "cuda", "libbitsandbytes_cuda130.so", archs="75;90", toolkit="13.0")[1:]
        + ["--build-dir", "b", "--", "-DCMAKE_BUILD_TYPE=Release"]
    )
    args = native.configure_args(job, cmake="cmake", ninja="/bin/ninja", ccache="/bin/ccache")
    assert args == [
        "cmake", "-S", str(tmp_path / "src"), "-B", str(tmp_path / "b"),
        "-G", "Ninja", "-DCMAKE_MAKE_PROGRAM=/bin/ninja",
        f"-DBNB_OUTPUT_DIR={tmp_path}/out/.partial-cu130-x86_64/linux/x86_64",
        f"-DCMAKE_PROJECT_INCLUDE={native.CMAKE_DIR / 'project.cmake'}",
        "-DCMAKE_CXX_COMPILER_LAUNCHER=/bin/ccache",
        "-DCMAKE_CUDA_COMPILER_LAUNCHER=/bin/ccache",
        "-DCMAKE_HIP_COMPILER_LAUNCHER=/bin/ccache",
        "-DCOMPUTE_BACKEND=cuda", "-DCOMPUTE_CAPABILITY=75;90", "-DCMAKE_BUILD_TYPE=Release",
    ]
    assert native.configure_args(job, cmake="cmake", ninja=None, ccache=None)[5:] == [
        f"-DBNB_OUTPUT_DIR={tmp_path}/out/.partial-cu130-x86_64/linux/x86_64",
        f"-DCMAKE_PROJECT_INCLUDE={native.CMAKE_DIR / 'project.cmake'}",
        "-DCOMPUTE_BACKEND=cuda", "-DCOMPUTE_CAPABILITY=75;90", "-DCMAKE_BUILD_TYPE=Release",
    ]
    # the pipeline's own toolchain file, by name; the sources as CMake sees them (stable_source_path)
    zig = native.parse_args([*CPU_ARGS[1:5], "--toolchain", "zig.cmake", *CPU_ARGS[5:]])
    args = native.configure_args(zig, cmake="cmake", ninja=None, ccache=None, source_path=Path("/tmp/bnb-src/cpu"))
    assert args[2] == "/tmp/bnb-src/cpu" and f"-DCMAKE_TOOLCHAIN_FILE={native.CMAKE_DIR / 'zig.cmake'}" in args
    with pytest.raises(UsageError, match=r"--toolchain 'mingw.cmake' is not a toolchain file of the pipeline; allowed: zig.cmake, debian-rocm.cmake"):
        native.parse_args([*CPU_ARGS[1:5], "--toolchain", "mingw.cmake", *CPU_ARGS[5:]])
    hip = native.parse_args(native_args("rocm", "hip", "libbitsandbytes_rocm52.so", archs="gfx90a")[1:])
    assert hip.flags == ["-DCOMPUTE_BACKEND=hip", "-DBNB_ROCM_ARCH=gfx90a"]


def test_reproducible_environment() -> None:
    job = native.parse_args(CPU_ARGS[1:])
    env = native.build_environment({"PATH": "/bin", "LC_ALL": "de_DE.UTF-8"}, job)
    assert env["SOURCE_DATE_EPOCH"] == "315532800" and env["LC_ALL"] == "C" and env["TZ"] == "UTC"
    assert native.build_environment({"SOURCE_DATE_EPOCH": "1700000000"}, job)["SOURCE_DATE_EPOCH"] == "1700000000"
    assert native.use_ccache({"PATH": os.environ["PATH"], "BNB_NO_CCACHE": "1"}) is False


def test_missing_cmakelists_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    result = run_step(CPU_ARGS, tmp_path)
    assert result.returncode == InputError.exit_code
    assert "no CMakeLists.txt in --source src" in result.stderr
    assert not (tmp_path / "out" / "linux").exists()


# ----------------------------------------------------------------------------------------------
# Real builds


def test_cpu_build_writes_the_library_and_its_build_info() -> None:
    work = cpu_work_dir()
    out = work / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "linux/x86_64/libbitsandbytes_cpu.so",
        "linux/x86_64/libbitsandbytes_cpu.so.build-info.json",
    ], "exactly the library and its build-info, no staging leftovers"
    library = out / "linux/x86_64/libbitsandbytes_cpu.so"
    text = (out / "linux/x86_64/libbitsandbytes_cpu.so.build-info.json").read_text()
    info = json.loads(text)
    assert text == json.dumps(info, sort_keys=True, indent=2) + "\n"
    assert str(scratch_dir()) not in text and "/usr/" not in text, "no absolute paths"
    assert info["job_id"] == "cpu-linux-x86_64" and info["backend"] == "cpu" and info["toolkit_version"] is None
    assert info["platform"] == "linux-x86_64" and info["archs"] == [] and info["flags"] == ["-DCOMPUTE_BACKEND=cpu"]
    assert info["library"] == "libbitsandbytes_cpu.so"
    assert info["library_sha256"] == inputs.file_sha256(library)
    assert info["compilers"]["CXX"]["id"] == "GNU" and info["compilers"]["CXX"]["version"].count(".") == 2
    expected_digest = inputs.digest(
        work / "src",
        inputs.all_files(work / "src"),
        {"backend": "cpu", "toolkit_version": None, "platform": "linux-x86_64", "library": "libbitsandbytes_cpu.so",
         "archs": [], "flags": ["-DCOMPUTE_BACKEND=cpu"], "toolchain": None},
    )
    assert info["inputs_digest"] == expected_digest
    assert info["toolchain"] is None and info["openmp"] == {"asked": False, "found": False}, "our tree uses std::thread"
    assert "bnb_quantize_blockwise_fp32" in elf.read_elf(library).exported
    assert oct(library.stat().st_mode & 0o777) == "0o755"


def test_ccache_is_the_compiler_launcher_when_on_path() -> None:
    if shutil.which("ccache") is None:
        pytest.skip("ccache is not installed")
    cache = (cpu_work_dir() / "build" / "CMakeCache.txt").read_text()
    assert "CMAKE_CXX_COMPILER_LAUNCHER:UNINITIALIZED=" in cache and "ccache" in cache


def test_two_builds_in_different_directories_are_identical(tmp_path: Path) -> None:
    first = cpu_work_dir()
    second = prepare_work_dir(tmp_path / "another" / "work-b", "cpu")
    result = check_ok(run_step(CPU_ARGS + ["--build-dir", "cmake-build"], second, step_env(BNB_NO_CCACHE="1")))
    assert "+ " in result.stdout and "cmake" in result.stdout, "commands are printed before they run"
    rel = Path("out/linux/x86_64")
    for name in ("libbitsandbytes_cpu.so", "libbitsandbytes_cpu.so.build-info.json"):
        assert (first / rel / name).read_bytes() == (second / rel / name).read_bytes(), name


def test_a_library_other_than_the_job_asks_for_is_an_error() -> None:
    work = cpu_work_dir()
    args = native_args("cpu-linux-x86_64", "cpu", "libbitsandbytes_cpu2.so")
    args[args.index("--out") + 1] = "out-mismatch"
    result = run_step(args, work)
    assert result.returncode == BuildMismatch.exit_code, result.stderr
    assert "does not match the job cpu-linux-x86_64" in result.stderr
    assert "libbitsandbytes_cpu.so" in result.stderr
    assert not any(p.is_file() for p in (work / "out-mismatch").rglob("*")), "nothing is written on failure"


# ----------------------------------------------------------------------------------------------
# GPU backends (compiled here, not run)

CUDA_ARGS = native_args("cu130-linux-x86_64", "cuda", "libbitsandbytes_cuda130.so", archs="75", toolkit="13.0")


@pytest.fixture(scope="module")
def cuda_work_dir() -> Path:
    if not NVCC.exists():
        pytest.skip(f"{NVCC} is not installed")
    if not Path(__file__).resolve().parents[2].joinpath("cmake/Bnbcuda.cmake").exists():
        pytest.skip("cmake/Bnbcuda.cmake is not in this checkout yet")
    work = prepare_work_dir(scratch_dir() / "cuda", "cuda")
    check_ok(run_step(CUDA_ARGS, work, step_env(CUDACXX=str(NVCC))))
    return work


def test_cuda_build_for_one_arch(cuda_work_dir: Path) -> None:
    out = cuda_work_dir / "out/linux/x86_64"
    info = json.loads((out / "libbitsandbytes_cuda130.so.build-info.json").read_text())
    assert info["archs"] == ["75"] and info["toolkit_version"] == "13.0"
    assert info["flags"] == ["-DCOMPUTE_BACKEND=cuda", "-DCOMPUTE_CAPABILITY=75"]
    assert info["compilers"]["CUDA"]["id"] == "NVIDIA" and info["compilers"]["CUDA"]["version"].startswith("13.0.")
    lib = elf.read_elf(out / "libbitsandbytes_cuda130.so")
    assert lib.sass_archs == ["sm_75"]
    assert "bnb_quantize_blockwise_fp32" in lib.exported


def test_cuda_toolkit_other_than_the_job_asks_for_is_an_error(cuda_work_dir: Path) -> None:
    args = native_args("cu128-linux-x86_64", "cuda", "libbitsandbytes_cuda128.so", archs="75", toolkit="12.8")
    args[args.index("--out") + 1] = "out-cu128"
    result = run_step(args, cuda_work_dir, step_env(CUDACXX=str(NVCC)))
    assert result.returncode == BuildMismatch.exit_code, result.stderr
    assert "the toolkit found does not match the job cu128-linux-x86_64" in result.stderr
    assert "libbitsandbytes_cuda130.so" in result.stderr and "(toolkit 12.8)" in result.stderr
    assert not (cuda_work_dir / "out-cu128" / "linux").exists()


def test_hip_build_for_gfx90a_with_debian_hipcc(tmp_path: Path) -> None:
    if shutil.which("clang++-15") is None or not Path("/usr/include/hip/hip_version.h").exists():
        pytest.skip("Debian's hipcc / libamdhip64-dev are not installed")
    work = prepare_work_dir(tmp_path / "hip", "hip")
    version = Path("/usr/include/hip/hip_version.h").read_text()
    major = version.split("HIP_VERSION_MAJOR ")[1].split()[0]
    minor = version.split("HIP_VERSION_MINOR ")[1].split()[0]
    library = f"libbitsandbytes_rocm{major}{minor}.so"
    args = native_args("rocm-linux-x86_64", "hip", library, archs="gfx90a")
    args[args.index("--source"):args.index("--source")] = ["--toolchain", "debian-rocm.cmake"]
    check_ok(run_step(args, work, step_env(HIP_PLATFORM="amd")))
    out = work / "out/linux/x86_64"
    info = json.loads((out / f"{library}.build-info.json").read_text())
    assert info["flags"] == ["-DCOMPUTE_BACKEND=hip", "-DBNB_ROCM_ARCH=gfx90a"]
    assert info["compilers"]["HIP"]["id"] == "Clang"
    assert str(work) not in json.dumps(info), "the toolchain file path stays out of build-info"
    targets = elf.read_elf(out / library).gfx_targets
    assert targets in (["gfx90a"], [elf.COMPRESSED_UNKNOWN]), targets


def test_a_zig_targets_first_build_says_it_builds_the_runtime_once(tmp_path: Path) -> None:
    """zig builds a target's C runtime the first time (minutes): the step says so, once. The shared zig
    cache of the test session already holds the runtime; only its notice marker is taken away here."""
    from bnb_build import zig_runtime

    env = step_env(BNB_NO_CCACHE="1")
    assert env.get("ZIG_GLOBAL_CACHE_DIR"), "tests/conftest.py shares one zig cache"
    target = "x86_64-linux-gnu.2.17"
    (zig_runtime.zig_cache(env) / zig_runtime.MARKERS / target).unlink(missing_ok=True)
    args = [*native_args("cpu-linux-x86_64", "cpu", "libbitsandbytes_cpu.so")[:-4], "--toolchain", "zig.cmake", "--source", "src", "--out", "out",
            "--", f"-DBNB_ZIG_TARGET={target}"]  # fmt: skip
    first = check_ok(run_step(args, prepare_work_dir(tmp_path / "a", "cpu"), env))
    notice = f"zig: building its C runtime and libc++ for {target} first; this happens once per target"
    assert notice in first.stdout
    again = check_ok(run_step(args, prepare_work_dir(tmp_path / "b", "cpu"), env))
    assert notice not in again.stdout and "zig: building" not in again.stdout
    assert zig_runtime.target_of(["-DCOMPUTE_BACKEND=cpu", f"-DBNB_ZIG_TARGET={target}"]) == target
