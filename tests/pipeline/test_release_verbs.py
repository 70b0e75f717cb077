"""`bnb-ci pre-release` and `bnb-ci publish` (bitsandbytes_ci.host.release_verbs): the plan's expectations,
then the same step programs, with secrets only in the environment."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from bitsandbytes_ci.host import cli, release_verbs
from bnb_build_helpers import cpu_wheel, step_env
from release_helpers import COMMIT, REPO, PyPIServer, fresh_venv, numpy_links, pip_install, round_trip, start_pypiserver, wheel_set

TOKEN = "pypi-VERBS-SENTINEL-e4d1"
CPU_LINUX = ["--platform", "linux-x86_64", "--backend", "cpu"]


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[PyPIServer]:
    yield from start_pypiserver(tmp_path / "packages", TOKEN)


def bnb_ci(*argv: str, env: dict) -> tuple[int, str]:
    out = io.StringIO()
    try:
        code = cli.main_inner(list(argv), env=env, stdout=out)
    except release_verbs.StepFailed as e:
        return e.exit_code, out.getvalue() + str(e)
    return code, out.getvalue()


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in step_env().items() if k not in ("PYPI_TOKEN", "TWINE_PASSWORD", "GITHUB_SHA", "GITHUB_REPOSITORY", "GITHUB_TOKEN")}
    env.update(extra)
    return env


def test_publish_verb_uploads_once_and_pip_installs(tmp_path: Path, index: PyPIServer) -> None:
    wheels = wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    env = base_env(PYPI_TOKEN=TOKEN)
    code, out = bnb_ci("publish", "--wheels", str(wheels), "--repository-url", index.url, *CPU_LINUX, env=env)
    assert code == 0, out
    assert list(index.files()) == [cpu_wheel().name]
    assert "+ python3 -m bnb_build publish --wheels" in out and TOKEN not in out
    code, out = bnb_ci("publish", "--wheels", str(wheels), "--repository-url", index.url, *CPU_LINUX, env=env)
    assert code == 0 and "nothing to upload" in out
    python = fresh_venv(tmp_path / "venv")
    result = pip_install(python, "--index-url", index.simple, "--find-links", str(numpy_links()), "bitsandbytes")
    assert result.returncode == 0, result.stderr
    round_trip(python, tmp_path)


def test_publish_verb_refuses_a_set_missing_planned_platforms(tmp_path: Path, index: PyPIServer) -> None:
    wheels = wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    code, out = bnb_ci("publish", "--wheels", str(wheels), "--repository-url", index.url, "--backend", "cpu", env=base_env(PYPI_TOKEN=TOKEN))
    assert code == 9
    assert "no wheel for linux-aarch64, macos-arm64, windows-arm64, windows-x64, which the plan built" in out
    assert index.files() == {}


def test_pre_release_verb_writes_the_release_folder(tmp_path: Path) -> None:
    wheels = wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    env = base_env(GITHUB_SHA=COMMIT, GITHUB_REPOSITORY=REPO)
    code, out = bnb_ci("pre-release", "--wheels", str(wheels), "--out", str(tmp_path / "out"), *CPU_LINUX, env=env)
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bitsandbytes-1.33.7.preview-py3-none-manylinux_2_28_x86_64.whl", "body.md", "release.json"]
    manifest = json.loads((tmp_path / "out" / "release.json").read_text())
    assert manifest["commit"] == COMMIT and manifest["repo"] == REPO


def test_pre_release_verb_needs_a_repository(tmp_path: Path) -> None:
    wheels = wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    with pytest.raises(release_verbs.ReleaseInputError, match="pass --repo OWNER/NAME"):
        bnb_ci("pre-release", "--wheels", str(wheels), "--out", str(tmp_path / "out"), "--commit", COMMIT, *CPU_LINUX, env=base_env(GIT_DIR=str(tmp_path / "nogit")))


def test_step_argv() -> None:
    assert release_verbs.publish_argv(wheels="w", expect="e.json", repository_url="http://x/", trusted_publishing=True) == [
        "python3", "-m", "bnb_build", "publish", "--wheels", "w", "--expect", "e.json", "--repository-url", "http://x/", "--trusted-publishing",
    ]  # fmt: skip
    assert release_verbs.github_release_argv(release_dir="out", api_url="https://api.github.com") == [
        "python3", "-m", "bnb_build", "github-release", "--release-dir", "out", "--api-url", "https://api.github.com",
    ]  # fmt: skip
