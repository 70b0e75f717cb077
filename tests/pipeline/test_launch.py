"""The repository's two commands: `./bnb build` and `./bnb test` (the `bnb` script and
`bitsandbytes_ci.host.launch`).

- the bootstrap (the real `bnb` script) creates .venv from the pinned requirements on first use,
  reuses it afterwards and sets it up again when a requirements file changes;
- `./bnb build` without a reachable Dagger engine runs the host executor for real, says so and why,
  and leaves dist/ with the wheels, audit.md, manifest.json and summary.md;
- with a Dagger CLI whose engine answers it runs `dagger call build-all ... export --path dist`;
- `.ci/run` ends in `./bnb test`, the README's second command.

No Dagger CLI or engine runs here: where one is needed, a stand-in `dagger` script (named so below)
answers the probe the way the real CLI does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from host_helpers import REPO_ROOT, copy_repo, host_env

from bitsandbytes_ci.host import launch


def without_dagger(env: dict[str, str]) -> dict[str, str]:
    """`env` with every PATH folder that holds a `dagger` left out."""
    folders = [f for f in env.get("PATH", "").split(os.pathsep) if f and not (Path(f) / "dagger").exists()]
    return {**env, "PATH": os.pathsep.join(folders)}


def stand_in_dagger(folder: Path, *, engine_answers: bool, job_fails: bool = False) -> Path:
    """STAND-IN for the Dagger CLI (none can run here): answers `core version` like the real one (an
    engine error when `engine_answers` is false), records any other call's argv in calls.json and
    leaves dist/summary.md, plus dist/failures.md when `job_fails`."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "dagger"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$2" = core ] && [ "$3" = version ]; then\n'
        + ('  echo v0.21.11; exit 0\n' if engine_answers else '  echo "Error: failed to connect to the engine: no container runtime" >&2; exit 1\n')
        + "fi\n"
        f'"{sys.executable}" -c "import json, sys; json.dump(sys.argv[1:], open(\'{folder}/calls.json\', \'w\'))" "$@"\n'
        "mkdir -p dist && echo '# summary' > dist/summary.md\n"
        + ("echo '# 1 job failed' > dist/failures.md\n" if job_fails else ""),
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


def path_with(env: dict[str, str], folder: Path) -> dict[str, str]:
    return {**env, "PATH": f"{folder}{os.pathsep}{env['PATH']}"}


# ---- the bootstrap ----------------------------------------------------------------------------------


@pytest.fixture
def bootstrap_tree(tmp_path: Path) -> Path:
    """The real `bnb` script in a tree whose requirements are empty and whose pipeline package is a
    STAND-IN launcher that prints what it got: what is under test is the bootstrap, not the launcher."""
    tree = tmp_path / "tree"
    (tree / "tests").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "bnb", tree / "bnb")
    (tree / "tests/requirements.txt").write_text("# nothing pinned in this tree\n")
    host = tree / "pipeline/src/bitsandbytes_ci/host"
    host.mkdir(parents=True)
    (tree / "pipeline/step-requirements.txt").write_text("# no step tools\n")
    (tree / "pipeline/pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "bitsandbytes-ci"\nversion = "0"\n\n[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    for package in (host.parent, host):
        (package / "__init__.py").write_text("")
    (host / "launch.py").write_text("import sys\nprint('launcher got', sys.argv[1:], 'in', sys.prefix)\n")
    return tree


def bnb(tree: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tree / "bnb"), *args], cwd=tree, env=env or host_env(), capture_output=True, text=True, timeout=600, check=False)


def test_the_bootstrap_sets_up_once_and_again_when_a_pin_changes(bootstrap_tree: Path) -> None:
    first = bnb(bootstrap_tree, "build", "--platform", "linux-x86_64")
    assert first.returncode == 0, first.stderr
    assert "setting up .venv from the pinned requirements" in first.stdout
    venv = bootstrap_tree / ".venv"
    assert f"launcher got ['build', '--platform', 'linux-x86_64'] in {venv}" in first.stdout
    assert (venv / ".bnb-requirements").is_file()

    again = bnb(bootstrap_tree, "test", "-k", "x")
    assert again.returncode == 0, again.stderr
    assert "setting up" not in again.stdout, "a second use reuses .venv"
    assert "launcher got ['test', '-k', 'x']" in again.stdout

    (bootstrap_tree / "tests/requirements.txt").write_text("# nothing pinned in this tree, edited\n")
    changed = bnb(bootstrap_tree, "build")
    assert changed.returncode == 0, changed.stderr
    assert "setting up .venv" in changed.stdout, "a changed requirements file sets .venv up again"


def test_the_bootstrap_names_the_python_it_needs(bootstrap_tree: Path, tmp_path: Path) -> None:
    """Only Pythons older than 3.11 on PATH, or a BNB_PYTHON that is none: the bootstrap stops before
    creating anything and says what it needs."""
    old = tmp_path / "old-python"
    old.mkdir()
    for name in ("python3", "python3.13", "python3.12", "python3.11"):
        (old / name).write_text('#!/bin/sh\nexec /bin/false "$@"\n')  # a Python that fails the >= 3.11 check
        (old / name).chmod(0o755)
    done = bnb(bootstrap_tree, "build", env={**host_env(), "PATH": f"{old}:/usr/bin:/bin", "BNB_PYTHON": ""})
    assert done.returncode == 2
    assert "needs Python 3.11 or newer" in done.stderr
    named = bnb(bootstrap_tree, "build", env={**host_env(), "BNB_PYTHON": str(tmp_path / "no-such-python")})
    assert named.returncode == 2
    assert f"BNB_PYTHON={tmp_path / 'no-such-python'} is not a Python 3.11 or newer" in named.stderr
    assert not (bootstrap_tree / ".venv").exists()


def test_the_bootstrap_makes_a_broken_venv_again(bootstrap_tree: Path) -> None:
    """A .venv left by an interrupted creation (a python without pip) is created afresh."""
    broken = bootstrap_tree / ".venv" / "bin"
    broken.mkdir(parents=True)
    (broken / "python").write_text("#!/bin/sh\necho 'No module named pip' >&2\nexit 1\n")
    (broken / "python").chmod(0o755)
    done = bnb(bootstrap_tree, "build")
    assert done.returncode == 0, done.stderr
    assert "launcher got ['build']" in done.stdout


# ---- ./bnb build --------------------------------------------------------------------------------------


def test_a_dagger_cli_without_an_engine_falls_back_to_the_host_executor(tmp_path: Path) -> None:
    """The host executor builds for real into dist/ and says why it, not Dagger, ran."""
    repo = copy_repo(tmp_path / "repo")
    stand_in_dagger(tmp_path / "bin", engine_answers=False)
    env = path_with(without_dagger(host_env()), tmp_path / "bin")
    done = subprocess.run(
        [sys.executable, "-m", "bitsandbytes_ci.host.launch", "build", "--platform", "linux-x86_64", "--backend", "cpu"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "bnb: building on this host with bnb-ci, because the Dagger engine is not reachable" in done.stdout
    assert "failed to connect to the engine" in done.stdout, "the engine's own words say why"
    assert not (tmp_path / "bin/calls.json").exists(), "no dagger call was made"
    dist = repo / "dist"
    wheels = sorted((dist / "wheels").glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].name.endswith("_x86_64.whl"), wheels
    assert any(n.endswith("/libbitsandbytes_cpu.so") for n in zipfile.ZipFile(wheels[0]).namelist())
    assert "Result: **PASS**" in (dist / "audit.md").read_text()
    assert "Result: **PASS**" in (dist / "tries.md").read_text()
    assert {j["id"] for j in json.loads((dist / "manifest.json").read_text())["jobs"]} >= {"cpu-linux-x86_64"}
    assert "cpu-linux-x86_64" in (dist / "summary.md").read_text()
    assert not (dist / "failures.md").exists()


def test_without_a_dagger_cli_it_says_so() -> None:
    assert launch.find_dagger(without_dagger(host_env())) == (None, "no Dagger CLI on PATH")


def test_dagger_flag_insists_on_the_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in_dagger(tmp_path / "bin", engine_answers=False)
    code = launch.main(["build", "--dagger"], env=path_with(without_dagger(host_env()), tmp_path / "bin"), repo=tmp_path)
    assert code == 2
    assert "--dagger was given, but the Dagger engine is not reachable" in capsys.readouterr().err
    assert not (tmp_path / "bin/calls.json").exists() and not (tmp_path / "dist").exists()


def test_host_flag_skips_a_reachable_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--host runs bnb-ci although the engine answers (a selection this host cannot build: bnb-ci
    says so and fails, and no dagger call is made)."""
    stand_in_dagger(tmp_path / "bin", engine_answers=True)
    repo = copy_repo(tmp_path / "repo")
    code = launch.main(["build", "--host", "--platform", "windows-x64", "--backend", "cuda"], env=path_with(host_env(), tmp_path / "bin"), repo=repo)
    out = capsys.readouterr()
    assert "bnb: building on this host with bnb-ci, because --host was given" in out.out
    assert code != 0
    assert not (tmp_path / "bin/calls.json").exists()


@pytest.mark.parametrize("job_fails", [False, True])
def test_with_an_engine_it_runs_dagger_call_build_all(tmp_path: Path, capsys: pytest.CaptureFixture[str], job_fails: bool) -> None:
    stand_in_dagger(tmp_path / "bin", engine_answers=True, job_fails=job_fails)
    code = launch.main(["build", "--platform", "linux-x86_64"], env=path_with(host_env(), tmp_path / "bin"), repo=tmp_path)
    out = capsys.readouterr()
    assert json.loads((tmp_path / "bin/calls.json").read_text()) == [
        "call", "build-all", "--platform", "linux-x86_64", "--keep-going", "export", "--path", "dist", "--wipe",
    ]  # fmt: skip
    assert f"bnb: building with Dagger (Dagger CLI {tmp_path / 'bin/dagger'} and its engine answer)" in out.out
    if job_fails:
        assert code == 1 and "jobs failed, see dist/failures.md" in out.err
    else:
        assert code == 0 and "jobs failed" not in out.err


def test_unknown_command_prints_the_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert launch.main(["deploy"], env=host_env(), repo=tmp_path) == 2
    assert "usage: ./bnb build" in capsys.readouterr().err


# ---- ./bnb test ---------------------------------------------------------------------------------------


def test_ci_runs_the_second_command() -> None:
    ci = (REPO_ROOT / ".ci/run").read_text(encoding="utf-8")
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "./bnb test"
    assert os.access(REPO_ROOT / "bnb", os.X_OK) and os.access(REPO_ROOT / ".ci/run", os.X_OK)
