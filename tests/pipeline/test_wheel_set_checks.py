"""What a wheel set says about itself: manifest.json records the commit the tree was built from (and
whether it was dirty); build-wheels with a --libs folder lacking planned libraries marks the set
INCOMPLETE.md (naming --keep-going only when it was given); audit-wheels checks each wheel against
every library the plan has for its platform, so a wheel holding only some fails. Real git, real
builds (the 0.45-shaped fixture tree: small, built with zig), real wheels and audit.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from host_helpers import BNB_CI, host_env

from bnb_build import manifest
from bnb_build.errors import InputError
from bnb_build.release import incomplete_notice

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_0_45"
# cpu + CUDA 12.8 for one platform: two planned libraries (the tree's CMake refuses CUDA 13)
SELECTION = ["--backend", "cpu", "--backend", "cuda", "--version", "12.8", "--archs", "75", "--platform", "linux-x86_64"]


def git(cwd: Path, *args: str) -> str:
    env = {**host_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_source_state_is_the_commit_and_whether_the_tree_differs(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree)
    assert manifest.source_state(tree) == {"commit": None, "dirty": None}, "not a git work tree"
    git(tree, "init", "-q")
    git(tree, "add", ".")
    git(tree, "commit", "-q", "-m", "tree")
    head = git(tree, "rev-parse", "HEAD")
    assert manifest.source_state(tree) == {"commit": head, "dirty": False}
    (tree / "csrc" / "new.cpp").write_text("int x;\n")
    assert manifest.source_state(tree) == {"commit": head, "dirty": True}, "an untracked source counts"


def test_the_manifest_records_the_source_and_refuses_a_bad_one(tmp_path: Path) -> None:
    document = {"version": "0.45.5", "jobs": [], "source": {"commit": "a" * 40, "dirty": True}}
    assert manifest.manifest(tmp_path, document)["source"] == {"commit": "a" * 40, "dirty": True}
    assert manifest.manifest(tmp_path, {"version": "1", "jobs": []})["source"] == {"commit": None, "dirty": None}
    with pytest.raises(InputError, match=r'"source"."commit" must be a full hex commit id or null, not \'main\''):
        manifest.manifest(tmp_path, {**document, "source": {"commit": "main", "dirty": False}})


def test_the_incomplete_notice_names_keep_going_only_when_given() -> None:
    assert "--keep-going" in incomplete_notice(["cuda128-linux-x86_64"], keep_going=True)
    text = incomplete_notice(["wheel-linux-aarch64"], keep_going=False)
    assert "--keep-going" not in text and "packed while 1 job(s) failed: wheel-linux-aarch64" in text
    missing = incomplete_notice([], keep_going=False, missing=["cuda128-linux-x86_64 (not in /libs)"])
    assert "lack 1 planned library(ies) that the --libs folder did not hold: cuda128-linux-x86_64" in missing and "failed" not in missing


@pytest.fixture(scope="module")
def partial_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """A git tree built for cpu only, then packed with build-wheels for cpu + cuda128 from that --libs."""
    root = tmp_path_factory.mktemp("partial")
    tree = root / "tree"
    shutil.copytree(FIXTURE, tree)
    git(tree, "init", "-q")
    git(tree, "add", ".")
    git(tree, "commit", "-q", "-m", "tree")
    env = {**host_env(), "XDG_CACHE_HOME": str(root / "cache")}

    def bnb_ci(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BNB_CI), *args, "--source", str(tree)], cwd=tree, env=env, capture_output=True, text=True, timeout=1800, check=False)

    built = bnb_ci("build-cpu", "--platform", "linux-x86_64", "--out", str(root / "libs"))
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
    packed = bnb_ci("build-wheels", "--libs", str(root / "libs"), "--out", str(root / "set"), *SELECTION)
    audited = bnb_ci("audit-wheels", "--wheels", str(root / "set" / "wheels"), "--out", str(root / "audit"), *SELECTION)
    return root, packed, audited  # type: ignore[return-value]


def test_build_wheels_with_a_partial_libs_folder_marks_the_set(partial_set) -> None:
    root, packed, _ = partial_set
    assert packed.returncode == 0, packed.stdout[-4000:] + packed.stderr[-2000:]
    [wheel] = sorted((root / "set" / "wheels").glob("*.whl"))
    notice = (root / "set" / "wheels" / "INCOMPLETE.md").read_text()
    assert "cuda128-linux-x86_64" in notice and "--libs folder did not hold" in notice
    assert "--keep-going" not in notice, "it was not given"
    assert wheel.name.startswith("bitsandbytes-0.45.5-py3-none-")


def test_audit_wheels_fails_a_wheel_that_lacks_planned_libraries(partial_set) -> None:
    root, _, audited = partial_set
    assert audited.returncode != 0, audited.stdout[-4000:]
    assert "lacks 1 of the 2 planned libraries: libbitsandbytes_cuda128.so" in audited.stdout
    report = (root / "audit" / "audit.md").read_text()
    assert "expected library libbitsandbytes_cuda128.so is missing" in report
