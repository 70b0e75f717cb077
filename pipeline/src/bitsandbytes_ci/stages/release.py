"""Stages `pre-release` and `publish`: the step programs in the pinned Python image, credentials as
Dagger secrets only (`with_secret_variable`), never on a command line or in a plain variable."""

from __future__ import annotations

import dagger

from ..plan import pre_release_argv, publish_argv
from .common import WORK, base, with_image_tools, with_steps

PUBLISH_TOOLS = ("twine",)


def _with_wheels(image: str, source: dagger.Directory, wheels: dagger.Directory, tools: tuple[str, ...]) -> dagger.Container:
    ctr = with_steps(with_image_tools(base(image, None), tools, source), source)
    return ctr.with_directory(f"{WORK}/wheels", wheels, include=["*.whl"])


def pre_release(
    image: str, source: dagger.Directory, wheels: dagger.Directory, *, token: dagger.Secret, repository: str, commit: str, tag: str
) -> dagger.Container:
    ctr = _with_wheels(image, source, wheels, ()).with_secret_variable("GITHUB_TOKEN", token)
    return ctr.with_exec(pre_release_argv(repository=repository, commit=commit, tag=tag))


def publish(
    image: str,
    source: dagger.Directory,
    wheels: dagger.Directory,
    *,
    repository_url: str,
    skip_existing: bool,
    token: dagger.Secret | None,
    oidc_request_url: dagger.Secret | None,
    oidc_request_token: dagger.Secret | None,
) -> dagger.Container:
    """Upload with an API token, or by trusted publishing (the OIDC request URL and token of the CI job)."""
    secrets = {"TWINE_PASSWORD": token, "ACTIONS_ID_TOKEN_REQUEST_URL": oidc_request_url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": oidc_request_token}
    if token is None and (oidc_request_url is None or oidc_request_token is None):
        msg = "publish needs --token, or both --oidc-request-url and --oidc-request-token (trusted publishing)"
        raise ValueError(msg)
    ctr = _with_wheels(image, source, wheels, PUBLISH_TOOLS)
    if token is not None:
        ctr = ctr.with_env_variable("TWINE_USERNAME", "__token__")
    for name, secret in secrets.items():
        if secret is not None:
            ctr = ctr.with_secret_variable(name, secret)
    return ctr.with_exec(publish_argv(repository_url=repository_url, skip_existing=skip_existing))
