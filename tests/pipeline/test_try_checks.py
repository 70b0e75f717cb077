"""What the plan gives the try step: each wheel's CPU floor, the CPU library a try without script must
find loaded, and the tree's runtime-libraries, which are not vendored into its wheels either."""

from __future__ import annotations

import pytest

from bitsandbytes_ci.core.errors import SelectionError
from bitsandbytes_ci.core.listing import format_table
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs, plan_wheels, try_argv, try_checks
from bitsandbytes_ci.core.tree import DEFAULT_TREE, TreeConfig, TreeFacts

MATRIX = load_matrix()


def tree(uses_openmp: bool = False, **config: object) -> TreeFacts:
    return TreeFacts(TreeConfig(**config), None, "bitsandbytes", uses_openmp, ())


def pairs(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == option]


def test_each_platform_gets_its_floor_and_its_cpu_library_in_matrix_order() -> None:
    checks = try_checks(MATRIX, ["windows-x64", "linux-x86_64", "linux-aarch64"])
    assert pairs(checks, "--floor") == [f"{p}={MATRIX.platforms[p].cpu_floor}" for p in ("linux-x86_64", "linux-aarch64", "windows-x64")]
    assert pairs(checks, "--expect-library") == ["linux-x86_64=libbitsandbytes_cpu.so", "linux-aarch64=libbitsandbytes_cpu.so",
                                                 "windows-x64=libbitsandbytes_cpu.dll"]  # fmt: skip
    assert pairs(checks, "--runtime-library") == []
    argv = try_argv(script="tests/wheel_smoke.py", checks=checks)
    assert argv[argv.index("--floor") :] == checks and "--script" in argv


def test_a_trees_floor_and_runtime_libraries_reach_the_try() -> None:
    facts = tree(cpu_floor={"linux-x86_64": "x86-64-v3"}, runtime_libraries=("libgomp.so.1",))
    checks = try_checks(MATRIX, ["linux-x86_64"], facts)
    assert pairs(checks, "--floor") == ["linux-x86_64=x86-64-v3"]
    assert pairs(checks, "--runtime-library") == ["libgomp.so.1"]


def test_a_trees_floor_of_another_arch_is_refused_naming_the_allowed_levels() -> None:
    with pytest.raises(SelectionError, match=r"cpu-floor of linux-aarch64: CPU floor 'x86-64-v3' is not a level of aarch64 \(allowed: armv8-a, armv8.2-a\)"):
        try_checks(MATRIX, ["linux-x86_64"], tree(cpu_floor={"linux-aarch64": "x86-64-v3"}))


def test_runtime_libraries_are_not_vendored_so_the_wheel_tag_follows_the_library() -> None:
    selection = Selection(backends=("cpu",), platforms=("linux-x86_64",))
    plain = tree(uses_openmp=True, cpu_toolchain="gcc")
    provided = tree(uses_openmp=True, cpu_toolchain="gcc", runtime_libraries=("libgomp.so.1",))
    [vendoring] = plan_wheels(MATRIX, plan_jobs(MATRIX, selection, plain), plain)
    [leaving] = plan_wheels(MATRIX, plan_jobs(MATRIX, selection, provided), provided)
    assert vendoring.vendor == ["libgomp.so.1"] and "--vendor" in vendoring.wheel_argv()
    assert leaving.vendor == [] and "--vendor" not in leaving.wheel_argv()


def test_the_plan_table_shows_each_wheels_floor() -> None:
    jobs = plan_jobs(MATRIX, Selection(backends=("cpu",)), DEFAULT_TREE)
    table = format_table(jobs, plan_wheels(MATRIX, jobs))
    header = next(line for line in table.splitlines() if line.startswith("wheel "))
    assert "cpu_floor" in header.split()
    for platform in ("linux-x86_64", "linux-aarch64", "macos-arm64"):
        row = next(line for line in table.splitlines() if line.startswith(f"wheel-{platform} "))
        assert MATRIX.platforms[platform].cpu_floor in row.split(), row
