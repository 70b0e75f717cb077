"""bitsandbytes_ci.host.local: the host executor (work directories, exact step argv, failures, wheels, audit input)."""

from __future__ import annotations

import io
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from host_helpers import INJECTED_ERROR, REPO_ROOT, break_cuda_sources, copy_repo, host_env

from bitsandbytes_ci.host import local
from bitsandbytes_ci.host.local import Console, HostSettings, SourceError
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs, plan_wheels
from bitsandbytes_ci.core.tree import TreeError, read_tree
from bitsandbytes_ci.core.results import JobResult, render_summary
from bitsandbytes_ci.host.toolchains import detect_host, host_platform, step_environment
from bnb_build import inputs, process


def settings_for(repo: Path, cache: Path, *, keep_going: bool = False) -> HostSettings:
    env = host_env()
    host = detect_host(env, python=sys.executable, repo=repo, platform=host_platform(platform.system(), platform.machine()))
    base = step_environment(env, host, pythonpath=local.step_pythonpath(), source_date_epoch=local.DEFAULT_SOURCE_DATE_EPOCH)
    return HostSettings(repo=repo, cache_dir=cache, concurrency=2, host=host, base_env=base, keep_going=keep_going, tree=read_tree(repo))


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[HostSettings, list, list[JobResult], str]:
    """The CPU and CUDA 13.0 jobs (one arch) run on a copy whose CUDA sources do not compile."""
    root = tmp_path_factory.mktemp("broken")
    repo = copy_repo(root / "repo")
    break_cuda_sources(repo)
    settings = settings_for(repo, root / "cache")
    jobs = plan_jobs(load_matrix(), Selection(backends=("cpu", "cuda"), platforms=("linux-x86_64",), archs="75"), read_tree(repo))
    jobs = [j for j in jobs if j.id in ("cpu-linux-x86_64", "cuda130-linux-x86_64", "cuda128-linux-x86_64")]
    out = io.StringIO()
    results = anyio.run(local.run_builds, jobs, settings, Console(out))
    return settings, jobs, results, out.getvalue()


def by_id(results: list[JobResult]) -> dict[str, JobResult]:
    return {r.job_id: r for r in results}


def test_a_failing_job_does_not_stop_the_cpu_job(broken_run) -> None:
    _, jobs, results, progress = broken_run
    assert [r.job_id for r in results] == [j.id for j in jobs]  # plan order
    results = by_id(results)
    cpu, cuda = results["cpu-linux-x86_64"], results["cuda130-linux-x86_64"]
    assert cpu.status == "built" and cpu.artifact is not None and cpu.artifact.is_file()
    assert cpu.sha256 == inputs.file_sha256(cpu.artifact) == cpu.build_info["library_sha256"]  # type: ignore[index]
    assert cuda.status == "failed" and cuda.exit_code not in (None, 0)
    assert cuda.log_path is not None and cuda.log_path.is_file()
    assert 0 < len(cuda.log_tail) <= 20
    assert INJECTED_ERROR in cuda.log_path.read_text()
    assert "[cuda130-linux-x86_64] FAILED" in progress


def test_summary_lists_built_skipped_and_failed(broken_run) -> None:
    _, _, results, _ = broken_run
    summary = render_summary(results)
    assert "summary: 1 built, 1 skipped, 1 failed" in summary
    failed_section = summary.split("failed:")[1]
    assert "cuda130-linux-x86_64" in failed_section and "log: " in failed_section
    assert "no nvcc 12.8 on this host" in summary.split("skipped:")[1]


def test_work_directory_holds_the_source_subset_and_the_exact_argv(broken_run) -> None:
    settings, jobs, _, _ = broken_run
    [cpu] = [j for j in jobs if j.id == "cpu-linux-x86_64"]
    work = local.work_dir(settings, cpu.id)
    assert inputs.all_files(work / "src") == inputs.expand(settings.repo, cpu.sources)
    assert not (work / "src" / "pipeline").exists() and not (work / "src" / "csrc" / "cuda").exists()
    first_line = (work / "log.txt").read_text().splitlines()[0]
    assert first_line == "+ " + subprocess.list2cmdline(cpu.native_argv())
    assert (work / "out" / "linux" / "x86_64" / "libbitsandbytes_cpu.so").is_file()


def test_the_wheel_of_a_platform_with_a_failed_job_is_skipped_unless_keep_going(broken_run) -> None:
    _, jobs, results, _ = broken_run
    [wheel] = plan_wheels(load_matrix(), jobs)
    builds = by_id(results)
    libraries, skip, notes = local.wheel_inputs(wheel, builds, keep_going=False)
    assert libraries == [] and skip is not None
    assert skip.startswith("cuda130-linux-x86_64 failed") and "--keep-going" in skip
    libraries, skip, notes = local.wheel_inputs(wheel, builds, keep_going=True)
    assert [r.job_id for r in libraries] == ["cpu-linux-x86_64"] and skip is None
    assert notes == ("packed without cuda130-linux-x86_64 (failed), because of --keep-going",)


def test_keep_going_packs_the_built_libraries(broken_run) -> None:
    settings, jobs, results, _ = broken_run
    settings = replace(settings, keep_going=True)
    [wheel] = plan_wheels(load_matrix(), jobs)
    [packed] = anyio.run(local.run_wheels, [wheel], results, settings, Console(io.StringIO()))
    assert packed.status == "built", (packed.reason, packed.log_tail)
    assert packed.artifact is not None and packed.artifact.name.startswith("bitsandbytes-")
    assert packed.notes[0].startswith("packed without cuda130-linux-x86_64")


def test_a_wheel_without_built_libraries_is_skipped() -> None:
    matrix = load_matrix()
    jobs = plan_jobs(matrix, Selection(backends=("cpu",), platforms=("macos-arm64",)))
    [wheel] = plan_wheels(matrix, jobs)
    skipped = {"cpu-macos-arm64": JobResult("cpu-macos-arm64", "library", "skipped", "macos-arm64", reason="x")}
    assert local.wheel_inputs(wheel, skipped, keep_going=True) == ([], "no library was built for macos-arm64", ())


def test_audit_expects_only_built_libraries_and_the_host_raised_tag() -> None:
    matrix = load_matrix()
    jobs = plan_jobs(matrix, Selection(backends=("cpu", "cuda"), versions=(), platforms=("linux-x86_64",)))
    built = [j for j in jobs if j.id in ("cpu-linux-x86_64", "cuda130-linux-x86_64")]
    wheel = Path("bitsandbytes-0.1.0-py3-none-manylinux_2_34_x86_64.whl")
    expect, notes = local.audit_expectations(matrix, built, {"linux-x86_64": wheel})
    spec = expect["wheels"]["linux-x86_64"]
    assert sorted(spec["libraries"]) == ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"]
    assert spec["plat_tag"] == "manylinux_2_34_x86_64"
    assert notes == ("linux-x86_64: expecting manylinux_2_34_x86_64 (raised from manylinux_2_28_x86_64 for this host's glibc)",)
    # A tag the wheel step did not raise (or lowered) is expected as planned.
    expect, notes = local.audit_expectations(matrix, built, {"linux-x86_64": Path("b-0.1.0-py3-none-manylinux_2_17_x86_64.whl")})
    assert expect["wheels"]["linux-x86_64"]["plat_tag"] == "manylinux_2_28_x86_64" and notes == ()


def test_source_date_epoch_is_the_option_else_the_one_fixed_default(tmp_path: Path) -> None:
    # Neither the environment nor git: a host build gives the bytes of a Dagger build of the same sources.
    assert local.DEFAULT_SOURCE_DATE_EPOCH == "315532800" == process.DEFAULT_SOURCE_DATE_EPOCH
    assert local.source_date_epoch() == local.source_date_epoch("") == local.DEFAULT_SOURCE_DATE_EPOCH
    assert local.source_date_epoch("1600000000") == "1600000000"
    with pytest.raises(SourceError, match="not a whole number"):
        local.source_date_epoch("yesterday")


def test_source_that_is_not_a_checkout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TreeError, match=r"is not a tree the pipeline can build: it has no CMakeLists.txt \(the native library's build\); run bnb-ci from the repository root or pass --source DIR"):
        read_tree(tmp_path)
    (tmp_path / "CMakeLists.txt").write_text("project(x)\n")
    with pytest.raises(TreeError, match=r"has no Python package 'bitsandbytes' \(no bitsandbytes/__init__.py\)"):
        read_tree(tmp_path)
    assert read_tree(REPO_ROOT).package == "bitsandbytes"


def test_step_programs_come_from_this_pipeline() -> None:
    assert (local.step_pythonpath() / "bnb_build" / "__main__.py").is_file()
