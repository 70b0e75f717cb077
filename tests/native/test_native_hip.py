"""The HIP library: the CUDA sources compiled as HIP for gfx90a (Debian's ROCm 5.2 here)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

BNB_ERROR_NOT_AVAILABLE, BNB_ERROR_RUNTIME = 5, 6


@pytest.fixture(scope="module")
def hip(hip_build, load_library):
    return load_library(hip_build.library)


def test_library_named_after_hip_version(hip_build, hip_version):
    major, minor = hip_version
    assert hip_build.library.name == f"libbitsandbytes_rocm{major}{minor}{hip_build.library.suffix}"


def test_exports_the_same_symbols_as_cpu(hip_build, cpu_build, elf, abi_names):
    assert elf.exported(hip_build.library) == elf.exported(cpu_build.library) == abi_names


def test_offload_bundle_holds_the_requested_arch(hip_build, elf, tmp_path):
    bundle = elf.section(hip_build.library, ".hip_fatbin")
    assert bundle is not None, "no .hip_fatbin section"
    bundler = shutil.which("clang-offload-bundler-15") or shutil.which("clang-offload-bundler")
    if bundler is None:
        assert b"amdgcn-amd-amdhsa--gfx90a" in bundle
        return
    (tmp_path / "bundle.o").write_bytes(bundle)
    listing = subprocess.run([bundler, "--list", "--type=o", f"--input={tmp_path / 'bundle.o'}"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert sorted(t.split("--")[-1] for t in listing if "amdgcn" in t) == ["gfx90a"], listing


def test_no_build_or_source_paths_in_binary(hip_build):
    data = hip_build.library.read_bytes()
    for path in (hip_build.source_dir, hip_build.build_dir):
        assert str(path).encode() not in data, f"{path} is embedded in {hip_build.library}"


def test_information_functions(hip, hip_version):
    major, minor = hip_version
    assert hip.text("bnb_backend") == "hip"
    assert hip.call("runtime_version") == major * 1000 + minor * 10
    assert hip.call("device_count") >= 0


def test_cpu_kernel_settings_do_not_apply(hip):
    assert hip.text("bnb_cpu_isa") == ""
    assert hip.call("cpu_threads") == -1
    assert hip.lib.bnb_cpu_set_isa(b"avx2") == BNB_ERROR_NOT_AVAILABLE
    assert "bnb_cpu_set_isa: the hip backend has no CPU kernels" in hip.text("bnb_last_error")
    assert hip.lib.bnb_cpu_set_threads(2) == BNB_ERROR_NOT_AVAILABLE


def test_quantize_without_gpu_is_a_runtime_error(hip):
    if hip.call("device_count") > 0:
        pytest.skip("a GPU is visible")
    x, absmax, packed = np.ones(100, np.float32), np.zeros(2, np.float32), np.zeros(50, np.uint8)
    assert hip.call("quantize_4bit_fp32", x, absmax, packed, 64, 100, 2) == BNB_ERROR_RUNTIME
    assert "HIP runtime error" in hip.text("bnb_last_error")
