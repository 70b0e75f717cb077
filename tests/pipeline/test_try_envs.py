"""Kept try environments (bnb_build/try_envs.py): one per platform and dependency set, made once from
the tree's index, verified before each reuse, the wheel installed fresh into it every time.

The wheels are real (a package needing a dependency, served by pypiserver on a loopback port); the
try step runs as the executors run it (`python3 -m bnb_build try-wheels`).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bnb_build_helpers import PIPELINE_SRC, run_step
from release_helpers import PyPIServer, start_pypiserver

from bitsandbytes_ci.core.errors import PipelineError
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import try_checks
from bitsandbytes_ci.core.tree import read_tree
from bitsandbytes_ci.host import artifact_cache
from bnb_build import try_envs

TAG = "manylinux_2_17_x86_64"


def make_wheel(folder: Path, name: str, version: str, tag: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A wheel as a build backend writes it: the files, METADATA, WHEEL and a RECORD with hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    metadata = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]) + "\n"
    entries = {**files, f"{dist_info}/METADATA": metadata, f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-{tag}\n"}
    record = []
    for path, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    wheel = folder / f"{name}-{version}-py3-none-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in entries.items():
            z.writestr(path, text)
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def tried_wheel(work: Path, marker: str) -> Path:
    """The wheel under try: its package imports its dependency and says which build of it this is."""
    for old in (work / "wheels").glob("*.whl"):
        old.unlink()
    files = {"bnbtry/__init__.py": f"import bnbdep\n__version__ = '{marker}'\n"}
    return make_wheel(work / "wheels", "bnbtry", "1.0", TAG, files, requires=("bnbdep>=1", "bnbextra; extra == 'dev'"))


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[PyPIServer]:
    make_wheel(tmp_path / "packages", "bnbdep", "1.0", "any", {"bnbdep/__init__.py": "VALUE = 1\n"})
    yield from start_pypiserver(tmp_path / "packages", "unused-token")


TRY_SCRIPT = "import bnbtry, bnbdep\nprint(f'imported bnbtry {bnbtry.__version__} with bnbdep {bnbdep.VALUE}')\n"


def try_run(work: Path, url: str, envs: Path) -> subprocess.CompletedProcess:
    (work / "try.py").write_text(TRY_SCRIPT)
    return run_step(["try-wheels", "--wheels", "wheels", "--report", "tries.md", "--script", "try.py", "--index-url", url, "--env-cache", str(envs)], work)


def test_an_environment_is_made_once_verified_and_reused_with_the_wheel_installed_fresh(tmp_path: Path, index: PyPIServer) -> None:
    work, envs = tmp_path / "work", tmp_path / "envs"
    wheel = tried_wheel(work, "first")
    assert try_envs.run_time_requirements(wheel) == ["bnbdep>=1"], "what an extra asks for is no run-time dependency"
    first = try_run(work, index.simple, envs)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert ": made (no stamp (new or incomplete))" in first.stdout and "imported bnbtry first" in (work / "tries.md").read_text()
    [env] = [p for p in envs.iterdir() if p.is_dir()]
    stamp = json.loads((env / try_envs.STAMP).read_text())
    assert stamp["resolved"]["bnbdep"] == "1.0" and stamp["facts"]["pip_args"] == ["--index-url", index.simple]
    state = try_envs.environment_state(envs, wheel, try_envs.index_arguments(index.simple))
    assert state == {"facts": stamp["facts"], "resolved": stamp["resolved"]}

    # A changed environment is not reused: made again.
    python = try_envs.python_of(env)
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "bnbdep"], check=True, capture_output=True)
    second = try_run(work, index.simple, envs)
    assert second.returncode == 0 and ": made (its distributions changed since it was made)" in second.stdout, second.stdout[-3000:]

    # The index is gone: a new build of the wheel is tried in the kept environment, installed fresh.
    index.stop()
    tried_wheel(work, "second")
    third = try_run(work, index.simple, envs)
    assert third.returncode == 0, third.stdout[-3000:]
    assert ": reused" in third.stdout and "imported bnbtry second" in (work / "tries.md").read_text()
    assert "--no-deps --force-reinstall" in third.stdout


def test_a_wheel_whose_requirements_the_environment_lacks_fails_its_try(tmp_path: Path, index: PyPIServer) -> None:
    """pip check after the fresh install: the reused environment must satisfy the wheel."""
    work, envs = tmp_path / "work", tmp_path / "envs"
    tried_wheel(work, "first")
    assert try_run(work, index.simple, envs).returncode == 0
    env = next(p for p in envs.iterdir() if p.is_dir())
    stamp = json.loads((env / try_envs.STAMP).read_text())
    subprocess.run([str(try_envs.python_of(env)), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                    str(make_wheel(tmp_path / "old", "bnbdep", "0.5", "any", {"bnbdep/__init__.py": ""}))], check=True, capture_output=True)  # fmt: skip
    subprocess.run([str(try_envs.python_of(env)), "-m", "pip", "uninstall", "-y", "-q", "bnbtry"], check=True, capture_output=True)
    stamp["resolved"]["bnbdep"] = "0.5"  # as if the environment had been made so: it verifies, but cannot hold the wheel
    (env / try_envs.STAMP).write_text(json.dumps(stamp))
    index.stop()
    done = try_run(work, index.simple, envs)
    assert done.returncode == 8, done.stdout[-3000:]
    assert "pip check failed: the environment does not satisfy the wheel's requirements" in (work / "tries.md").read_text()


def test_the_try_key_covers_the_environment(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels", "bnbtry", "1.0", TAG, {"bnbtry/__init__.py": ""}, requires=("bnbdep",))
    args = try_envs.index_arguments("https://download.pytorch.org/whl/cpu")
    assert try_envs.environment_state(tmp_path / "envs", wheel, args) is None, "no environment yet"
    env = try_envs.env_dir(tmp_path / "envs", try_envs.run_time_requirements(wheel), args)
    env.mkdir(parents=True)
    stamp = {"facts": try_envs.facts(["bnbdep"], args), "resolved": {"bnbdep": "1.0"}, "tried": []}
    (env / try_envs.STAMP).write_text(json.dumps(stamp))
    made = try_envs.environment_state(tmp_path / "envs", wheel, args)
    assert made == {"facts": stamp["facts"], "resolved": {"bnbdep": "1.0"}}
    assert try_envs.environment_state(tmp_path / "envs", wheel, []) is None, "another index: another environment"

    def key(environments: list) -> str:
        return artifact_cache.try_digest([(wheel.name, "0" * 64)], None, wine_python=None, steps_dir=Path(try_envs.__file__).parent, environments=environments)

    resolved_later = {**made, "resolved": {"bnbdep": "1.1"}}
    assert len({key([None]), key([made]), key([resolved_later])}) == 3


def test_a_tree_names_the_index_of_its_run_time_dependencies(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bitsandbytes").mkdir(parents=True)
    (tree / "bitsandbytes" / "__init__.py").write_text("__version__ = '1.0'\n")
    (tree / "VERSION").write_text("1.0\n")
    (tree / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.22)\nproject(bitsandbytes LANGUAGES CXX)\n")
    (tree / "pyproject.toml").write_text('[tool.bitsandbytes-ci]\ntry-index-url = "https://download.pytorch.org/whl/cpu"\n')
    assert read_tree(tree).config.try_index_url == "https://download.pytorch.org/whl/cpu"
    checks = try_checks(load_matrix(), ["linux-x86_64"], read_tree(tree))
    assert checks[-2:] == ["--index-url", "https://download.pytorch.org/whl/cpu"], "both executors hand it to the try step"
    (tree / "pyproject.toml").write_text('[tool.bitsandbytes-ci]\ntry-index-url = "the CPU torch index"\n')
    with pytest.raises(PipelineError, match=r"try-index-url 'the CPU torch index' is not a package index URL \(https://"):
        read_tree(tree)


def test_a_try_waits_for_another_using_its_environment(tmp_path: Path, index: PyPIServer) -> None:
    """Two tries of one environment never overlap: the second waits for the first's lock."""
    work, envs = tmp_path / "work", tmp_path / "envs"
    tried_wheel(work, "first")
    (work / "try.py").write_text(TRY_SCRIPT)
    env = try_envs.env_dir(envs, ["bnbdep>=1"], try_envs.index_arguments(index.simple))
    envs.mkdir()
    with open(envs / (env.name + ".lock"), "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        argv = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); from bnb_build.__main__ import main; sys.exit(main())",
                str(PIPELINE_SRC), "try-wheels", "--wheels", "wheels", "--report", "tries.md", "--script", "try.py", "--index-url", index.simple,
                "--env-cache", str(envs)]  # fmt: skip
        waiting = subprocess.Popen(argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(5)
        assert waiting.poll() is None and not env.exists(), "it waits before touching the environment"
    out, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0 and ": made (" in out, out[-2000:]
