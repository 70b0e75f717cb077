"""The CI workflow calls the module the way the README says: one Dagger step per job, pinned versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the workflow (tests/requirements.txt pins it)")

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "python-package.yml"
DAGGER_ACTION = "dagger/dagger-for-github@"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def dagger_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(DAGGER_ACTION)]


def engine_version() -> str:
    return json.loads((REPO / "dagger.json").read_text())["engineVersion"].removeprefix("v")


def test_triggers_and_concurrency(workflow: dict[str, Any]) -> None:
    on = workflow["on"]
    assert set(on) == {"push", "pull_request", "release", "workflow_dispatch", "workflow_call"}
    assert on["push"]["branches"] == ["**"] and on["pull_request"]["branches"] == ["main"]
    assert {"csrc/**", "pipeline/**", "CMakeLists.txt", "pyproject.toml", "tests/**"} <= set(on["pull_request"]["paths"])
    assert on["release"]["types"] == ["published"]
    assert on["push"]["tags"] == ["*"], "with a branch filter only, a pushed tag would start no run (and publish nothing)"
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.workflow" in workflow["concurrency"]["group"] and "pull_request.number" in workflow["concurrency"]["group"]
    assert workflow["permissions"] == {"contents": "read"}


def test_build_job_is_one_dagger_call_of_build_all(workflow: dict[str, Any]) -> None:
    build = workflow["jobs"]["build"]
    [step] = dagger_steps(build)
    assert str(step["with"]["version"]) == engine_version()
    call = step["with"]["call"].split()
    assert call[0] == "build-all" and call[-2:] in (["export", "--path=dist"], ["-o", "dist"])
    assert "--ccache=.ccache" in call and "--keep-going" in call
    uses = [s.get("uses", "") for s in build["steps"]]
    assert any(u.startswith("actions/cache@") for u in uses) and any(u.startswith("actions/upload-artifact@") for u in uses)
    assert uses.index(next(u for u in uses if u.startswith("actions/cache@"))) < uses.index(step["uses"])
    assert step["uses"].split("@")[1].startswith("v"), "pin the action to a version tag"
    runs = "\n".join(s.get("run", "") for s in build["steps"])
    assert "mv dist/ccache .ccache" in runs and "dist/failures.md" in runs


def test_release_jobs_call_the_module_with_narrow_permissions(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    pre, publish = jobs["pre-release"], jobs["publish"]
    assert pre["permissions"] == {"contents": "write"} and publish["permissions"] == {"id-token": "write"}
    assert publish["environment"] == "release"
    assert "github.repository ==" in pre["if"] and "github.repository ==" in publish["if"]
    assert "refs/heads/main" in pre["if"] and "refs/tags/" in publish["if"]
    for job, verb in ((pre, "pre-release"), (publish, "publish")):
        [step] = dagger_steps(job)
        assert str(step["with"]["version"]) == engine_version()
        call = step["with"]["call"]
        assert call.split()[0] == verb
        assert "${{ secrets" not in call, "secrets travel as env:// references, never on the command line"
    assert "--token=env://GITHUB_TOKEN" in dagger_steps(pre)[0]["with"]["call"]
    assert "--oidc-request-token=env://ACTIONS_ID_TOKEN_REQUEST_TOKEN" in dagger_steps(publish)[0]["with"]["call"]
    for name, job in jobs.items():
        if name != "pre-release":
            assert job.get("permissions", {}).get("contents") != "write", name


UPSTREAM = "github.repository == 'bitsandbytes-foundation/bitsandbytes'"


def test_release_jobs_are_one_dagger_call_on_the_build_artifact(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    artifact = next(s for s in jobs["build"]["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))["with"]["name"]
    pre, publish = jobs["pre-release"], jobs["publish"]
    assert "github.event_name == 'push'" in pre["if"] and "github.ref == 'refs/heads/main'" in pre["if"] and UPSTREAM in pre["if"]
    assert "github.event_name == 'push'" in publish["if"] and "startsWith(github.ref, 'refs/tags/')" in publish["if"] and UPSTREAM in publish["if"]
    for job in (pre, publish):
        assert job["needs"] == "build"
        uses = [str(s.get("uses", "")) for s in job["steps"]]
        [download] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact@")]
        assert download["with"] == {"name": artifact, "path": "dist"}
        [step] = dagger_steps(job)
        assert uses.index(download["uses"]) < uses.index(step["uses"])
        assert not [s for s in job["steps"] if "run" in s], "the module does the work: no shell steps"
        assert "--wheels=dist/wheels" in step["with"]["call"].split()
        assert step["uses"] == dagger_steps(jobs["build"])[0]["uses"]
    pre_call = dagger_steps(pre)[0]["with"]["call"].split()
    assert "--repository=${{" in " ".join(pre_call) and "--commit=${{ github.sha }}" in " ".join(pre_call)
    assert dagger_steps(pre)[0]["env"] == {"GITHUB_TOKEN": "${{ secrets.GITHUB_TOKEN }}"}
    publish_step = dagger_steps(publish)[0]
    call = publish_step["with"]["call"].split()
    assert "--oidc-request-url=env://ACTIONS_ID_TOKEN_REQUEST_URL" in call and "--token" not in " ".join(call)
    assert "env" not in publish_step, "the runner sets the OIDC request variables itself (id-token: write)"
    assert "--skip-existing" not in call


def test_windows_gpu_libraries_build_on_windows_runners_and_pack_through_build_wheels(workflow: dict[str, Any]) -> None:
    from bitsandbytes_ci.matrix import load_matrix
    from bitsandbytes_ci.plan import Selection, plan_jobs

    jobs = workflow["jobs"]
    native = jobs["build-windows-cuda"]
    assert native["runs-on"].startswith("windows")
    planned = [j for j in plan_jobs(load_matrix(), Selection(backends=("cuda",), platforms=("windows-x64",)))]
    assert all(j.runner == "native-runner" for j in planned)
    assert native["strategy"]["matrix"]["cuda"] == [j.version for j in planned], "one row per windows-x64 CUDA toolkit of matrix.toml"
    runs = "\n".join(s.get("run", "") for s in native["steps"])
    assert "bnb-ci build-cuda --platform windows-x64 --cuda-version ${{ matrix.cuda }} --out libs" in runs
    assert "-c pipeline/step-requirements.txt" in runs
    wheels = jobs["windows-wheels"]
    assert set(wheels["needs"]) == {"build", "build-windows-cuda"}
    [step] = dagger_steps(wheels)
    assert str(step["with"]["version"]) == engine_version()
    call = step["with"]["call"].split()
    assert call[0] == "build-wheels" and "--libs=libs" in call and "--platform=windows-x64" in call
