"""bnb_build.publish against a real pypiserver on 127.0.0.1: verify, upload with twine, skip existing.

The index is pypiserver (started by these tests, uploads accepted only for user ``__token__`` with the
test's token). twine is reached through a recorded PATH shim that logs its argv before exec'ing the
real twine, so the tests can prove the token never appears on a command line. The GitHub OIDC and
PyPI token-minting endpoints of trusted publishing are a fake (``FakeTrustedPublishing``): nothing
else can run them here.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List
from urllib.parse import parse_qs, urlsplit

import pytest

from bnb_build import publish
from bnb_build.errors import CorruptWheel
from bnb_build_helpers import cpu_wheel, run_step, step_env
from release_helpers import (
    PyPIServer,
    expect_json,
    free_port,
    fresh_venv,
    numpy_links,
    pip_install,
    retag,
    round_trip,
    shim_path,
    start_pypiserver,
    wheel_set,
)

SENTINEL = "pypi-SENTINEL-7f3a9c0e-do-not-print"


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[PyPIServer]:
    yield from start_pypiserver(tmp_path / "packages", SENTINEL)


def publish_run(work: Path, url: str, *, token: str | None = SENTINEL, extra_env: Dict[str, str] | None = None, args: List[str] | None = None):
    """Run the publish step in ``work`` (wheels/, expect.json) with twine behind a recorded shim."""
    env = step_env()
    for name in ("PYPI_TOKEN", "TWINE_PASSWORD", "TWINE_USERNAME"):
        env.pop(name, None)
    if token is not None:
        env["PYPI_TOKEN"] = token
    env.update(extra_env or {})
    env["PATH"] = shim_path(work / "shim", "twine", work / "twine-argv.log", env)
    return run_step(["publish", "--wheels", "wheels", "--expect", "expect.json", "--repository-url", url, *(args or [])], work, env)


def twine_calls(work: Path) -> List[dict]:
    log = work / "twine-argv.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def assert_no_secret(work: Path, result, *secrets: str) -> None:
    texts = [result.stdout, result.stderr, (work / "twine-argv.log").read_text() if (work / "twine-argv.log").exists() else ""]
    for secret in secrets:
        for text in texts:
            assert secret not in text


def prepare(work: Path, platforms=("linux-x86_64",)) -> Path:
    wheel_set(work / "wheels", list(platforms))
    expect_json(work / "expect.json")
    return work


def test_publish_uploads_then_is_a_noop_and_pip_installs_from_the_index(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    first = publish_run(work, index.url)
    assert first.returncode == 0, first.stdout + first.stderr
    name = cpu_wheel().name
    assert list(index.files()) == [name]
    assert publish.file_sha256(work / "wheels" / name) in first.stdout  # hashes printed
    [call] = twine_calls(work)
    assert call["argv"][1:4] == ["--no-color", "upload", "--non-interactive"] and call["has_password"] and call["leaked_env"] == []
    stamp = index.files()

    second = publish_run(work, index.url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to upload" in second.stdout and "already on the index (same sha256)" in second.stdout
    assert index.files() == stamp  # not uploaded again
    assert len(twine_calls(work)) == 1
    assert_no_secret(work, first, SENTINEL)
    assert_no_secret(work, second, SENTINEL)

    python = fresh_venv(tmp_path / "venv")
    installed = pip_install(python, "--index-url", index.simple, "--find-links", str(numpy_links()), "bitsandbytes==" + name.split("-")[1])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "round trip of" in round_trip(python, tmp_path)


def test_wrong_token_fails_without_printing_it(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    wrong = "pypi-WRONG-SENTINEL-91b2"
    result = publish_run(work, index.url, token=wrong)
    assert result.returncode == publish.PublishError.exit_code
    assert "403" in result.stdout + result.stderr and "upload to" in result.stderr
    assert index.files() == {}
    assert twine_calls(work) and all(wrong not in " ".join(c["argv"]) for c in twine_calls(work))
    assert_no_secret(work, result, wrong)


def test_missing_token_is_refused_before_any_upload(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    result = publish_run(work, index.url, token=None)
    assert result.returncode == 2
    assert "no upload token: set PYPI_TOKEN or TWINE_PASSWORD" in result.stderr
    assert twine_calls(work) == [] and index.files() == {}


def test_unreachable_index(tmp_path: Path) -> None:
    work = prepare(tmp_path / "work")
    url = f"http://127.0.0.1:{free_port()}/"
    result = publish_run(work, url)
    assert result.returncode == publish.PublishError.exit_code
    assert f"cannot reach the index {url}simple/bitsandbytes/" in result.stderr and "Nothing was uploaded" in result.stderr
    assert twine_calls(work) == []
    assert_no_secret(work, result, SENTINEL)


def test_wheel_with_a_wrong_tag_stops_every_upload(tmp_path: Path, index: PyPIServer) -> None:
    work = tmp_path / "work"
    (work / "wheels").mkdir(parents=True)
    retag(cpu_wheel(), "manylinux_2_34_x86_64", work / "wheels")
    expect_json(work / "expect.json")
    result = publish_run(work, index.url)
    assert result.returncode == 9
    assert "platform tag manylinux_2_34_x86_64, the plan built linux-x86_64 as manylinux_2_28_x86_64" in result.stderr
    assert "nothing was written or uploaded" in result.stderr
    assert twine_calls(work) == [] and index.files() == {}


def test_one_bad_wheel_means_nothing_is_uploaded(tmp_path: Path, index: PyPIServer) -> None:
    """A wheel whose WHEEL metadata disagrees with its name, next to a good one: nothing goes up."""
    work = prepare(tmp_path / "work", platforms=("linux-x86_64",))
    retag(cpu_wheel(), "macosx_14_0_arm64", work / "wheels", wheel_tag="manylinux_2_28_x86_64")
    result = publish_run(work, index.url)
    assert result.returncode == 9
    assert "WHEEL metadata lists tags ['py3-none-manylinux_2_28_x86_64'], the file name says ['py3-none-macosx_14_0_arm64']" in result.stderr
    assert twine_calls(work) == [] and index.files() == {}


def test_a_corrupt_wheel_is_refused_before_any_upload(tmp_path: Path, index: PyPIServer) -> None:
    """A file named like a wheel but no zip archive, next to a good wheel: exit code 2, nothing goes up."""
    work = prepare(tmp_path / "work")
    corrupt = work / "wheels" / cpu_wheel().name.replace("manylinux_2_28_x86_64", "win_amd64")
    corrupt.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    result = publish_run(work, index.url)
    assert result.returncode == CorruptWheel.exit_code == 2, result.stdout + result.stderr
    assert f"wheels/{corrupt.name} (" in result.stderr and "not a readable wheel (zip archive)" in result.stderr
    assert "Traceback" not in result.stderr and "nothing was written or uploaded" in result.stderr
    assert twine_calls(work) == [] and index.files() == {}
    assert_no_secret(work, result, SENTINEL)


def test_duplicate_platforms_are_refused(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    retag(cpu_wheel(), "manylinux_2_31_x86_64", work / "wheels")
    result = publish_run(work, index.url)
    assert result.returncode == 9
    assert "2 wheels for linux-x86_64" in result.stderr and "exactly one per platform" in result.stderr
    assert twine_calls(work) == [] and index.files() == {}


def test_audit_violation_blocks_the_upload(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    spec = json.loads((work / "expect.json").read_text())
    spec["wheels"]["linux-x86_64"]["libraries"]["libbitsandbytes_cuda130.so"] = {"backend": "cuda", "archs": ["90"]}
    (work / "expect.json").write_text(json.dumps(spec))
    result = publish_run(work, index.url)
    assert result.returncode == 9
    assert "audit: bitsandbytes-" in result.stderr and "expected library libbitsandbytes_cuda130.so is missing" in result.stderr
    assert twine_calls(work) == [] and index.files() == {}


def test_placeholder_wheels_are_never_published(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    pre = run_step(["pre-release", "--wheels", "wheels", "--out", "out", "--commit", "0" * 40, "--repo", "o/r", "--expect-platforms", "linux-x86_64"], work)
    assert pre.returncode == 0, pre.stderr
    result = run_step(["publish", "--wheels", "out", "--expect", "expect.json", "--repository-url", index.url], work, dict(step_env(), PYPI_TOKEN=SENTINEL))
    assert result.returncode == 9 and "placeholder version 1.33.7.preview" in result.stderr


def test_index_with_a_different_file_of_the_same_name(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    other = tmp_path / "other"
    other.mkdir()
    retag(cpu_wheel(), "manylinux_2_28_x86_64", other)  # same name, other bytes
    [name] = [p.name for p in other.iterdir()]
    (index.packages / name).write_bytes((other / name).read_bytes())
    result = publish_run(work, index.url)
    assert result.returncode == publish.PublishError.exit_code
    assert f"already holds {name} with sha256" in result.stderr and "release a new version" in result.stderr
    assert twine_calls(work) == []


# ----------------------------------------------------------------------------------------------
# Trusted publishing

OIDC_REQUEST_TOKEN = "ghs-REQUEST-SENTINEL-5d1c"
OIDC_JWT = "eyJ-OIDC-SENTINEL-JWT-0b7e"


class FakeTrustedPublishing:
    """A fake of the two web services trusted publishing talks to: GitHub's OIDC token endpoint
    (``/oidc-token``) and an index's ``/_/oidc/audience`` and ``/_/oidc/mint-token``. The token it
    mints is the one the real pypiserver accepts."""

    def __init__(self, minted: str) -> None:
        self.minted = minted
        self.calls: List[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                fake.calls.append(f"GET {parts.path}")
                if parts.path == "/_/oidc/audience":
                    self.reply(200, {"audience": "testpypi-audience"})
                elif parts.path == "/oidc-token":
                    ok = self.headers.get("Authorization") == f"bearer {OIDC_REQUEST_TOKEN}"
                    ok = ok and parse_qs(parts.query) == {"api-version": ["2.0"], "audience": ["testpypi-audience"]}
                    self.reply(200, {"value": OIDC_JWT}) if ok else self.reply(403, {"message": "bad request token"})
                else:
                    self.reply(404, {"message": "not found"})

            def do_POST(self) -> None:
                fake.calls.append(f"POST {self.path}")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/_/oidc/mint-token" and body == {"token": OIDC_JWT}:
                    self.reply(200, {"success": True, "token": fake.minted})
                else:
                    self.reply(422, {"message": "invalid-publisher", "errors": [{"code": "invalid-publisher", "description": f"no trusted publisher for {body}"}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_oidc() -> Iterator[FakeTrustedPublishing]:
    fake = FakeTrustedPublishing(SENTINEL)
    yield fake
    fake.close()


def test_trusted_publishing_mints_the_token_and_uploads(tmp_path: Path, index: PyPIServer, fake_oidc: FakeTrustedPublishing) -> None:
    work = prepare(tmp_path / "work")
    env = {"ACTIONS_ID_TOKEN_REQUEST_URL": f"{fake_oidc.url}/oidc-token?api-version=2.0", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": OIDC_REQUEST_TOKEN}
    result = publish_run(work, index.url, token=None, extra_env=env, args=["--trusted-publishing", "--oidc-url", fake_oidc.url])
    assert result.returncode == 0, result.stdout + result.stderr
    assert fake_oidc.calls == ["GET /_/oidc/audience", "GET /oidc-token", "POST /_/oidc/mint-token"]
    assert list(index.files()) == [cpu_wheel().name]
    [call] = twine_calls(work)
    assert call["has_password"] and call["leaked_env"] == []  # the request token never reaches twine
    assert_no_secret(work, result, SENTINEL, OIDC_REQUEST_TOKEN, OIDC_JWT)


def test_trusted_publishing_needs_the_actions_variables(tmp_path: Path, index: PyPIServer) -> None:
    work = prepare(tmp_path / "work")
    result = publish_run(work, index.url, token=None, args=["--trusted-publishing"])
    assert result.returncode == 2
    assert "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN" in result.stderr and "id-token: write" in result.stderr


def test_trusted_publishing_rejected_by_the_index(tmp_path: Path, index: PyPIServer, fake_oidc: FakeTrustedPublishing) -> None:
    work = prepare(tmp_path / "work")
    env = {"ACTIONS_ID_TOKEN_REQUEST_URL": f"{fake_oidc.url}/oidc-token?api-version=2.0", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "ghs-wrong-request-token"}
    result = publish_run(work, index.url, token=None, extra_env=env, args=["--trusted-publishing", "--oidc-url", fake_oidc.url])
    assert result.returncode == publish.PublishError.exit_code
    assert "GitHub OIDC token" in result.stderr and "HTTP 403" in result.stderr
    assert_no_secret(work, result, "ghs-wrong-request-token")
    assert twine_calls(work) == [] and index.files() == {}


# ----------------------------------------------------------------------------------------------
# Pure parts


def test_twine_argv_has_no_credentials_and_skip_existing_only_for_warehouse() -> None:
    files = [Path("wheels/a.whl")]
    assert publish.twine_argv("twine", "http://127.0.0.1:1/", files) == [
        "twine", "--no-color", "upload", "--non-interactive", "--disable-progress-bar", "--repository-url", "http://127.0.0.1:1/", "wheels/a.whl",
    ]  # fmt: skip
    assert "--skip-existing" in publish.twine_argv("twine", "https://upload.pypi.org/legacy/", files)
    env = publish.twine_env({"PATH": "/bin", "PYPI_TOKEN": "x", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "y", "GITHUB_TOKEN": "z"}, "__token__", "tok")
    assert env == {"PATH": "/bin", "TWINE_USERNAME": "__token__", "TWINE_PASSWORD": "tok", "TWINE_NON_INTERACTIVE": "1", "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}


def test_index_urls() -> None:
    assert publish.simple_index_url("https://upload.pypi.org/legacy/") == "https://pypi.org/simple/"
    assert publish.simple_index_url("https://test.pypi.org/legacy/") == "https://test.pypi.org/simple/"
    assert publish.simple_index_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/simple/"
    assert publish.oidc_index_url("https://upload.pypi.org/legacy/") == "https://pypi.org"
    assert publish.oidc_index_url("https://test.pypi.org/legacy/") == "https://test.pypi.org"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repository-url", "ftp://x/"], "--repository-url 'ftp://x/' is not an http(s) URL"),
        (["--repository-url", "https://user:pw@example.org/"], "must not hold credentials"),
        (["--oidc-url", "https://pypi.org"], "--oidc-url is only used with --trusted-publishing"),
    ],
)
def test_bad_options(tmp_path: Path, args: List[str], message: str) -> None:
    expect_json(tmp_path / "expect.json")
    with pytest.raises(publish.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        publish.parse_args(["--wheels", "w", "--expect", str(tmp_path / "expect.json"), *args])
