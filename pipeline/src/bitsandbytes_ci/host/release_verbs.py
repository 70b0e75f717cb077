"""`bnb-ci pre-release` and `bnb-ci publish` on the host: the plan's expectations, then the step programs.

Both verbs run the same step programs as the Dagger functions (`python3 -m bnb_build pre-release |
github-release | publish`, docs/contracts.md) with the same command lines (plan.py's
`pre_release_argv`, `github_release_argv`, `publish_argv`, which stages/release.py uses too), and the
expect.json the plan yields for the selection (`--platform`, `--backend`, `--version`): a wheel set
that misses a platform the plan builds, or holds one it does not, is refused before anything is
written or uploaded.

    bnb-ci pre-release --wheels bnb-out/wheels --out bnb-out/pre-release [--upload]
    bnb-ci publish --wheels bnb-out/wheels --repository-url https://upload.pypi.org/legacy/

Secrets (GITHUB_TOKEN, PYPI_TOKEN / TWINE_PASSWORD, the Actions OIDC variables) reach the steps
through the environment mapping `cli.py` hands down, never through a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import PipelineError
from ..core.plan import DEFAULT_API_URL, DEFAULT_REPOSITORY_URL, DEFAULT_TAG, expectations, github_release_argv, pre_release_argv, publish_argv
from .local import step_pythonpath

if TYPE_CHECKING:
    from .invocation import Invocation

DEFAULT_RELEASE_OUT = Path("bnb-out") / "pre-release"


class ReleaseInputError(PipelineError):
    """A value the release verbs need is missing (commit, repository)."""

    exit_code = 2


class StepFailed(PipelineError):
    """A step program failed; its output (above) says why. The exit code is the step's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---- options -------------------------------------------------------------------------------------


def add_options(verb: str, parser: argparse.ArgumentParser) -> None:
    """The options of `pre-release` / `publish` beyond the shared ones (cli.build_parser calls this)."""
    if verb == "pre-release":
        parser.add_argument("--out", type=Path, default=DEFAULT_RELEASE_OUT, metavar="DIR", help=f"release folder to write (default: {DEFAULT_RELEASE_OUT})")
        parser.add_argument("--commit", metavar="SHA", help="commit the wheels were built from (default: $GITHUB_SHA, else `git rev-parse HEAD`)")
        parser.add_argument("--repo", metavar="OWNER/NAME", help="GitHub repository of the release (default: $GITHUB_REPOSITORY, else the origin remote)")
        parser.add_argument("--tag", default=DEFAULT_TAG, help=f"release tag (default: {DEFAULT_TAG})")
        parser.add_argument("--upload", action="store_true", help="then replace the GitHub release (token: $GITHUB_TOKEN)")
        parser.add_argument("--api-url", default=DEFAULT_API_URL, help=f"GitHub REST API for --upload (default: {DEFAULT_API_URL})")
    elif verb == "publish":
        parser.add_argument("--repository-url", default=DEFAULT_REPOSITORY_URL, metavar="URL", help=f"upload URL of the index (default: {DEFAULT_REPOSITORY_URL})")
        parser.add_argument("--trusted-publishing", action="store_true", help="mint a PyPI token from the GitHub Actions OIDC token instead of $PYPI_TOKEN")
        parser.add_argument("--oidc-url", metavar="URL", help="index that mints the token (default: derived from --repository-url)")


# ---- defaults from the environment or git ---------------------------------------------------------


def default_commit(env: Mapping[str, str], cwd: Path | None = None) -> str:
    if env.get("GITHUB_SHA"):
        return env["GITHUB_SHA"]
    found = _git(["rev-parse", "HEAD"], env, cwd)
    if not found:
        msg = "no commit: pass --commit SHA (or set GITHUB_SHA), or run inside the git checkout the wheels were built from"
        raise ReleaseInputError(msg)
    return found


def default_repo(env: Mapping[str, str], cwd: Path | None = None) -> str:
    if env.get("GITHUB_REPOSITORY"):
        return env["GITHUB_REPOSITORY"]
    remote = _git(["remote", "get-url", "origin"], env, cwd) or ""
    m = re.search(r"github\.com[:/]([^/]+/[^/]+?)(?:\.git)?/?$", remote)
    if not m:
        msg = "no GitHub repository for the download links: pass --repo OWNER/NAME (or set GITHUB_REPOSITORY)"
        raise ReleaseInputError(msg)
    return m.group(1)


def _git(args: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


# ---- running a step -------------------------------------------------------------------------------


def run_step(argv: Sequence[str], invocation: Invocation) -> None:
    """Run a step program with this interpreter; stream its output to the invocation's stdout."""
    env = dict(invocation.env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(step_pythonpath()), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, *argv[1:]] if list(argv[:1]) == ["python3"] else list(argv)
    out = invocation.stdout
    out.write("+ " + " ".join(argv) + "\n")
    out.flush()
    with subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
        code = proc.wait()
    if code != 0:
        msg = f"step `{' '.join(argv[2:4])}` failed with exit code {code}; its output above says why"
        raise StepFailed(msg, code)


def _write_expect(invocation: Invocation, folder: Path) -> Path:
    path = folder / "expect.json"
    path.write_text(json.dumps(expectations(invocation.matrix, invocation.jobs, invocation.tree), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


# ---- handlers -------------------------------------------------------------------------------------


def run_pre_release(invocation: Invocation) -> int:
    opts = invocation.options
    commit = opts.get("commit") or default_commit(invocation.env)
    repo = opts.get("repo") or default_repo(invocation.env)
    with tempfile.TemporaryDirectory(prefix="bnb-ci-pre-release-") as tmp:
        expect = _write_expect(invocation, Path(tmp))
        run_step(
            pre_release_argv(wheels=str(opts["wheels"]), out=str(opts["out"]), commit=commit, repo=repo, tag=opts["tag"], expect=str(expect)),
            invocation,
        )
    if opts.get("upload"):
        run_step(github_release_argv(release_dir=str(opts["out"]), api_url=opts["api_url"]), invocation)
    return 0


def run_publish(invocation: Invocation) -> int:
    opts = invocation.options
    with tempfile.TemporaryDirectory(prefix="bnb-ci-publish-") as tmp:
        expect = _write_expect(invocation, Path(tmp))
        argv = publish_argv(
            wheels=str(opts["wheels"]),
            expect=str(expect),
            repository_url=opts["repository_url"],
            trusted_publishing=bool(opts.get("trusted_publishing")),
            oidc_url=opts.get("oidc_url"),
        )
        run_step(argv, invocation)
    return 0
