"""bnb_build.github_release against FakeGitHub, a fake of the few GitHub REST endpoints it uses.

GitHub itself cannot run here, so ``FakeGitHub`` (a loopback HTTP server) keeps releases, assets and
tag refs in memory, records every call, checks the bearer token, and can fail a chosen call. The
release folder is real: the pre-release step's output for two platforms.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import pytest

from bnb_build import github_release
from bnb_build_helpers import run_step, step_env
from release_helpers import COMMIT, REPO, wheel_set

TOKEN = "ghp_SENTINEL_github_token_4c2e"
TAG = "continuous-release_main"
OLD_COMMIT = "f" * 40


class FakeGitHub:
    """A fake GitHub: releases, assets and tags of one repository, in memory."""

    def __init__(self) -> None:
        self.calls: List[str] = []
        self.releases: Dict[int, dict] = {}
        self.refs: Dict[str, str] = {}
        self.next_id = 100
        self.fail: Optional[Tuple[str, int]] = None  # (call regex, status): fail the first matching call
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, body: object = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def handle_any(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                call = f"{method} {parts.path}"
                fake.calls.append(call)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.reply(401, {"message": "Bad credentials"})
                if fake.fail and re.fullmatch(fake.fail[0], call):
                    status, fake.fail = fake.fail[1], None
                    return self.reply(status, {"message": "injected failure"})
                status, body = fake.route(method, parts.path, parse_qs(parts.query), raw)
                self.reply(status, body)

            def do_GET(self) -> None:
                self.handle_any("GET")

            def do_POST(self) -> None:
                self.handle_any("POST")

            def do_PATCH(self) -> None:
                self.handle_any("PATCH")

            def do_DELETE(self) -> None:
                self.handle_any("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # -- state -----------------------------------------------------------------------------
    def add_release(self, tag: str, commit: str, *, draft: bool = False, assets=()) -> int:
        rid = self.next_id
        self.next_id += 1
        self.releases[rid] = {"id": rid, "tag_name": tag, "target_commitish": commit, "draft": draft, "prerelease": True, "name": "old",
                              "body": "old body", "assets": [{"name": n, "size": 1} for n in assets]}  # fmt: skip
        return rid

    def published(self, tag: str) -> List[dict]:
        return [r for r in self.releases.values() if r["tag_name"] == tag and not r["draft"]]

    def _release(self, rid: int) -> dict:
        r = dict(self.releases[rid])
        r["upload_url"] = f"{self.url}/uploads/repos/{REPO}/releases/{rid}/assets{{?name,label}}"
        r["html_url"] = f"https://github.com/{REPO}/releases/tag/{r['tag_name']}"
        return r

    def route(self, method: str, path: str, query: dict, raw: bytes):
        base = f"/repos/{REPO}"
        m = re.fullmatch(rf"{base}/releases/tags/(.+)", path)
        if method == "GET" and m:
            found = self.published(m.group(1))
            return (200, self._release(found[0]["id"])) if found else (404, {"message": "Not Found"})
        if method == "POST" and path == f"{base}/releases":
            body = json.loads(raw)
            if not body.get("draft") and self.published(body["tag_name"]):
                return 422, {"message": "Validation Failed", "errors": [{"code": "already_exists", "field": "tag_name"}]}
            rid = self.add_release(body["tag_name"], body["target_commitish"], draft=body["draft"])
            self.releases[rid].update(name=body["name"], body=body["body"], prerelease=body["prerelease"])
            return 201, self._release(rid)
        m = re.fullmatch(rf"/uploads{base}/releases/(\d+)/assets", path)
        if method == "POST" and m:
            rid = int(m.group(1))
            asset = {"name": query["name"][0], "size": len(raw)}
            self.releases[rid]["assets"].append(asset)
            return 201, asset
        m = re.fullmatch(rf"{base}/releases/(\d+)", path)
        if m and int(m.group(1)) in self.releases:
            rid = int(m.group(1))
            if method == "DELETE":
                del self.releases[rid]
                return 204, None
            if method == "PATCH":
                body = json.loads(raw)
                if body.get("draft") is False and any(r["id"] != rid for r in self.published(body.get("tag_name", self.releases[rid]["tag_name"]))):
                    return 422, {"message": "Validation Failed", "errors": [{"code": "already_exists", "field": "tag_name"}]}
                self.releases[rid].update(body)
                if body.get("draft") is False and self.releases[rid]["tag_name"] not in self.refs:
                    self.refs[self.releases[rid]["tag_name"]] = self.releases[rid]["target_commitish"]
                return 200, self._release(rid)
        m = re.fullmatch(rf"{base}/git/ref/tags/(.+)", path)
        if method == "GET" and m:
            tag = m.group(1)
            return (200, {"ref": f"refs/tags/{tag}", "object": {"sha": self.refs[tag]}}) if tag in self.refs else (404, {"message": "Not Found"})
        m = re.fullmatch(rf"{base}/git/refs/tags/(.+)", path)
        if method == "PATCH" and m and m.group(1) in self.refs:
            self.refs[m.group(1)] = json.loads(raw)["sha"]
            return 200, {"ref": f"refs/tags/{m.group(1)}"}
        if method == "POST" and path == f"{base}/git/refs":
            body = json.loads(raw)
            self.refs[body["ref"][len("refs/tags/"):]] = body["sha"]
            return 201, body
        return 404, {"message": "Not Found"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("release")
    wheel_set(work / "wheels", ["linux-x86_64", "macos-arm64"])
    result = run_step(["pre-release", "--wheels", "wheels", "--out", "out", "--commit", COMMIT, "--repo", REPO, "--expect-platforms", "linux-x86_64,macos-arm64"], work)
    assert result.returncode == 0, result.stderr
    return work / "out"


def upload(release_dir: Path, fake: FakeGitHub, *args: str, token: Optional[str] = TOKEN):
    env = step_env()
    env.pop("GITHUB_TOKEN", None)
    if token is not None:
        env["GITHUB_TOKEN"] = token
    return run_step(["github-release", "--release-dir", str(release_dir), "--api-url", fake.url, *args], release_dir.parent, env)


def asset_names(release_dir: Path) -> List[str]:
    return [a["name"] for a in json.loads((release_dir / "release.json").read_text())["assets"]]


def no_token(result) -> None:
    assert TOKEN not in result.stdout and TOKEN not in result.stderr


def test_replaces_the_old_release_in_order(release_dir: Path, github: FakeGitHub) -> None:
    old = github.add_release(TAG, OLD_COMMIT, assets=["bitsandbytes-1.33.7.preview-py3-none-win_amd64.whl"])
    github.refs[TAG] = OLD_COMMIT
    result = upload(release_dir, github, "--repo", REPO, "--tag", TAG, "--commit", COMMIT)
    assert result.returncode == 0, result.stdout + result.stderr
    base = f"/repos/{REPO}"
    assert github.calls == [
        f"GET {base}/releases/tags/{TAG}",
        f"POST {base}/releases",
        f"POST /uploads{base}/releases/101/assets",
        f"POST /uploads{base}/releases/101/assets",
        f"GET {base}/git/ref/tags/{TAG}",
        f"PATCH {base}/git/refs/tags/{TAG}",
        f"DELETE {base}/releases/{old}",
        f"PATCH {base}/releases/101",
    ]
    [new] = github.published(TAG)
    assert list(github.releases) == [new["id"]] and new["id"] == 101
    assert new["prerelease"] and new["target_commitish"] == COMMIT
    assert new["body"] == (release_dir / "body.md").read_text()
    assert sorted(a["name"] for a in new["assets"]) == sorted(asset_names(release_dir))
    assert all(a["size"] == (release_dir / a["name"]).stat().st_size for a in new["assets"])
    assert github.refs[TAG] == COMMIT
    no_token(result)


def test_first_release_creates_the_tag(release_dir: Path, github: FakeGitHub) -> None:
    result = upload(release_dir, github)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c.split(" ")[0] + " " + c.split("/")[-1] for c in github.calls if "uploads" not in c] == [
        f"GET {TAG}", "POST releases", f"GET {TAG}", "POST refs", "PATCH 100",
    ]  # fmt: skip
    assert github.refs == {TAG: COMMIT} and len(github.published(TAG)) == 1


def test_upload_failure_keeps_the_old_release(release_dir: Path, github: FakeGitHub) -> None:
    old = github.add_release(TAG, OLD_COMMIT)
    github.refs[TAG] = OLD_COMMIT
    # the second of the two uploads fails: halfway through the assets
    count = {"n": 0}
    original = github.route

    def route(method, path, query, raw):
        if path.startswith("/uploads"):
            count["n"] += 1
            if count["n"] == 2:
                return 502, {"message": "upstream timeout"}
        return original(method, path, query, raw)

    github.route = route  # type: ignore[method-assign]
    result = upload(release_dir, github)
    assert result.returncode == github_release.GitHubError.exit_code
    assert "answered HTTP 502: upstream timeout" in result.stderr
    assert f"the old release {old} is unchanged; the unfinished draft 101 was deleted" in result.stderr
    assert list(github.releases) == [old] and github.refs[TAG] == OLD_COMMIT
    assert github.calls[-1] == f"DELETE /repos/{REPO}/releases/101"
    no_token(result)


def test_failure_to_move_the_tag_keeps_the_old_release(release_dir: Path, github: FakeGitHub) -> None:
    old = github.add_release(TAG, OLD_COMMIT)
    github.refs[TAG] = OLD_COMMIT
    github.fail = (rf"PATCH /repos/{REPO}/git/refs/tags/.*", 422)
    result = upload(release_dir, github)
    assert result.returncode == github_release.GitHubError.exit_code
    assert f"the old release {old} is unchanged" in result.stderr
    assert list(github.releases) == [old] and github.refs[TAG] == OLD_COMMIT


def test_failure_to_publish_says_what_is_left_and_what_to_do(release_dir: Path, github: FakeGitHub) -> None:
    old = github.add_release(TAG, OLD_COMMIT)
    github.refs[TAG] = OLD_COMMIT
    github.fail = (rf"PATCH /repos/{REPO}/releases/101", 422)  # a 5xx would be retried (test_network_timeouts)
    result = upload(release_dir, github)
    assert result.returncode == github_release.GitHubError.exit_code
    assert f"the old release {old} is deleted; the new release 101 is a complete draft with every asset" in result.stderr
    assert f"gh api -X PATCH repos/{REPO}/releases/101 -F draft=false" in result.stderr
    assert old not in github.releases and github.releases[101]["draft"] and len(github.releases[101]["assets"]) == 2
    no_token(result)
    # Following the advice finishes the swap.
    github.releases[101]["draft"] = False
    assert github.published(TAG)[0]["id"] == 101


def test_bad_token_is_reported_without_echoing_it(release_dir: Path, github: FakeGitHub) -> None:
    result = upload(release_dir, github, token="ghp_WRONG_SENTINEL_a1")
    assert result.returncode == github_release.GitHubError.exit_code
    assert "HTTP 401: Bad credentials" in result.stderr and "contents: write" in result.stderr and "nothing was changed" in result.stderr
    assert "ghp_WRONG_SENTINEL_a1" not in result.stdout + result.stderr


def test_missing_token(release_dir: Path, github: FakeGitHub) -> None:
    result = upload(release_dir, github, token=None)
    assert result.returncode == 2 and "set the environment variable GITHUB_TOKEN" in result.stderr
    assert github.calls == []


def test_unreachable_api(release_dir: Path) -> None:
    from release_helpers import free_port

    class Nowhere:
        url = f"http://127.0.0.1:{free_port()}"

    result = upload(release_dir, Nowhere)  # type: ignore[arg-type]
    assert result.returncode == github_release.GitHubError.exit_code
    assert "cannot reach the GitHub API" in result.stderr and "nothing was changed" in result.stderr
    no_token(result)


def test_changed_folder_and_mismatched_options_are_refused(release_dir: Path, github: FakeGitHub, tmp_path: Path) -> None:
    result = upload(release_dir, github, "--repo", "someone/else")
    assert result.returncode == 2 and f"--repo 'someone/else' differs from '{REPO}'" in result.stderr
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(release_dir, copy)
    victim = copy / asset_names(copy)[0]
    victim.write_bytes(victim.read_bytes() + b"x")
    result = upload(copy, github)
    assert result.returncode == 3 and "the folder changed after the pre-release step" in result.stderr
    (copy / "release.json").unlink()
    result = upload(copy, github)
    assert result.returncode == 3 and "has no release.json" in result.stderr
    assert github.calls == []
