"""bitsandbytes_ci.core.shards: the CI matrix the plan emits, and that each shard fits one hosted runner."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from bitsandbytes_ci.host import cli
from bitsandbytes_ci.core.errors import SelectionError
from bitsandbytes_ci.core.matrix import default_matrix_path, load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs
from bitsandbytes_ci.core.shards import ci_matrix, image_size, jobs_at_once, plan_native_rows, plan_shards


@pytest.fixture(scope="module")
def matrix():
    return load_matrix()


def test_every_container_and_cross_job_is_in_exactly_one_shard(matrix) -> None:
    jobs = plan_jobs(matrix)
    shards = plan_shards(matrix, jobs)
    placed = [job_id for shard in shards for job_id in shard.job_ids]
    assert sorted(placed) == sorted(j.id for j in jobs if j.runner in ("container", "cross"))
    assert len({s.id for s in shards}) == len(shards)


def test_a_shard_holds_at_most_one_large_image_and_fits_the_runners_disk(matrix) -> None:
    jobs = {j.id: j for j in plan_jobs(matrix)}
    for shard in plan_shards(matrix, list(jobs.values())):
        large = {jobs[i].image for i in shard.job_ids if image_size(matrix, jobs[i]) >= matrix.ci.large_image_gb}
        assert len(large) <= 1, shard
        ci = matrix.ci
        needed = shard.image_gb * (1 + ci.compressed_layers_share) + ci.build_headroom_gb
        assert needed <= shard.disk_gb_needed < needed + 1 and shard.row()["disk-gb"] == shard.disk_gb_needed
        assert shard.disk_gb_needed <= max(ci.engine_disk_gb, ci.disk_after_cleanup_gb)
        assert shard.free_disk == (needed > ci.disk_gb)


def test_rocm_shards_need_the_engine_on_the_larger_disk(matrix) -> None:
    """A ROCm image (28-32 GB unpacked) and its compressed layers do not fit / after cleanup: the
    make-room step must put the engine's state on /mnt, and the data says that disk holds it."""
    ci = matrix.ci
    rocm = [s for s in plan_shards(matrix, plan_jobs(matrix)) if s.id.startswith("rocm")]
    assert rocm and all(s.free_disk for s in rocm)
    assert max(s.disk_gb_needed for s in rocm) > ci.disk_after_cleanup_gb, "the compressed layers count"
    assert all(s.disk_gb_needed <= ci.engine_disk_gb for s in rocm)


def test_arm64_jobs_run_on_arm64_runners_and_cross_jobs_share_one_shard(matrix) -> None:
    shards = plan_shards(matrix, plan_jobs(matrix))
    for shard in shards:
        assert shard.runs_on == matrix.ci.linux_runners[shard.dagger_platform]
    arm = [s for s in shards if s.dagger_platform == "linux/arm64"]
    assert arm and all(s.runs_on == matrix.ci.linux_runners["linux/arm64"] for s in arm)
    arm_jobs = {j.id for j in plan_jobs(matrix) if j.dagger_platform == "linux/arm64" and j.runner == "container"}
    assert arm_jobs and {s.id for s in arm} == arm_jobs, "one shard per large-image aarch64 job"
    [cross] = [s for s in shards if s.id == "cpu-cross"]
    assert len(cross.job_ids) == 5 and cross.call == f"build-cpu --jobs={cross.jobs_at_once}" and not cross.free_disk


def test_each_shard_call_plans_exactly_its_jobs(matrix) -> None:
    """The call is a build-<family> function with the selection that gives the shard's jobs: parse it
    back into a selection and plan it."""
    for shard in plan_shards(matrix, plan_jobs(matrix)):
        words = shlex.split(shard.call)
        family = words[0].removeprefix("build-")
        options = dict(w[2:].split("=", 1) for w in words[1:])
        version = next((v for k, v in options.items() if k.endswith("-version")), None)
        selection = Selection(backends=(family,), versions=(version,) if version else (), platforms=tuple(options.get("platform", "").split(",")) if "platform" in options else ())
        planned = [j.id for j in plan_jobs(matrix, selection) if j.runner in ("container", "cross")]
        assert planned == shard.job_ids, shard.call
        assert int(options["jobs"]) == shard.jobs_at_once


def test_native_rows_install_then_build_each_native_runner_job(matrix) -> None:
    jobs = plan_jobs(matrix)
    rows = plan_native_rows(matrix, jobs)
    assert [r.id for r in rows] == [j.id for j in jobs if j.runner == "native-runner"]
    row = next(r for r in rows if r.id == "cuda134-windows-arm64")
    assert row.runs_on == "windows-11-arm"
    assert row.install == "bnb-ci install-toolkit --backend cuda --version 13.4.1 --platform windows-arm64"
    assert row.build == "bnb-ci build-cuda --platform windows-arm64 --cuda-version 13.4.1 --out libs"
    rocm = next(r for r in rows if r.id == "rocm714-windows-x64")
    assert rocm.build == "bnb-ci build-rocm --platform windows-x64 --rocm-version 7.14.0 --out libs"


def test_jobs_at_once_fits_the_cpus_and_the_memory() -> None:
    assert jobs_at_once(5, cpus=4, memory_gb=16, compile_memory_gb=1) == 2
    assert jobs_at_once(5, cpus=16, memory_gb=16, compile_memory_gb=3) == 2
    assert jobs_at_once(1, cpus=64, memory_gb=256, compile_memory_gb=1) == 1
    assert jobs_at_once(8, cpus=2, memory_gb=2, compile_memory_gb=4) == 1


def test_an_image_that_no_runner_can_hold_is_refused(tmp_path: Path) -> None:
    text = default_matrix_path().read_text(encoding="utf-8").replace("engine_disk_gb = 65", "engine_disk_gb = 40")
    (tmp_path / "matrix.toml").write_text(text, encoding="utf-8")
    small = load_matrix(tmp_path / "matrix.toml")
    with pytest.raises(SelectionError, match=r"rocm64-linux-x86_64 need about 46\.6 GB of disk \(image 28 GB \+ its compressed layers 12\.6 GB \+ 6 GB headroom\), "
                                             r"more than a hosted runner has once its make-room step ran \(45 GB\); use a larger runner"):
        plan_shards(small, plan_jobs(small, Selection(backends=("rocm",), versions=("6.4",))))


def test_plan_format_ci_matrix_prints_both_matrices(matrix) -> None:
    import io

    out = io.StringIO()
    assert cli.main_inner(["plan", "--format", "ci-matrix"], env={}, stdout=out) == 0
    assert json.loads(out.getvalue()) == ci_matrix(matrix, plan_jobs(matrix))
