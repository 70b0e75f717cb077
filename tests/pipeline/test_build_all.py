"""`bnb-ci build-all` end to end on copies of this repository: outputs, reproducibility, failures.

The real builds (the CPU library and the CUDA 13.0 library for one arch) run once per module, from two
copies of the sources in different folders; every test reads those runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from host_helpers import INJECTED_ERROR, break_cuda_sources, copy_repo, run_bnb_ci
from test_out_folder import earlier_output

from bitsandbytes_ci.host import cli, outputs
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs

# One GPU arch keeps the CUDA compile short; cpu+cuda because a CUDA arch list cannot apply to ROCm jobs.
# Linux x86_64 only: the CPU jobs of the other platforms (zig cross builds) have tests/cross.
SELECTION = ["--backend", "cpu", "--backend", "cuda", "--archs", "75", "--platform", "linux-x86_64"]
BUILT = {"cpu-linux-x86_64", "cuda130-linux-x86_64"}


class Run:
    def __init__(self, repo: Path, out: Path, result: subprocess.CompletedProcess[str]) -> None:
        self.repo, self.out, self.result = repo, out, result

    @property
    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())

    @property
    def wheels(self) -> list[Path]:
        return sorted((self.out / "wheels").glob("*.whl"))


def build_all(repo: Path, out: Path, *extra: str) -> Run:
    return Run(repo, out, run_bnb_ci(["build-all", "--out", str(out), *SELECTION, *extra], cwd=repo))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    root = tmp_path_factory.mktemp("build-all")
    first = build_all(copy_repo(root / "a" / "bitsandbytes"), root / "out-a")
    second = build_all(copy_repo(root / "elsewhere" / "deeper" / "src"), root / "out-b")
    return first, second


@pytest.fixture(scope="module")
def first(runs: tuple[Run, Run]) -> Run:
    run = runs[0]
    assert run.result.returncode == 0, run.result.stdout[-6000:] + run.result.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("build-all-broken")
    repo = copy_repo(root / "repo")
    break_cuda_sources(repo)
    out = root / "out"
    earlier_output(out, root)  # a complete output of an earlier run: a failed run must keep it
    (out / ".manifest.json.abc123.tmp").write_text('{"half": ')  # left by a killed run
    return build_all(repo, out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outputs_are_wheels_audit_and_manifest(first: Run) -> None:
    assert sorted(p.name for p in first.out.iterdir()) == ["audit.md", "libs", "manifest.json", "summary.md", "tries.md", "wheels"]
    libs = sorted(p.relative_to(first.out).as_posix() for p in (first.out / "libs").rglob("*") if p.is_file())
    assert libs == [f"libs/linux/x86_64/{name}{suffix}" for name in ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so")
                    for suffix in ("", ".build-info.json")]  # fmt: skip
    [wheel] = first.wheels
    assert wheel.name.startswith("bitsandbytes-") and "-py3-none-manylinux_" in wheel.name and wheel.name.endswith("_x86_64.whl")
    with zipfile.ZipFile(wheel) as z:
        libraries = sorted(Path(n).name for n in z.namelist() if Path(n).name.startswith("libbitsandbytes_"))
    assert libraries == ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"]
    assert "Result: **PASS**" in (first.out / "audit.md").read_text()
    # the wheel was installed into a clean virtualenv and the tree's try-script ran the round trips
    tries = (first.out / "tries.md").read_text()
    assert "Result: **PASS**" in tries and f"| {wheel.name} | linux-x86_64 | plain | venv | passed |" in tries
    assert f"| {wheel.name} | linux-x86_64 | floor x86-64-v2 | qemu-x86_64-static -cpu Nehalem-v1 | passed |" in tries, "also on the oldest CPU"


def test_manifest_describes_every_artifact_and_job(first: Run) -> None:
    manifest = first.manifest
    artifacts = {a["path"]: a for a in manifest["artifacts"]}
    assert sorted(artifacts) == [
        "audit.md", "libs/linux/x86_64/libbitsandbytes_cpu.so", "libs/linux/x86_64/libbitsandbytes_cuda130.so", "tries.md",
        f"wheels/{first.wheels[0].name}",
    ]  # fmt: skip
    for path, entry in artifacts.items():
        assert entry["sha256"] == sha256(first.out / path) and entry["size"] == (first.out / path).stat().st_size
    jobs = {j["id"]: j for j in manifest["jobs"]}
    planned = plan_jobs(load_matrix(), Selection(backends=("cpu", "cuda"), archs="75", platforms=("linux-x86_64",)))
    assert {j.id for j in planned} | {"wheel-linux-x86_64", "try", "audit"} <= set(jobs)
    assert jobs["try"]["status"] == "built" and jobs["try"]["artifact"] == "tries.md"
    for job_id in BUILT:
        entry = jobs[job_id]
        assert entry["status"] == "built"
        assert entry["build_info"]["library_sha256"] == entry["sha256"]
        assert entry["inputs_digest"].startswith("sha256:")
    assert jobs["cuda130-linux-x86_64"]["build_info"]["archs"] == ["75"]
    others = [j for j in planned if j.id not in BUILT]
    assert others and all(jobs[j.id]["status"] == "skipped" and jobs[j.id]["reason"] for j in others)
    assert jobs["cuda128-linux-x86_64"]["reason"].startswith("no nvcc 12.8 on this host (found: 13.0 at ")
    assert "-DBNB_ZIG_TARGET=x86_64-linux-gnu.2.17" in jobs["cpu-linux-x86_64"]["build_info"]["flags"], "built with the zig toolchain"
    assert manifest["summary"]["failed"] == 0


def test_summary_reports_built_and_skipped_with_reasons(first: Run) -> None:
    stdout = first.result.stdout
    built, skipped = stdout.split("built:")[1].split("skipped:")
    assert "cpu-linux-x86_64" in built and "cuda130-linux-x86_64" in built and "wheel-linux-x86_64" in built
    assert "cuda128-linux-x86_64" in skipped and "no nvcc 12.8 on this host" in skipped
    assert "failed:" not in stdout


def test_two_builds_in_different_directories_give_identical_wheels(runs: tuple[Run, Run]) -> None:
    a, b = runs
    assert b.result.returncode == 0, b.result.stdout[-6000:]
    assert [w.name for w in a.wheels] == [w.name for w in b.wheels]
    assert [sha256(w) for w in a.wheels] == [sha256(w) for w in b.wheels]
    assert a.manifest["jobs"] == b.manifest["jobs"]


def test_wheel_installs_into_a_fresh_venv_and_round_trips(first: Run, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(first.wheels[0]), "numpy"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    script = (
        "import numpy as np, bitsandbytes.functional as F\n"
        "a = np.linspace(-3, 3, 4096 * 3, dtype=np.float32)\n"
        "codes, absmax = F.quantize_blockwise(a, blocksize=4096)\n"
        "b = F.dequantize_blockwise(codes, absmax, blocksize=4096)\n"
        "err = float(np.abs(a - b).max())\n"
        "assert codes.dtype == np.uint8 and b.shape == a.shape and err < 0.05, err\n"
        "print('ok', err)\n"
    )
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stdout + done.stderr


def test_out_pointing_at_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("keep me")
    with pytest.raises(outputs.OutputError, match=rf"--out {target} is a file, not a directory"):
        cli.main_inner(["build-all", "--out", str(target), "--platform", "macos-arm64"], env={}, stdout=io.StringIO())
    assert cli.main(["build-all", "--out", str(target), "--platform", "macos-arm64"]) == outputs.OutputError.exit_code
    assert "is a file, not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_failed_run_keeps_the_previous_output_and_reports_the_failure(failed_run: Run) -> None:
    """As the Dagger function exports nothing on failure, a failed build-all (without --keep-going)
    leaves the previous output as it was; the summary names the failed job, its log tail and log."""
    assert failed_run.result.returncode == 1, failed_run.result.stdout[-4000:]
    files = sorted(p.relative_to(failed_run.out).as_posix() for p in failed_run.out.rglob("*") if p.is_file())
    assert files == [".manifest.json.abc123.tmp", "audit.md", "libs/linux/x86_64/libbitsandbytes_cpu.so",
                     "libs/linux/x86_64/libbitsandbytes_cpu.so.build-info.json", "manifest.json",
                     "wheels/bitsandbytes-0.0.1-py3-none-manylinux_2_28_x86_64.whl"]  # fmt: skip
    assert (failed_run.out / "libs/linux/x86_64/libbitsandbytes_cpu.so").read_bytes() == b"\x7fELF an earlier library"
    assert f"outputs: not written (a job failed); {failed_run.out} keeps the previous output" in failed_run.result.stdout
    failed = failed_run.result.stdout.split("failed:")[1]
    assert "cuda130-linux-x86_64" in failed and INJECTED_ERROR in failed and "log.txt" in failed


def test_atomic_copy_leaves_the_old_file_when_it_fails(tmp_path: Path) -> None:
    dest = tmp_path / "audit.md"
    dest.write_text("complete old report")
    with pytest.raises(FileNotFoundError):
        outputs.copy_atomic(tmp_path / "missing.md", dest)
    assert dest.read_text() == "complete old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.md"]


def test_build_all_from_libs_packs_without_building(first: Run, tmp_path: Path) -> None:
    """The final CI job on the host: libraries built earlier (here: the first run's) packed, tried and
    audited; nothing is built, and the wheel holds those very libraries."""
    out = tmp_path / "out"
    run = run_bnb_ci(["build-all", "--out", str(out), "--libs", str(first.out / "libs"), "--backend", "cpu", "--platform", "linux-x86_64"], cwd=first.repo)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "[cpu-linux-x86_64] start" not in run.stdout and f"taken from {first.out / 'libs'}" in run.stdout
    [wheel] = sorted((out / "wheels").glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        assert z.read("bitsandbytes/libbitsandbytes_cpu.so") == (first.out / "libs/linux/x86_64/libbitsandbytes_cpu.so").read_bytes()
    assert "Result: **PASS**" in (out / "tries.md").read_text() and "Result: **PASS**" in (out / "audit.md").read_text()


def test_build_all_from_libs_fails_for_every_missing_library(first: Run, tmp_path: Path) -> None:
    """Every planned library must be in --libs: the first run built CUDA 13.0 only, so the other CUDA
    versions of linux-x86_64 are failures, and no wheel is packed without them."""
    libs = first.out / "libs"
    run = run_bnb_ci(["build-all", "--out", str(tmp_path / "out"), "--libs", str(libs), *SELECTION], cwd=first.repo)
    assert run.returncode == 1
    built, skipped, failed = (run.stdout.split(f"\n{status}:\n")[1] for status in ("built", "skipped", "failed"))
    assert "cuda130-linux-x86_64" in built.split("skipped:")[0]
    assert re.search(rf"cuda128-linux-x86_64 +not run: not in {re.escape(str(libs))}", failed)
    assert "wheel-linux-x86_64" in skipped.split("failed:")[0], "no wheel without all its libraries"
    assert not (tmp_path / "out").exists(), "a failed run writes no output (--keep-going would)"


def test_test_wheels_verb(first: Run, tmp_path: Path) -> None:
    out = tmp_path / "tries"
    run = run_bnb_ci(["test-wheels", "--wheels", str(first.out / "wheels"), "--out", str(out), "--source", str(first.repo)], cwd=first.repo)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = (out / "tries.md").read_text()
    assert f"| {first.wheels[0].name} | linux-x86_64 | plain | venv | passed |" in report
    empty = tmp_path / "none"
    empty.mkdir()
    refused = run_bnb_ci(["test-wheels", "--wheels", str(empty), "--out", str(out)], cwd=first.repo)
    assert refused.returncode == 2 and "holds no wheel" in refused.stderr
