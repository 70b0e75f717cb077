"""Step ``github-release``: replace a GitHub release (e.g. ``continuous-release_main``) with a release folder.

Command line (docs/contracts.md)::

    GITHUB_TOKEN=... python3 -m bnb_build github-release --release-dir out [--repo OWNER/NAME]
        [--tag continuous-release_main] [--commit SHA] [--api-url https://api.github.com]

``--release-dir`` is what the ``pre-release`` step wrote (``release.json``, ``body.md``, wheels);
``--repo``, ``--tag`` and ``--commit`` default to the values recorded there and, when given, must
agree with them (the body's download links name the repository and tag). The token comes from the
environment variable ``GITHUB_TOKEN`` only; it is sent in the ``Authorization`` header and never
printed (every message is scrubbed of it).

REST calls, in order (GitHub has no atomic swap, so the new release is complete before the old
one goes):

1. ``GET  /repos/{repo}/releases/tags/{tag}``                  the release to replace (404: none)
2. ``POST /repos/{repo}/releases``                             a *draft* with the body, ``prerelease: true``
3. ``POST {upload_url}?name=<file>``                           each asset; its size and digest are checked
4. ``GET  /repos/{repo}/git/ref/tags/{tag}``, then
   ``PATCH /repos/{repo}/git/refs/tags/{tag}`` (force) or ``POST /repos/{repo}/git/refs``   move the tag
5. ``DELETE /repos/{repo}/releases/{old id}``                  the old release
6. ``PATCH /repos/{repo}/releases/{new id}`` ``draft: false``  publish

Every call has a timeout and bounded retries (``BNB_NETWORK_TIMEOUT_S``, ``BNB_NETWORK_RETRIES``;
``bnb_build.net``): a GET, PATCH or DELETE that gets no answer, cannot connect or gets HTTP 429/5xx
is tried again; a POST that was sent is not (GitHub may have created the release or asset), and its
error names the URL like every other.

A failure in 2-5 deletes the draft and leaves the old release in place (after 4 its tag already
points to the new commit; the old assets stay downloadable). Only a failure in 6 leaves no
published release, because a deleted release does not come back; the error then says exactly what
state is left and the command that finishes the swap. Rerunning the step is safe in every case.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import net
from .errors import InputError, StepError, UsageError, redact, run_step
from .release import BODY, MANIFEST, check_commit, check_repo, check_tag

TOKEN_ENV = "GITHUB_TOKEN"
DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"


class GitHubError(StepError):
    """A GitHub API call failed; the message says what state the release was left in."""

    exit_code = 10


# ----------------------------------------------------------------------------------------------
# A small REST client


@dataclass
class Response:
    status: int
    data: Any


class GitHubClient:
    """JSON over HTTPS with a bearer token. Every error message is scrubbed of the token."""

    def __init__(self, api_url: str, token: str, *, user_agent: str = "bnb-build-github-release", limits: net.Limits = net.Limits(),
                 log: Any = print) -> None:  # fmt: skip
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.user_agent = user_agent
        self.limits = limits
        self.log = log

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        body: Any = None,
        data: Optional[bytes] = None,
        content_type: str = "application/json",
        ok: Sequence[int] = (200, 201, 204),
        timeout: Optional[float] = None,
    ) -> Response:
        """One API call; ``timeout`` (default: the limits' timeout) bounds each wait for the server."""
        url = path_or_url if "://" in path_or_url else self.api_url + path_or_url
        payload = json.dumps(body).encode("utf-8") if body is not None else data
        req = urllib.request.Request(url, data=payload, method=method)
        req.add_header("Accept", "application/vnd.github+json")
        req.add_header("X-GitHub-Api-Version", API_VERSION)
        req.add_header("User-Agent", self.user_agent)
        req.add_header("Authorization", f"Bearer {self._token}")
        if payload is not None:
            req.add_header("Content-Type", content_type)
        where = f"{method} {_display(url)}"
        try:
            status, raw = net.call(lambda t: net.urlopen(req, t), method=method, url=url, limits=self.limits, timeout_s=timeout,
                                   ok_status=lambda s: s in ok, log=lambda text: self.log(redact(text, [self._token])))  # fmt: skip
        except net.NetworkError as e:
            msg = f"cannot reach the GitHub API: {e}; check --api-url and the network"
            raise GitHubError(redact(msg, [self._token])) from None
        try:
            parsed = json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", errors="replace")[:500]
        if status not in ok:
            detail = parsed.get("message", parsed) if isinstance(parsed, dict) else parsed
            errors = parsed.get("errors") if isinstance(parsed, dict) else None
            msg = f"{where} answered HTTP {status}: {detail}" + (f" {errors}" if errors else "")
            if status in (401, 403):
                msg += f" (is {TOKEN_ENV} valid, and may it write releases and tags: `contents: write`?)"
            err = GitHubError(redact(msg, [self._token]))
            err.status = status  # type: ignore[attr-defined]
            raise err
        return Response(status, parsed)


def _display(url: str) -> str:
    """A URL for messages: without user info or query secrets."""
    return net.display_url(url)


# ----------------------------------------------------------------------------------------------
# The release folder


@dataclass(frozen=True)
class ReleaseDir:
    root: Path
    repo: str
    tag: str
    commit: str
    title: str
    body: str
    assets: List[Path]


def load_release_dir(root: Path) -> ReleaseDir:
    """Read ``release.json`` and ``body.md``; check that every asset is there with its sha256."""
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"--release-dir {root} has no {MANIFEST}; write it with `python3 -m bnb_build pre-release` first"
        raise InputError(msg) from None
    except ValueError as e:
        msg = f"{manifest_path} is not valid JSON: {e}"
        raise InputError(msg) from None
    try:
        body = (root / manifest.get("body", BODY)).read_text(encoding="utf-8")
        assets = []
        for asset in manifest["assets"]:
            path = root / asset["name"]
            if not path.is_file():
                msg = f"{MANIFEST} lists {asset['name']}, which is not in {root}"
                raise InputError(msg)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != asset["sha256"]:
                msg = f"{path} has sha256 {digest}, {MANIFEST} says {asset['sha256']}: the folder changed after the pre-release step"
                raise InputError(msg)
            assets.append(path)
        if not assets:
            msg = f"{MANIFEST} in {root} lists no assets; there is nothing to release"
            raise InputError(msg)
        return ReleaseDir(root, manifest["repo"], manifest["tag"], manifest["commit"], manifest.get("title", manifest["tag"]), body, assets)
    except (KeyError, TypeError) as e:
        msg = f"{manifest_path} lacks {e}; write it with `python3 -m bnb_build pre-release`"
        raise InputError(msg) from None
    except FileNotFoundError as e:
        msg = f"--release-dir {root}: {e.filename} is missing"
        raise InputError(msg) from None


# ----------------------------------------------------------------------------------------------
# The swap


@dataclass(frozen=True)
class Publication:
    release_id: int
    html_url: str
    replaced_id: Optional[int]


def replace_release(client: GitHubClient, rel: ReleaseDir, *, log: Any = print) -> Publication:
    """Create the new release as a draft with every asset, then swap it for the old one."""
    repo_path = f"/repos/{rel.repo}"
    tag_path = urllib.parse.quote(rel.tag, safe="")
    try:
        old = client.request("GET", f"{repo_path}/releases/tags/{tag_path}", ok=(200,)).data
    except GitHubError as e:
        if getattr(e, "status", None) != 404:
            raise GitHubError(f"{e}\nnothing was changed") from None
        old = None
    old_id = old["id"] if old else None
    log(f"release {rel.tag}: " + (f"replacing release {old_id}" if old_id else "no release yet, creating it"))

    draft = client.request(
        "POST",
        f"{repo_path}/releases",
        body={"tag_name": rel.tag, "target_commitish": rel.commit, "name": rel.title, "body": rel.body, "draft": True, "prerelease": True},
        ok=(201,),
    ).data
    draft_id = draft["id"]
    log(f"created draft release {draft_id}")
    try:
        upload_base = draft["upload_url"].split("{", 1)[0]
        for path in rel.assets:
            size = path.stat().st_size
            log(f"uploading {path.name} ({size} bytes)")
            asset = client.request(
                "POST",
                f"{upload_base}?{urllib.parse.urlencode({'name': path.name})}",
                data=path.read_bytes(),
                content_type="application/octet-stream",
                ok=(201,),
                timeout=client.limits.transfer_timeout(size),
            ).data
            if asset.get("name") != path.name or asset.get("size") != size:
                msg = f"GitHub stored {path.name} as {asset.get('name')!r} with {asset.get('size')} bytes, expected {size} bytes"
                raise GitHubError(msg)
    except GitHubError as e:
        raise GitHubError(f"{e}\n{_discard_draft(client, repo_path, draft_id, old_id, rel)}") from None

    # The swap. The tag moves first, while the old release still stands, so that only the last
    # call (publishing the draft) can leave the repository without a published release.
    try:
        _move_tag(client, repo_path, rel.tag, rel.commit)
        log(f"tag {rel.tag} -> {rel.commit}")
    except GitHubError as e:
        raise GitHubError(f"{e}\n{_discard_draft(client, repo_path, draft_id, old_id, rel)}") from None
    if old_id is not None:
        try:
            client.request("DELETE", f"{repo_path}/releases/{old_id}", ok=(204, 404))
        except GitHubError as e:
            note = f"the tag {rel.tag} already points to {rel.commit}; "
            raise GitHubError(f"{e}\n{note}{_discard_draft(client, repo_path, draft_id, old_id, rel)}") from None
        log(f"deleted the old release {old_id}")
    try:
        published = client.request("PATCH", f"{repo_path}/releases/{draft_id}", body={"draft": False, "prerelease": True, "tag_name": rel.tag}, ok=(200,)).data
    except GitHubError as e:
        raise GitHubError(f"{e}\n{_stranded(rel, draft_id, old_id)}") from None
    url = published.get("html_url", "")
    log(f"published release {draft_id}: {url}")
    return Publication(draft_id, url, old_id)


def _move_tag(client: GitHubClient, repo_path: str, tag: str, commit: str) -> None:
    ref = urllib.parse.quote(tag, safe="/")
    try:
        client.request("GET", f"{repo_path}/git/ref/tags/{ref}", ok=(200,))
    except GitHubError as e:
        if getattr(e, "status", None) != 404:
            raise
        client.request("POST", f"{repo_path}/git/refs", body={"ref": f"refs/tags/{tag}", "sha": commit}, ok=(201,))
        return
    client.request("PATCH", f"{repo_path}/git/refs/tags/{ref}", body={"sha": commit, "force": True}, ok=(200,))


def _discard_draft(client: GitHubClient, repo_path: str, draft_id: int, old_id: Optional[int], rel: ReleaseDir) -> str:
    kept = f"the old release {old_id} is unchanged" if old_id else f"no release {rel.tag} existed and none was made"
    try:
        client.request("DELETE", f"{repo_path}/releases/{draft_id}", ok=(204, 404))
    except GitHubError as e:
        return f"state: {kept}; the draft release {draft_id} could not be deleted ({e}): delete it by hand (GitHub: Releases, Drafts), then rerun this step"
    return f"state: {kept}; the unfinished draft {draft_id} was deleted. Rerun this step once the cause is fixed."


def _stranded(rel: ReleaseDir, draft_id: int, old_id: Optional[int]) -> str:
    gone = f"the old release {old_id} is deleted" if old_id else f"no release {rel.tag} existed"
    return (
        f"state: {gone}; the new release {draft_id} is a complete draft with every asset, and the tag "
        f"{rel.tag} points to {rel.commit}.\n"
        f"to finish by hand: gh api -X PATCH repos/{rel.repo}/releases/{draft_id} -F draft=false\n"
        f"or delete the draft {draft_id} (GitHub: Releases, Drafts) and rerun this step."
    )


# ----------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build github-release", description=f"Replace a GitHub release with a release folder (token: ${TOKEN_ENV}).")
    p.add_argument("--release-dir", required=True, type=Path, help="folder written by the pre-release step")
    p.add_argument("--repo", help="OWNER/NAME (default and required match: release.json)")
    p.add_argument("--tag", help="release tag (default and required match: release.json)")
    p.add_argument("--commit", help="commit the tag moves to (default and required match: release.json)")
    p.add_argument("--api-url", default=DEFAULT_API_URL, help=f"GitHub REST API (default: {DEFAULT_API_URL})")
    return p


def run(argv: Sequence[str], env: Mapping[str, str], *, log: Any = print) -> Publication:
    ns = _parser().parse_args(list(argv))
    token = env.get(TOKEN_ENV, "")
    if not token.strip():
        msg = f"no GitHub token: set the environment variable {TOKEN_ENV} (in Actions: `secrets.GITHUB_TOKEN` with `permissions: contents: write`)"
        raise UsageError(msg)
    rel = load_release_dir(ns.release_dir)
    for option, given, recorded in (("--repo", ns.repo, rel.repo), ("--tag", ns.tag, rel.tag), ("--commit", ns.commit, rel.commit)):
        if given is not None and given != recorded:
            msg = f"{option} {given!r} differs from {recorded!r} in {ns.release_dir / MANIFEST}; rerun the pre-release step with it"
            raise UsageError(msg)
    check_repo(rel.repo)
    check_tag(rel.tag)
    check_commit(rel.commit)
    if not ns.api_url.startswith(("https://", "http://")):
        msg = f"--api-url {ns.api_url!r} is not an http(s) URL; e.g. {DEFAULT_API_URL}"
        raise UsageError(msg)
    return replace_release(GitHubClient(ns.api_url, token, limits=net.limits_from_env(env), log=log), rel, log=log)


def main(argv: Optional[Sequence[str]] = None) -> int:
    env: Dict[str, str] = dict(os.environ)
    secrets = [env.get(TOKEN_ENV, "")]
    log = lambda text: print(redact(str(text), secrets), flush=True)  # noqa: E731
    return run_step(lambda: run(sys.argv[1:] if argv is None else argv, env, log=log), secrets)
