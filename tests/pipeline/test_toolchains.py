"""bitsandbytes_ci.host.toolchains: what this host can build, and the environment of each job."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest
from host_helpers import REPO_ROOT, host_env

from bitsandbytes_ci.host import toolchains
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Job, Selection, plan_jobs
from bitsandbytes_ci.host.toolchains import HostToolchains, Installation, Runnable, Skip, decide, detect_host, step_environment

PYTHONPATH = REPO_ROOT / "pipeline" / "src"


def job(job_id: str) -> Job:
    [found] = [j for j in plan_jobs(load_matrix()) if j.id == job_id]
    return found


@pytest.fixture(scope="module")
def host() -> HostToolchains:
    return detect_host(host_env(), python=sys.executable, repo=REPO_ROOT, platform=toolchains.host_platform(platform.system(), platform.machine()))


@pytest.fixture(scope="module")
def cuda13(host: HostToolchains) -> Installation:
    found = [i for i in host.cuda if i.major_minor == "13.0"]
    assert found, f"no nvcc 13.0 detected ({host.describe()}); install one with tools/install-cuda-wheels.sh"
    return found[0]


def base(host: HostToolchains, env: dict[str, str] | None = None) -> dict[str, str]:
    return step_environment(host_env() if env is None else env, host, pythonpath=PYTHONPATH, source_date_epoch="1700000000")


def fake_host(**kwargs: object) -> HostToolchains:
    """Detection results as data (what another machine would have found)."""
    defaults: dict[str, object] = dict(platform="linux-x86_64", python_dir=Path(sys.executable).parent, path="/usr/bin", cmake="/usr/bin/cmake", cxx="/usr/bin/c++")
    return HostToolchains(**(defaults | kwargs))  # type: ignore[arg-type]


# ---- detection on this machine ----------------------------------------------------------------


def test_detects_the_machine_nvcc_13_0_with_its_version(cuda13: Installation) -> None:
    assert cuda13.version.startswith("13.0.")
    assert (cuda13.root / "bin" / "nvcc").is_file() and (cuda13.root / "include" / "cuda_runtime.h").is_file()
    assert cuda13.compiler == cuda13.root / "bin" / "nvcc"


def test_a_wrapper_script_folder_is_not_taken_for_a_cuda_root(host: HostToolchains) -> None:
    # /usr/local/bin/nvcc on this kind of machine is a wrapper: /usr/local is no CUDA root.
    assert all((i.root / "include" / "cuda_runtime.h").is_file() for i in host.cuda)
    assert len({i.root.resolve() for i in host.cuda}) == len(host.cuda)


def test_cuda_roots_listed_in_bnb_cuda_roots_come_first(tmp_path: Path, cuda13: Installation) -> None:
    link = tmp_path / "my-cuda"
    link.symlink_to(cuda13.root.resolve())
    env = host_env() | {toolchains.CUDA_ROOTS_ENV: str(link)}
    found = detect_host(env, python=sys.executable, repo=REPO_ROOT, platform="linux-x86_64").cuda
    assert found[0].root == link and found[0].origin == "$BNB_CUDA_ROOTS"
    assert [i.root.resolve() for i in found].count(cuda13.root.resolve()) == 1  # the same toolkit once


def test_cmake_and_python_come_from_the_interpreter_running_bnb_ci(host: HostToolchains) -> None:
    assert host.python_dir == Path(sys.executable).parent
    assert host.path.split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert host.cmake is not None


def test_debian_hipcc_is_found_with_its_package_version(host: HostToolchains) -> None:
    if not Path("/usr/bin/hipcc").exists():
        pytest.skip("Debian's hipcc is not installed (.ci/run installs it)")
    [debian] = [i for i in host.rocm if i.layout == "debian"]
    assert debian.major_minor == "5.2" and debian.root == Path("/usr")


# ---- decisions ----------------------------------------------------------------------------------


def test_cuda_13_0_job_gets_that_nvcc_and_no_inherited_toolkit_variables(host: HostToolchains, cuda13: Installation) -> None:
    env = host_env() | {"CUDACXX": "/elsewhere/nvcc", "CMAKE_TOOLCHAIN_FILE": "/x.cmake", "SOURCE_DATE_EPOCH": "5"}
    decision = decide(job("cuda130-linux-x86_64"), host, base(host, env))
    assert isinstance(decision, Runnable)
    assert decision.env["CUDACXX"] == str(cuda13.root / "bin" / "nvcc")
    assert decision.env["CUDAToolkit_ROOT"] == str(cuda13.root)
    assert "CMAKE_TOOLCHAIN_FILE" not in decision.env
    assert decision.env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert decision.env["PYTHONPATH"] == str(PYTHONPATH)
    path = decision.env["PATH"].split(os.pathsep)
    assert path[:2] == [str(Path(sys.executable).parent), str(cuda13.root / "bin")]
    assert decision.changes["CUDACXX"] == decision.env["CUDACXX"]


@pytest.mark.parametrize("job_id", ["cuda128-linux-x86_64", "cuda118-linux-x86_64", "cuda132-linux-x86_64"])
def test_other_cuda_versions_are_skipped_naming_what_was_found(host: HostToolchains, cuda13: Installation, job_id: str) -> None:
    wanted = ".".join(job(job_id).version.split(".")[:2])  # type: ignore[union-attr]
    if any(i.major_minor == wanted for i in host.cuda):
        pytest.skip(f"this machine has nvcc {wanted}")
    decision = decide(job(job_id), host, base(host))
    assert isinstance(decision, Skip)
    assert decision.reason.startswith(f"no nvcc {wanted} on this host (found: ")
    assert f"13.0 at {cuda13.root}" in decision.reason


def test_cuda_skip_reason_exact_text() -> None:
    host = fake_host(cuda=(Installation("cuda", "13.0.88", Path("/usr/local/cuda"), Path("/usr/local/cuda/bin/nvcc"), "/usr/local/cuda*"),))
    decision = decide(job("cuda128-linux-x86_64"), host, base(host))
    assert decision == Skip("no nvcc 12.8 on this host (found: 13.0 at /usr/local/cuda)")
    assert decide(job("cuda128-linux-x86_64"), fake_host(), base(host)) == Skip("no nvcc 12.8 on this host (found: none)")


def test_rocm_versions_of_the_matrix_are_skipped_against_debian_hipcc() -> None:
    debian = Installation("rocm", "5.2.3", Path("/usr"), Path("/usr/bin/hipcc"), "Debian packages", layout="debian")
    host = fake_host(rocm=(debian,))
    assert decide(job("rocm64-linux-x86_64"), host, base(host)) == Skip("no ROCm 6.4 on this host (found hipcc 5.2.3)")
    assert decide(job("rocm714-linux-x86_64"), fake_host(), base(host)) == Skip("no ROCm 7.14 on this host (found no hipcc)")


def test_matching_rocm_gets_amd_platform_and_its_toolchain() -> None:
    rocm_job = job("rocm64-linux-x86_64")
    debian = fake_host(rocm=(Installation("rocm", "6.4.0", Path("/usr"), Path("/usr/bin/hipcc"), "Debian packages", layout="debian"),))
    decision = decide(rocm_job, debian, base(debian))
    assert isinstance(decision, Runnable)
    assert decision.env["HIP_PLATFORM"] == "amd"
    # The pipeline's own toolchain file (it ships with the step programs): the tree needs none.
    assert decision.env["CMAKE_TOOLCHAIN_FILE"] == toolchains.DEBIAN_ROCM_TOOLCHAIN
    assert Path(toolchains.DEBIAN_ROCM_TOOLCHAIN) == REPO_ROOT / "pipeline/src/bnb_build/cmake/debian-rocm.cmake"
    assert Path(toolchains.DEBIAN_ROCM_TOOLCHAIN).is_file()
    opt = fake_host(rocm=(Installation("rocm", "6.4.1", Path("/opt/rocm-6.4.1"), Path("/opt/rocm-6.4.1/bin/hipcc"), "/opt/rocm*"),))
    decision = decide(rocm_job, opt, base(opt))
    assert isinstance(decision, Runnable)
    assert decision.env["ROCM_PATH"] == "/opt/rocm-6.4.1" and "CMAKE_TOOLCHAIN_FILE" not in decision.env
    assert "/opt/rocm-6.4.1/bin" in decision.env["PATH"].split(os.pathsep)


def test_xpu_needs_icpx_of_the_same_year() -> None:
    host = fake_host()
    assert decide(job("xpu2025-linux-x86_64"), host, base(host)) == Skip("no oneAPI icpx 2025 on this host (found: none)")
    icpx = Path("/opt/intel/oneapi/compiler/2025.1/bin/icpx")
    with_icpx = fake_host(oneapi=(Installation("oneapi", "2025.1.0", icpx.parent.parent, icpx, "oneAPI install"),))
    decision = decide(job("xpu2025-linux-x86_64"), with_icpx, base(host))
    assert isinstance(decision, Runnable) and decision.env["CXX"] == str(icpx)
    assert isinstance(decide(job("xpu2026-linux-x86_64"), with_icpx, base(host)), Skip)


@pytest.mark.parametrize(
    ("job_id", "reason"),
    [
        ("cuda130-windows-x64", "native-runner job for windows-x64: needs a Windows runner"),
        ("rocm714-windows-x64", "native-runner job for windows-x64: needs a Windows runner"),
        ("cuda130-linux-aarch64", "linux-aarch64 job: needs a Linux aarch64 host or a cross toolchain, and this host is linux-x86_64"),
    ],
)
def test_jobs_of_other_platforms_are_skipped(job_id: str, reason: str) -> None:
    host = fake_host()
    assert decide(job(job_id), host, base(host)) == Skip(reason)


def test_native_runner_job_runs_on_its_own_platform() -> None:
    host = fake_host(platform="windows-x64", cuda=(Installation("cuda", "13.0.88", Path("C:/cuda"), Path("C:/cuda/bin/nvcc.exe"), "$CUDA_PATH"),))
    assert isinstance(decide(job("cuda130-windows-x64"), host, base(host)), Runnable)


@pytest.mark.parametrize("job_id", ["cpu-linux-x86_64", "cpu-linux-aarch64", "cpu-windows-x64", "cpu-windows-arm64", "cpu-macos-arm64"])
@pytest.mark.parametrize("host_platform", ["linux-x86_64", "linux-aarch64", "macos-arm64"])
def test_cross_jobs_run_on_any_host_with_zig(job_id: str, host_platform: str) -> None:
    host = fake_host(platform=host_platform, zig="0.17.1", cxx=None)
    decision = decide(job(job_id), host, base(host, {"ZIG_GLOBAL_CACHE_DIR": "/cache/zig"}))
    assert isinstance(decision, Runnable) and decision.toolchain == "zig 0.17.1 (zig, cross)"
    assert decision.changes == {"ZIG_GLOBAL_CACHE_DIR": "/cache/zig"} and decision.env["ZIG_GLOBAL_CACHE_DIR"] == "/cache/zig"
    without = fake_host(platform=host_platform)
    assert decide(job(job_id), without, base(without)) == Skip(
        f"cross job for {job(job_id).platform}: needs zig for the Python running bnb-ci ({without.python_dir}): "
        "install the pipeline with its host extra, e.g. pip install './pipeline[host]' (the step tools at their pinned versions)"
    )


def test_zig_cache_comes_from_the_environment_else_the_cache_dir() -> None:
    host = fake_host()
    assert step_environment({}, host, pythonpath=Path("/p"), source_date_epoch="7", zig_cache=Path("/c/zig"))["ZIG_GLOBAL_CACHE_DIR"] == "/c/zig"
    kept = step_environment({"ZIG_GLOBAL_CACHE_DIR": "/mine"}, host, pythonpath=Path("/p"), source_date_epoch="7", zig_cache=Path("/c/zig"))
    assert kept["ZIG_GLOBAL_CACHE_DIR"] == "/mine"
    assert toolchains.parse_zig_version("0.17.1\n") == "0.17.1" and toolchains.parse_zig_version("No module named ziglang") is None


def test_detects_zig_of_the_python_running_bnb_ci(host: HostToolchains) -> None:
    assert host.zig is not None, "tests/requirements.txt installs ziglang (pipeline/step-requirements.txt pins it)"
    assert any(line.startswith("zig (cross): ziglang ") for line in host.describe())


def test_missing_cmake_or_compiler_is_named() -> None:
    host = fake_host(cmake=None, zig="0.17.1")
    decision = decide(job("cpu-linux-x86_64"), host, base(host))
    assert isinstance(decision, Skip) and decision.reason.startswith("no cmake on PATH (/usr/bin)")
    host = fake_host(cxx=None, cuda=(Installation("cuda", "13.0.88", Path("/cuda"), Path("/cuda/bin/nvcc"), "PATH"),))
    decision = decide(job("cuda130-linux-x86_64"), host, base(host))
    assert isinstance(decision, Skip) and "no C++ compiler" in decision.reason


def test_every_planned_job_gets_a_decision(host: HostToolchains) -> None:
    jobs = plan_jobs(load_matrix(), Selection())
    decisions = {j.id: decide(j, host, base(host)) for j in jobs}
    assert isinstance(decisions["cpu-linux-x86_64"], Runnable)
    assert all(d.reason for d in decisions.values() if isinstance(d, Skip))


# ---- pure parts -------------------------------------------------------------------------------


def test_version_parsers() -> None:
    nvcc = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0\n"
    assert toolchains.parse_nvcc_version(nvcc) == "13.0.88"
    assert toolchains.parse_nvcc_version("Cuda compilation tools, release 12.8") == "12.8"
    assert toolchains.parse_nvcc_version("bash: nvcc: not found") is None
    assert toolchains.parse_rocm_version("6.4.1-83\n") == "6.4.1"
    assert toolchains.parse_rocm_version("5.2.3-8") == "5.2.3"
    header = "#define HIP_VERSION_MAJOR 5\n#define HIP_VERSION_MINOR 2\n#define HIP_VERSION_PATCH 21153\n"
    assert toolchains.parse_hip_version_header(header) == "5.2"
    icpx = "Intel(R) oneAPI DPC++/C++ Compiler 2025.1.0 (2025.1.0.20250317)\nTarget: x86_64-unknown-linux-gnu\n"
    assert toolchains.parse_icpx_version(icpx) == "2025.1.0"


@pytest.mark.parametrize(
    ("system", "machine", "expected"),
    [("Linux", "x86_64", "linux-x86_64"), ("Linux", "aarch64", "linux-aarch64"), ("Darwin", "arm64", "macos-arm64"),
     ("Windows", "AMD64", "windows-x64"), ("Windows", "ARM64", "windows-arm64"), ("Linux", "riscv64", None)],
)  # fmt: skip
def test_host_platform(system: str, machine: str, expected: str | None) -> None:
    assert toolchains.host_platform(system, machine) == expected


def test_step_environment_drops_owned_variables_and_keeps_the_rest() -> None:
    host = fake_host(path=os.pathsep.join(["/venv/bin", "/usr/bin"]))
    env = step_environment({"HOME": "/root", "CUDACXX": "/x", "PYTHONPATH": "/y", "ROCM_PATH": "/z"}, host, pythonpath=Path("/p"), source_date_epoch="7")
    assert env == {"HOME": "/root", "PATH": "/venv/bin:/usr/bin", "PYTHONPATH": "/p", "SOURCE_DATE_EPOCH": "7"}
