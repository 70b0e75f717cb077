"""Stages `pre-release` and `publish`: the release step programs in the matrix's pinned Python image,
with plan.py's command lines (the ones `bnb-ci pre-release` / `bnb-ci publish` run on the host) and the
plan's expect.json. Credentials are Dagger secrets set with `with_secret_variable` only (never on a
command line or in a plain variable), and only on the step that needs them.

pre-release: /work/wheels, /work/expect.json -> `pre_release_argv()` -> /work/out (renamed wheels,
body.md, release.json); then GITHUB_TOKEN -> `github_release_argv()` replaces the GitHub release.
publish: /work/wheels, /work/expect.json, twine; PYPI_TOKEN, or the two OIDC request variables of a
GitHub Actions job with `--trusted-publishing` -> `publish_argv()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagger

from ...core.plan import github_release_argv, pre_release_argv, publish_argv
from .common import WORK, base, filtered, with_image_tools, with_steps
from .packaging import expect_json

PUBLISH_TOOLS = ("twine", "lief")
PRE_RELEASE_TOOLS = ("lief",)
"""Both steps check the wheels against expect.json first, which reads their libraries with lief."""
RELEASE_DIR = f"{WORK}/out"
GITHUB_TOKEN_ENV = "GITHUB_TOKEN"
TOKEN_ENV = "PYPI_TOKEN"
OIDC_ENVS = ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")


def _with_wheels(image: str, source: dagger.Directory, wheels: dagger.Directory, expectations: Mapping[str, Any],
                 tools: tuple[str, ...]) -> dagger.Container:  # fmt: skip
    ctr = with_steps(with_image_tools(base(image, None), tools))
    ctr = ctr.with_directory(f"{WORK}/wheels", filtered(wheels, ["*.whl"]))
    return ctr.with_new_file(f"{WORK}/expect.json", expect_json(expectations))


def pre_release(
    image: str,
    source: dagger.Directory,
    wheels: dagger.Directory,
    expectations: Mapping[str, Any],
    *,
    token: dagger.Secret,
    repository: str,
    commit: str,
    tag: str,
) -> dagger.Directory:
    """The release folder, read after github-release published it (the token is set for that step only)."""
    ctr = _with_wheels(image, source, wheels, expectations, PRE_RELEASE_TOOLS).with_exec(pre_release_argv(commit=commit, repo=repository, tag=tag))
    ctr = ctr.with_secret_variable(GITHUB_TOKEN_ENV, token).with_exec(github_release_argv())
    return ctr.directory(RELEASE_DIR)


def publish_credentials(
    token: dagger.Secret | None, oidc_request_url: dagger.Secret | None, oidc_request_token: dagger.Secret | None
) -> dict[str, dagger.Secret]:
    """The secret variables of the publish step: an API token, or both OIDC request variables (trusted publishing)."""
    oidc = {name: secret for name, secret in zip(OIDC_ENVS, (oidc_request_url, oidc_request_token)) if secret is not None}
    if token is not None and not oidc:
        return {TOKEN_ENV: token}
    if token is None and len(oidc) == len(OIDC_ENVS):
        return oidc
    if token is not None:
        msg = "publish takes --token or the OIDC request secrets (trusted publishing), not both"
    elif oidc:
        msg = "trusted publishing needs both --oidc-request-url and --oidc-request-token"
    else:
        msg = "publish needs --token (a package index API token), or --oidc-request-url and --oidc-request-token (trusted publishing)"
    raise ValueError(msg)


def publish(
    image: str,
    source: dagger.Directory,
    wheels: dagger.Directory,
    expectations: Mapping[str, Any],
    *,
    repository_url: str,
    token: dagger.Secret | None,
    oidc_request_url: dagger.Secret | None,
    oidc_request_token: dagger.Secret | None,
) -> dagger.Container:
    """Upload with an API token, or by trusted publishing (the OIDC request URL and token of the CI job)."""
    secrets = publish_credentials(token, oidc_request_url, oidc_request_token)
    ctr = _with_wheels(image, source, wheels, expectations, PUBLISH_TOOLS)
    for name, secret in secrets.items():
        ctr = ctr.with_secret_variable(name, secret)
    return ctr.with_exec(publish_argv(repository_url=repository_url, trusted_publishing=TOKEN_ENV not in secrets))
