"""Network steps never hang: a server that accepts the connection and never answers makes each step
fail within its bound (BNB_NETWORK_TIMEOUT_S, BNB_NETWORK_RETRIES), naming the URL that did not answer.

The silent server is real: a loopback TCP socket that accepts every connection, reads what the client
sends and never writes a byte back. The index that answers is a real pypiserver (release_helpers).
Each step runs as a subprocess with a hard wall-clock limit, so a step that hangs fails the test
instead of blocking it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from bitsandbytes_ci.host.install_toolkit import InstallError, InstallPlan, execute
from bnb_build import net, publish
from bnb_build.errors import UsageError
from bnb_build_helpers import _BOOT, PIPELINE_SRC, step_env
from release_helpers import COMMIT, REPO, PyPIServer, expect_json, start_pypiserver, wheel_set

TOKEN = "pypi-SENTINEL-timeouts-2b7d"
FAST = {net.TIMEOUT_ENV: "1", net.RETRIES_ENV: "1"}
BOUND_S = 45.0
"""What a failing step may take here: two tries of 1 s each, the 1 s backoff, twine's start twice, and margin."""
IN_PROCESS_BOUND_S = 60
"""pytest-timeout's limit for the tests that call the network code in this process."""


class SilentServer:
    """Accepts every TCP connection on 127.0.0.1, reads and discards what arrives, never answers."""

    def __init__(self, answer_after: Optional[int] = None, body: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.connections = 0
        self.answer_after = answer_after  # from this connection on (1-based), answer HTTP 200 with `body`
        self.body = body
        self.held: List[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.held.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(0.2)
        data = b""
        while not self.closed.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            if self.answer_after is not None and number >= self.answer_after and b"\r\n\r\n" in data:
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
                conn.sendall(head + self.body)
                conn.close()
                return

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture()
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[PyPIServer]:
    yield from start_pypiserver(tmp_path / "packages", TOKEN)


def run_bounded(args: List[str], cwd: Path, env: Dict[str, str]) -> "tuple[subprocess.CompletedProcess, float]":
    """``python3 -m bnb_build <args>``; fails the test if it runs past BOUND_S (it would have hung)."""
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-I", "-c", _BOOT, str(PIPELINE_SRC), *args], cwd=str(cwd), env=env,
                                capture_output=True, text=True, timeout=BOUND_S)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`bnb_build {args[0]}` was still waiting after {BOUND_S:g} s: a silent server made it hang ({e.stdout!r})")
    return result, time.monotonic() - started


def publish_env(**extra: str) -> Dict[str, str]:
    env = step_env(**{**FAST, **extra})
    for name in ("TWINE_PASSWORD", "TWINE_USERNAME", "GITHUB_TOKEN"):
        env.pop(name, None)
    env["PYPI_TOKEN"] = TOKEN
    return env


def prepare(work: Path) -> Path:
    wheel_set(work / "wheels", ["linux-x86_64"])
    expect_json(work / "expect.json")
    return work


def test_publish_fails_in_time_when_the_upload_url_never_answers(tmp_path: Path, index: PyPIServer, silent: SilentServer) -> None:
    """The index page answers (pypiserver); the upload URL accepts and stays silent: twine, which has
    no timeout, is ended, tried once more, and the step names the upload URL."""
    work = prepare(tmp_path / "work")
    result, took = run_bounded(["publish", "--wheels", "wheels", "--expect", "expect.json", "--repository-url", silent.url,
                                "--index-url", index.simple], work, publish_env())  # fmt: skip
    assert result.returncode == publish.PublishError.exit_code, result.stdout + result.stderr
    assert f"upload to {silent.url} did not answer" in result.stderr and "2 time(s)" in result.stderr, result.stderr
    assert "retry 1 of 1" in result.stdout
    assert silent.connections == 2, "twine reached the silent index once per try"
    assert index.files() == {}
    assert TOKEN not in result.stdout + result.stderr
    assert took < BOUND_S


def test_publish_fails_in_time_when_the_index_page_never_answers(tmp_path: Path, silent: SilentServer) -> None:
    work = prepare(tmp_path / "work")
    result, took = run_bounded(["publish", "--wheels", "wheels", "--expect", "expect.json", "--repository-url", silent.url], work, publish_env())
    assert result.returncode == publish.PublishError.exit_code, result.stdout + result.stderr
    page = f"{silent.url}simple/bitsandbytes/"
    assert f"cannot reach the index {page}" in result.stderr and "no answer within 1 s, 2 time(s)" in result.stderr, result.stderr
    assert "Nothing was uploaded" in result.stderr and silent.connections == 2
    assert took < 20, "two tries of 1 s and a backoff of 1 s, not the default 60 s"


def test_github_release_fails_in_time_when_the_api_never_answers(tmp_path: Path, silent: SilentServer) -> None:
    work = tmp_path / "release"
    wheel_set(work / "wheels", ["linux-x86_64"])
    made, _ = run_bounded(["pre-release", "--wheels", "wheels", "--out", "out", "--commit", COMMIT, "--repo", REPO,
                           "--expect-platforms", "linux-x86_64"], work, step_env())  # fmt: skip
    assert made.returncode == 0, made.stderr
    env = step_env(**FAST, GITHUB_TOKEN="ghp_SENTINEL_timeouts")
    result, took = run_bounded(["github-release", "--release-dir", "out", "--api-url", silent.url.rstrip("/")], work, env)
    assert result.returncode == 10, result.stdout + result.stderr
    url = f"{silent.url}repos/{REPO}/releases/tags/continuous-release_main"
    assert f"GET {url}: no answer within 1 s, 2 time(s)" in result.stderr and "nothing was changed" in result.stderr, result.stderr
    assert "ghp_SENTINEL_timeouts" not in result.stdout + result.stderr
    assert took < 20


@pytest.mark.timeout(IN_PROCESS_BOUND_S)
def test_a_toolkit_download_fails_in_time_naming_the_url(tmp_path: Path, silent: SilentServer) -> None:
    url = f"{silent.url}compute/cuda/redist/redistrib_13.4.1.json"
    plan = InstallPlan("cuda134-windows-arm64", "nvidia-installer", downloads=[(url, "setup.exe")], commands=[["{download:setup.exe}"]])
    ran: list = []
    started = time.monotonic()
    with pytest.raises(InstallError) as failed:
        execute(plan, run=lambda argv, quiet=False: ran.append(argv) or "", env={net.TIMEOUT_ENV: "0.5", net.RETRIES_ENV: "1"})
    assert time.monotonic() - started < 10
    assert f"cannot download {url}" in str(failed.value) and "no answer within 0.5 s, 2 time(s)" in str(failed.value)
    assert ran == [] and silent.connections == 2


@pytest.mark.timeout(IN_PROCESS_BOUND_S)
def test_a_download_that_answers_on_the_retry_succeeds(tmp_path: Path) -> None:
    server = SilentServer(answer_after=2, body=b"toolkit bytes")
    logged: List[str] = []
    try:
        net.download(server.url + "archive.zip", tmp_path / "archive.zip", net.Limits(0.5, 2), log=logged.append)
    finally:
        server.close()
    assert (tmp_path / "archive.zip").read_bytes() == b"toolkit bytes"
    assert not (tmp_path / "archive.zip.part").exists()
    assert server.connections == 2 and len(logged) == 1
    assert f"GET {server.url}archive.zip: no answer within 0.5 s; trying again in 1 s (retry 1 of 2)" in logged[0]


@pytest.mark.timeout(IN_PROCESS_BOUND_S)
def test_a_post_that_was_sent_is_not_repeated(silent: SilentServer) -> None:
    """Repeating a POST that reached the server could create a second release or asset."""
    import urllib.request

    req = urllib.request.Request(silent.url + "repos/o/r/releases?token=SECRET", data=b"{}", method="POST")
    with pytest.raises(net.NetworkError) as failed:
        net.call(lambda t: net.urlopen(req, t), method="POST", url=req.full_url, limits=net.Limits(0.5, 3), log=lambda text: None)
    assert silent.connections == 1
    message = str(failed.value)
    assert f"POST {silent.url}repos/o/r/releases: no answer within 0.5 s; not repeated" in message and "SECRET" not in message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({net.TIMEOUT_ENV: "soon"}, "BNB_NETWORK_TIMEOUT_S='soon' is not a positive number of seconds"),
        ({net.TIMEOUT_ENV: "0"}, "BNB_NETWORK_TIMEOUT_S='0' is not a positive number of seconds"),
        ({net.RETRIES_ENV: "-1"}, "BNB_NETWORK_RETRIES='-1' is not a whole number from 0 to 10"),
        ({net.RETRIES_ENV: "99"}, "BNB_NETWORK_RETRIES='99' is not a whole number from 0 to 10"),
    ],
)
def test_bad_limits_are_refused_naming_the_value(env: Dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        net.limits_from_env(env)
    assert net.limits_from_env({}) == net.Limits(60.0, 2)
    assert net.limits_from_env({net.TIMEOUT_ENV: "2.5", net.RETRIES_ENV: "0"}) == net.Limits(2.5, 0)


def test_publish_refuses_a_bad_timeout_before_any_network_call(tmp_path: Path, silent: SilentServer) -> None:
    work = prepare(tmp_path / "work")
    env = publish_env(**{net.TIMEOUT_ENV: "forever"})
    result, _ = run_bounded(["publish", "--wheels", "wheels", "--expect", "expect.json", "--repository-url", silent.url], work, env)
    assert result.returncode == 2 and "BNB_NETWORK_TIMEOUT_S='forever'" in result.stderr, result.stderr
    assert silent.connections == 0



def test_a_server_error_on_an_idempotent_call_is_retried(tmp_path: Path) -> None:
    """GitHub answers 503 once to the call that publishes the draft (a PATCH): the step tries it again
    after the backoff and the release is published (the fake GitHub of test_github_release)."""
    from test_github_release import TAG, TOKEN as GITHUB_TOKEN, FakeGitHub

    work = tmp_path / "release"
    wheel_set(work / "wheels", ["linux-x86_64"])
    made, _ = run_bounded(["pre-release", "--wheels", "wheels", "--out", "out", "--commit", COMMIT, "--repo", REPO,
                           "--expect-platforms", "linux-x86_64"], work, step_env())  # fmt: skip
    assert made.returncode == 0, made.stderr
    github = FakeGitHub()
    try:
        github.fail = (rf"PATCH /repos/{REPO}/releases/\d+", 503)
        env = step_env(**FAST, GITHUB_TOKEN=GITHUB_TOKEN)
        result, _ = run_bounded(["github-release", "--release-dir", "out", "--api-url", github.url], work, env)
        assert result.returncode == 0, result.stdout + result.stderr
        patches = [c for c in github.calls if c.startswith("PATCH") and "/releases/" in c]
        assert len(patches) == 2 and "HTTP 503; trying again in 1 s (retry 1 of 1)" in result.stdout
        assert github.published(TAG)
    finally:
        github.close()
