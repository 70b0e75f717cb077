"""A failing job on a real host run: the others' outputs stay, the run says what failed and where its
log is, --keep-going still packs the wheel of the libraries that built, and that wheel set is never
released (bnb_build.release refuses a folder marked INCOMPLETE.md).

One `bnb-ci build-all --keep-going` runs on a copy of this repository whose CUDA sources carry an
injected compile error (the CPU job and the CUDA 13.0 job for one arch); every test reads that run.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from host_helpers import BNB_CI, INJECTED_ERROR, break_cuda_sources, copy_repo, host_env

from bitsandbytes_ci.host import cli
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, expectations, plan_jobs
from bitsandbytes_ci.host.release_verbs import StepFailed
from bnb_build.release import INCOMPLETE_MARKER

SELECTION = ["--backend", "cpu", "--backend", "cuda", "--archs", "75", "--platform", "linux-x86_64"]
STEPS_SRC = Path(__file__).resolve().parents[2] / "pipeline" / "src"


class Run:
    def __init__(self, repo: Path, out: Path, step_summary: Path, result: subprocess.CompletedProcess[str]) -> None:
        self.repo, self.out, self.step_summary, self.result = repo, out, step_summary, result


@pytest.fixture(scope="module")
def kept_going(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("keep-going")
    repo = copy_repo(root / "repo")
    break_cuda_sources(repo)
    out = root / "out"
    step_summary = root / "step-summary.md"
    step_summary.write_text("earlier step's summary\n", encoding="utf-8")
    env = dict(host_env(), GITHUB_STEP_SUMMARY=str(step_summary))
    result = subprocess.run(
        [str(BNB_CI), "build-all", "--out", str(out), "--keep-going", *SELECTION],
        cwd=repo, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    return Run(repo, out, step_summary, result)


def test_the_run_fails_and_lists_the_failed_job_with_its_log(kept_going: Run) -> None:
    result = kept_going.result
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    failed = result.stdout.split("\nfailed:\n")[1]
    assert failed.lstrip().startswith("cuda130-linux-x86_64")
    log = Path(failed.split("log: ")[1].split("\n")[0])
    assert log.is_file() and INJECTED_ERROR in log.read_text()
    assert INJECTED_ERROR in failed.split("summary:")[0]  # the last lines of its log
    # library, wheel, try, audit (some may come from the test session's shared cache)
    assert re.search(r"summary: 4 built( \(\d cached\))?, ", result.stdout) and ", 1 failed" in result.stdout, result.stdout[-3000:]


def test_the_other_jobs_outputs_are_intact(kept_going: Run) -> None:
    manifest = json.loads((kept_going.out / "manifest.json").read_text())
    artifacts = {a["path"]: a for a in manifest["artifacts"]}
    cpu = kept_going.out / "libs" / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    assert cpu.is_file() and artifacts["libs/linux/x86_64/libbitsandbytes_cpu.so"]["size"] == cpu.stat().st_size
    jobs = {j["id"]: j for j in manifest["jobs"]}
    assert jobs["cpu-linux-x86_64"]["status"] == "built"
    assert jobs["cuda130-linux-x86_64"]["status"] == "failed"
    assert not list(kept_going.out.rglob(".*.tmp"))


def test_keep_going_packs_the_wheel_and_marks_the_set_incomplete(kept_going: Run) -> None:
    wheels = sorted((kept_going.out / "wheels").glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].name.endswith("_x86_64.whl")
    marker = (kept_going.out / "wheels" / INCOMPLETE_MARKER).read_text()
    assert "cuda130-linux-x86_64" in marker and "--keep-going" in marker


def test_summary_md_and_the_github_step_summary(kept_going: Run) -> None:
    summary = (kept_going.out / "summary.md").read_text()
    assert "Result: **FAILED** (1 failed job(s))" in summary
    assert "| cpu-linux-x86_64 | library | built |" in summary
    assert "| cuda130-linux-x86_64 | library | FAILED |" in summary
    assert "#### cuda130-linux-x86_64" in summary and INJECTED_ERROR in summary and "- full log: `" in summary
    assert "| wheel-linux-x86_64 | wheel | built |" in summary and "KiB |" in summary
    assert "### Audit" in summary
    step = kept_going.step_summary.read_text()
    assert step == "earlier step's summary\n" + summary


def step(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYPI_TOKEN", "TWINE_PASSWORD")}
    run_env.update(env, PYTHONPATH=str(STEPS_SRC))
    return subprocess.run([sys.executable, "-m", "bnb_build", *args], cwd=cwd, env=run_env, capture_output=True, text=True, timeout=300, check=False)


def test_an_incomplete_set_is_never_released(kept_going: Run, tmp_path: Path) -> None:
    wheels = kept_going.out / "wheels"
    plat = "linux-x86_64"
    pre = step(["pre-release", "--wheels", str(wheels), "--out", str(tmp_path / "release"), "--commit", "0" * 40,
                "--repo", "o/r", "--expect-platforms", plat], tmp_path)  # fmt: skip
    assert pre.returncode == 9 and "come from a run in which jobs failed" in pre.stderr, pre.stderr
    assert not (tmp_path / "release").exists()
    matrix = load_matrix()
    (tmp_path / "expect.json").write_text(json.dumps(expectations(matrix, plan_jobs(matrix, Selection(backends=("cpu",), platforms=(plat,))))))
    pub = step(["publish", "--wheels", str(wheels), "--expect", "expect.json", "--repository-url", "http://127.0.0.1:9/"],
               tmp_path, PYPI_TOKEN="pypi-unused")  # fmt: skip
    assert pub.returncode == 9 and "come from a run in which jobs failed" in pub.stderr, pub.stderr
    # The same through bnb-ci's verb, before any upload is attempted.
    out = io.StringIO()
    with pytest.raises(StepFailed):
        cli.main_inner(["publish", "--wheels", str(wheels), "--backend", "cpu", "--platform", plat, "--repository-url", "http://127.0.0.1:9/"],
                       env=dict(host_env(), PYPI_TOKEN="pypi-unused"), stdout=out)  # fmt: skip
    assert INCOMPLETE_MARKER in out.getvalue() and "Nothing was written or uploaded" in out.getvalue()
