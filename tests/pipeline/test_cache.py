"""Input digests and the host executor's artifact cache.

- digests (`Job.input_digest`, `WheelJob.input_digest`, `bnb_build.inputs.job_digest`) cover exactly
  what decides a job's output: editing a .cu file leaves the CPU job's digest alone, editing the
  Python package changes only the wheel jobs', the step programs and SOURCE_DATE_EPOCH count;
- the cache (`artifact_cache`): complete entries are reused, partial or corrupted ones discarded;
- end to end: a second `bnb-ci build-cuda` does not run the step, a corrupted entry is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from host_helpers import copy_repo, run_bnb_ci

from bitsandbytes_ci.host import artifact_cache
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Job, Selection, WheelJob, plan_jobs, plan_wheels
from bitsandbytes_ci.core.tree import read_tree
from bnb_build import inputs

EPOCH = inputs.DEFAULT_SOURCE_DATE_EPOCH


@pytest.fixture(scope="module")
def planned() -> tuple[list[Job], list[WheelJob]]:
    matrix = load_matrix()
    tree = read_tree(Path(__file__).resolve().parents[2])  # this tree's source subsets, from its pyproject
    jobs = plan_jobs(matrix, Selection(platforms=("linux-x86_64", "linux-aarch64")), tree)
    return jobs, plan_wheels(matrix, jobs, tree)


def digests(repo: Path, jobs: list[Job], wheels: list[WheelJob], epoch: str = EPOCH) -> dict[str, str]:
    """The digests with the step programs of the copy `repo` (what its own bnb-ci would run)."""
    steps = repo / "pipeline" / "src" / "bnb_build"
    found = {job.id: job.input_digest(repo, steps_dir=steps) for job in jobs}
    for wheel in wheels:
        libraries = {i: found[i] for i in wheel.build_job_ids}
        found[wheel.id] = wheel.input_digest(repo, libraries=libraries, source_date_epoch=epoch, steps_dir=steps)
    return found


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {key for key in before if before[key] != after[key]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")


def test_digests_are_the_same_for_copies_in_other_folders(tmp_path: Path, planned: tuple[list[Job], list[WheelJob]]) -> None:
    jobs, wheels = planned
    a = copy_repo(tmp_path / "a")
    b = Path(shutil.copytree(a, tmp_path / "elsewhere" / "deeper" / "b"))  # the same snapshot of the sources
    (b / "unrelated.txt").write_text("not an input of any job\n")
    os.chmod(b / "VERSION", 0o600)  # the mode bits besides the executable bit are no input either
    assert digests(a, jobs, wheels) == digests(b, jobs, wheels)
    assert all(d.startswith("sha256:") and len(d) == 71 for d in digests(a, jobs, wheels).values())


def test_editing_a_cu_file_leaves_the_cpu_job_alone(repo: Path, planned: tuple[list[Job], list[WheelJob]]) -> None:
    jobs, wheels = planned
    before = digests(repo, jobs, wheels)
    cu = sorted((repo / "csrc" / "cuda").glob("*.cu"))[0]
    cu.write_text(cu.read_text() + "\n// an edit\n")
    after = digests(repo, jobs, wheels)
    gpu = {j.id for j in jobs if j.backend in ("cuda", "hip")}  # HIP compiles the same .cu files
    assert changed(before, after) == gpu | {w.id for w in wheels if set(w.build_job_ids) & gpu}
    assert all(before[j.id] == after[j.id] for j in jobs if j.backend in ("cpu", "xpu"))


def test_editing_the_python_package_changes_only_the_wheel_jobs(repo: Path, planned: tuple[list[Job], list[WheelJob]]) -> None:
    jobs, wheels = planned
    before = digests(repo, jobs, wheels)
    module = repo / "bitsandbytes" / "functional.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    assert changed(before, digests(repo, jobs, wheels)) == {w.id for w in wheels}


def test_step_programs_and_source_date_epoch_count(repo: Path, planned: tuple[list[Job], list[WheelJob]]) -> None:
    jobs, wheels = planned
    before = digests(repo, jobs, wheels)
    assert changed(before, digests(repo, jobs, wheels, epoch="1700000000")) == {w.id for w in wheels}
    step = repo / "pipeline" / "src" / "bnb_build" / "wheel.py"
    step.write_text(step.read_text() + "\n# an edit\n")
    assert changed(before, digests(repo, jobs, wheels)) == set(before), "the step programs decide every output"
    pycache = repo / "pipeline" / "src" / "bnb_build" / "__pycache__"
    pycache.mkdir(exist_ok=True)
    (pycache / "x.cpython-311.pyc").write_bytes(b"bytecode is no input")
    step.write_text(step.read_text().removesuffix("\n# an edit\n"))
    assert digests(repo, jobs, wheels) == before


def test_inputs_name_toolkit_image_and_flags(planned: tuple[list[Job], list[WheelJob]]) -> None:
    jobs, _ = planned
    job = next(j for j in jobs if j.id == "cuda130-linux-x86_64")
    spec = job.inputs()
    assert spec["argv"] == job.native_argv() and spec["toolkit"] == job.version and spec["image"] == job.image
    assert spec["sources"] == job.sources and "csrc/cpu/**" not in spec["sources"]
    assert job.inputs(toolkit="nvcc 13.0.88 at /usr/local/cuda") != spec
    assert "source_date_epoch" not in spec, "a library does not depend on SOURCE_DATE_EPOCH"


def test_plan_json_shows_the_digests(repo: Path, planned: tuple[list[Job], list[WheelJob]]) -> None:
    jobs, wheels = planned
    done = run_bnb_ci(["plan", "--format", "json", "--source", str(repo), "--platform", "linux-x86_64", "--platform", "linux-aarch64"], cwd=repo)
    assert done.returncode == 0, done.stderr
    shown = {entry["id"]: entry for entry in json.loads(done.stdout)}
    assert {k: v["input_digest"] for k, v in shown.items()} == digests(repo, jobs, wheels)
    assert shown["cpu-linux-x86_64"]["inputs"]["sources"] == next(j for j in jobs if j.id == "cpu-linux-x86_64").sources
    assert shown["wheel-linux-x86_64"]["inputs"]["source_date_epoch"] == EPOCH
    plain = run_bnb_ci(["plan", "--format", "json", "--platform", "linux-x86_64"], cwd=repo)
    assert "input_digest" not in plain.stdout, "without --source the plan reads no file"


def test_plan_json_digests_of_another_tree_count_the_installed_step_programs(tmp_path: Path) -> None:
    """A tree without our pipeline/ folder (upstream's shape): the digests `plan --format json`
    shows are the ones the host executor keys its cache with, which cover the step programs this
    bnb-ci runs. Editing one of those programs' copies inside the tree changes nothing."""
    from bnb_build_helpers import copy_upstream_tree

    from bitsandbytes_ci.core.plan import STEP_PROGRAMS

    tree = copy_upstream_tree(tmp_path / "upstream")
    done = run_bnb_ci(["plan", "--format", "json", "--source", str(tree), "--platform", "linux-x86_64", "--backend", "cpu"], cwd=tree)
    assert done.returncode == 0, done.stderr
    shown = {entry["id"]: entry["input_digest"] for entry in json.loads(done.stdout)}
    facts = read_tree(tree)
    [job] = plan_jobs(load_matrix(), Selection(platforms=("linux-x86_64",), backends=("cpu",)), facts)
    assert shown[job.id] == job.input_digest(tree, steps_dir=STEP_PROGRAMS)
    elsewhere = tmp_path / "other-steps"
    shutil.copytree(STEP_PROGRAMS, elsewhere, ignore=shutil.ignore_patterns("__pycache__"))
    (elsewhere / "native.py").write_text((elsewhere / "native.py").read_text() + "\n# edited\n")
    assert job.input_digest(tree, steps_dir=elsewhere) != shown[job.id], "the step programs are part of the digest"


# ---- the cache itself -------------------------------------------------------------------------------


def key(n: int) -> str:
    return "sha256:" + f"{n:064x}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    (root / "linux" / "x86_64").mkdir(parents=True)
    (root / "linux" / "x86_64" / "libbitsandbytes_cpu.so").write_bytes(b"\x7fELF library")
    (root / "linux" / "x86_64" / "libbitsandbytes_cpu.so.build-info.json").write_text("{}\n")
    return root


def test_a_stored_entry_is_found_and_verified(tmp_path: Path, tree: Path) -> None:
    cache = tmp_path / "cache"
    assert artifact_cache.lookup(cache, key(1)) == (None, None)
    entry = artifact_cache.store(cache, key(1), artifact_cache.tree_files(tree))
    assert entry == cache / "artifacts" / f"{1:064x}"
    assert artifact_cache.lookup(cache, key(1)) == (entry, None)
    marker = json.loads((entry / artifact_cache.MARKER).read_text())
    assert marker["digest"] == key(1) and sorted(marker["files"]) == ["linux/x86_64/libbitsandbytes_cpu.so", "linux/x86_64/libbitsandbytes_cpu.so.build-info.json"]
    assert not [p for p in (cache / "artifacts").iterdir() if p.name.startswith(".tmp-")], "no temporary entry is left"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda e: (e / "linux/x86_64/libbitsandbytes_cpu.so").write_bytes(b"\x7fELF librarz"), "does not match its sha256"),
        (lambda e: (e / "linux/x86_64/libbitsandbytes_cpu.so").unlink(), "files differ from the marker"),
        (lambda e: (e / "linux/x86_64/extra.so").write_bytes(b""), "files differ from the marker"),
        (lambda e: (e / artifact_cache.MARKER).unlink(), "incomplete (no completion marker)"),
        (lambda e: (e / artifact_cache.MARKER).write_text('{"digest": '), "unreadable completion marker"),
    ],
    ids=["changed", "missing", "extra", "partial", "torn-marker"],
)
def test_a_bad_entry_is_discarded(tmp_path: Path, tree: Path, damage, problem: str) -> None:
    cache = tmp_path / "cache"
    entry = artifact_cache.store(cache, key(2), artifact_cache.tree_files(tree))
    damage(entry)
    found, why = artifact_cache.lookup(cache, key(2))
    assert found is None and why is not None and problem in why
    assert not entry.exists(), "the bad entry is removed, so the job's new output can take its place"
    assert artifact_cache.store(cache, key(2), artifact_cache.tree_files(tree)) == entry
    assert artifact_cache.lookup(cache, key(2)) == (entry, None)


def test_keys_must_be_sha256_digests(tmp_path: Path) -> None:
    for bad in ("sha256:xyz", "md5:" + "0" * 64, "../" + "0" * 64):
        with pytest.raises(ValueError, match="not an input digest"):
            artifact_cache.entry_path(tmp_path, bad)


# ---- end to end: bnb-ci with its cache directory ---------------------------------------------------

CUDA = ["build-cuda", "--cuda-version", "13.0", "--platform", "linux-x86_64", "--archs", "75"]


def test_a_cache_hit_skips_the_step_and_a_corrupted_entry_is_rebuilt(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = [*CUDA, "--out", str(out), "--cache-dir", str(cache), "--source", str(repo)]
    first = run_bnb_ci(args, cwd=repo)
    if "no nvcc 13.0 on this host" in first.stdout:
        pytest.skip("this host has no nvcc 13.0")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "[cuda130-linux-x86_64] built in" in first.stdout
    log = cache / "jobs" / "cuda130-linux-x86_64" / "log.txt"
    library = out / "linux" / "x86_64" / "libbitsandbytes_cuda130.so"
    built = library.read_bytes()
    stamp = log.stat().st_mtime_ns

    second = run_bnb_ci(args, cwd=repo)
    assert second.returncode == 0, second.stdout[-4000:]
    assert "[cuda130-linux-x86_64] cached (sha256:" in second.stdout and "[cuda130-linux-x86_64] start" not in second.stdout
    assert "summary: 1 built (1 cached)" in second.stdout
    assert log.stat().st_mtime_ns == stamp, "the step did not run: its work directory and log are untouched"
    assert library.read_bytes() == built

    [entry] = [p for p in (cache / "artifacts").iterdir() if (p / "linux/x86_64/libbitsandbytes_cuda130.so").exists()]
    damaged = entry / "linux/x86_64/libbitsandbytes_cuda130.so"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])  # one flipped byte
    third = run_bnb_ci(args, cwd=repo)
    assert third.returncode == 0, third.stdout[-4000:]
    assert "cache entry sha256:" in third.stdout and "discarded: linux/x86_64/libbitsandbytes_cuda130.so does not match its sha256" in third.stdout
    assert "[cuda130-linux-x86_64] built in" in third.stdout
    assert log.stat().st_mtime_ns != stamp
    assert library.read_bytes() == built, "rebuilt to the same bytes"
    assert artifact_cache.lookup(cache, f"sha256:{entry.name}") == (entry, None)

    # editing the CUDA sources misses the cache; the CPU-only and Python-only sources were no input
    cu = sorted((repo / "csrc" / "cuda").glob("*.cu"))[0]
    cu.write_text(cu.read_text() + "\n// an edit\n")
    fourth = run_bnb_ci(args, cwd=repo)
    assert fourth.returncode == 0 and "[cuda130-linux-x86_64] built in" in fourth.stdout
    assert len([p for p in (cache / "artifacts").iterdir() if not p.name.startswith(".")]) == 2
