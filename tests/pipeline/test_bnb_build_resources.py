"""bnb_build.resources: the compile parallelism a build job takes from its share of CPUs and memory."""

from __future__ import annotations

import os

from bnb_build import native, resources


def test_parallelism_is_the_jobs_share_of_cpus_and_memory() -> None:
    assert resources.compile_parallelism(cpus=4, memory_gb=16, concurrent_jobs=1, compile_memory_gb=1) == 4
    assert resources.compile_parallelism(cpus=4, memory_gb=16, concurrent_jobs=2, compile_memory_gb=1) == 2
    # a 4-core / 16 GB runner with nvcc compiles of 3 GB each: memory, not CPUs, decides
    assert resources.compile_parallelism(cpus=4, memory_gb=16, concurrent_jobs=2, compile_memory_gb=3) == 2
    assert resources.compile_parallelism(cpus=32, memory_gb=16, concurrent_jobs=1, compile_memory_gb=3) == 5
    assert resources.compile_parallelism(cpus=2, memory_gb=1, concurrent_jobs=4, compile_memory_gb=3) == 1, "at least one"


def test_the_environment_names_the_share_and_an_explicit_value_wins() -> None:
    cpus, memory = resources.available_cpus(), resources.available_memory_gb()
    assert 1 <= cpus <= (os.cpu_count() or 1) and memory > 0.4
    expected = resources.compile_parallelism(cpus=cpus, memory_gb=memory, concurrent_jobs=2, compile_memory_gb=1)
    assert resources.parallelism_from_env({"BNB_CONCURRENT_JOBS": "2", "BNB_COMPILE_MEMORY_GB": "1"}) == expected
    assert resources.parallelism_from_env({"BNB_BUILD_PARALLEL": "7", "BNB_CONCURRENT_JOBS": "64"}) == 7
    # malformed values fall back to the defaults (one job, 1 GB per compile)
    assert resources.parallelism_from_env({"BNB_CONCURRENT_JOBS": "lots", "BNB_COMPILE_MEMORY_GB": "-1"}) == resources.parallelism_from_env({})


def test_the_native_step_passes_it_to_cmake_build(tmp_path) -> None:
    job = native.parse_args(["--job-id", "cpu-linux-x86_64", "--backend", "cpu", "--platform", "linux-x86_64",
                             "--library", "libbitsandbytes_cpu.so", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")])  # fmt: skip
    assert native.build_args(job, cmake="cmake", parallel=3)[-2:] == ["--parallel", "3"]
