"""Step ``publish``: verify every wheel, then upload them to PyPI (or any index) with twine.

Command line (docs/contracts.md)::

    PYPI_TOKEN=... python3 -m bnb_build publish --wheels wheels --expect expect.json
                                                [--repository-url https://upload.pypi.org/legacy/]
                                                [--index-url https://pypi.org/simple/]
                                                [--trusted-publishing [--oidc-url https://pypi.org]]

Order of work:

1. verify: every wheel is a readable zip archive (else the step stops with exit code 2 naming the
   file) and consistent (name, version, tags, METADATA, ``.dist-info``), there is one
   per platform of ``expect.json`` and none else, all share one version that is not the pre-release
   placeholder, and the audit (``bnb_build.audit`` against ``expect.json``) finds no violation. If
   anything fails, nothing is uploaded;
2. print the sha256 of every file;
3. the token: from ``PYPI_TOKEN`` or ``TWINE_PASSWORD`` (user ``TWINE_USERNAME``, default
   ``__token__``); or, with ``--trusted-publishing``, a short-lived PyPI token minted from the
   GitHub OIDC token (``ACTIONS_ID_TOKEN_REQUEST_URL`` / ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``);
4. skip-existing: the index's simple page of the project (``--index-url``, PEP 503) says which
   files it already has; those are skipped (a file of the same name with another sha256 is an
   error), so publishing a release again is a no-op that succeeds. (twine's own ``--skip-existing``
   works for PyPI and TestPyPI only; it is added there too, against races.)
5. ``twine upload --non-interactive ...`` of the remaining files.

Every network call has a timeout and bounded retries (``BNB_NETWORK_TIMEOUT_S``, ``BNB_NETWORK_RETRIES``;
``bnb_build.net``). twine has no timeout of its own: a watchdog ends it when it stays silent longer
than the timeout plus its largest file at the slowest rate, then the step asks the index again what it
has and uploads the rest (a retry), and finally fails naming the upload URL.

Secrets travel in the environment only: twine gets the token as ``TWINE_PASSWORD`` (never in its
argv), the environment it gets drops the other credentials, and every line printed (twine's output,
errors) is scrubbed of every secret.
"""

from __future__ import annotations

import argparse
import base64
import collections
import html.parser
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence

from . import net, process
from .errors import StepError, ToolNotFound, UsageError, join_argv, redact, run_step
from .inputs import file_sha256
from .release import Expected, check_wheel_set, expected_from_file

DEFAULT_REPOSITORY_URL = "https://upload.pypi.org/legacy/"
TOKEN_ENVS = ("PYPI_TOKEN", "TWINE_PASSWORD")
OIDC_URL_ENV = "ACTIONS_ID_TOKEN_REQUEST_URL"
OIDC_TOKEN_ENV = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
# Credentials twine must not inherit (it gets exactly the one it needs as TWINE_PASSWORD).
DROPPED_ENV = ("PYPI_TOKEN", "TWINE_PASSWORD", "TWINE_USERNAME", OIDC_URL_ENV, OIDC_TOKEN_ENV, "GITHUB_TOKEN", "GH_TOKEN")
TWINE_START_S = 60.0
"""How long twine may take to start and name the index it uploads to (its first line of output)."""


class PublishError(StepError):
    """Verification, the token exchange or the upload failed; the message says what to do."""

    exit_code = 11


# ----------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class PublishJob:
    wheels: Path
    expected: Expected
    repository_url: str
    index_url: str
    trusted_publishing: bool
    oidc_url: Optional[str]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bnb_build publish", description="Verify wheels, then upload them with twine (--skip-existing).")
    p.add_argument("--wheels", required=True, type=Path, help="folder with one wheel per platform")
    p.add_argument("--expect", required=True, type=Path, help="expect.json of the plan (the audit step's)")
    p.add_argument("--repository-url", default=DEFAULT_REPOSITORY_URL, help=f"upload URL of the index (default: {DEFAULT_REPOSITORY_URL})")
    p.add_argument("--index-url", help="simple index (PEP 503) that lists the uploaded files, for skip-existing (default: pypi.org/simple for PyPI, else <repository-url>/simple/)")
    p.add_argument("--trusted-publishing", action="store_true", help=f"mint a PyPI token from the GitHub OIDC token (${OIDC_URL_ENV}, ${OIDC_TOKEN_ENV})")
    p.add_argument("--oidc-url", help="index that mints the token (default: derived from --repository-url, e.g. https://pypi.org)")
    return p


def parse_args(argv: Sequence[str]) -> PublishJob:
    ns = _parser().parse_args(list(argv))
    url = ns.repository_url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"--repository-url {url!r} is not an http(s) URL; e.g. {DEFAULT_REPOSITORY_URL} or http://127.0.0.1:8080/"
        raise UsageError(msg)
    if parts.username or parts.password:
        msg = "--repository-url must not hold credentials; pass the token in the environment (PYPI_TOKEN)"
        raise UsageError(msg)
    if ns.oidc_url and not ns.trusted_publishing:
        msg = "--oidc-url is only used with --trusted-publishing"
        raise UsageError(msg)
    index = ns.index_url or simple_index_url(url)
    if urllib.parse.urlsplit(index).scheme not in ("http", "https"):
        msg = f"--index-url {index!r} is not an http(s) URL; e.g. https://pypi.org/simple/"
        raise UsageError(msg)
    return PublishJob(ns.wheels, expected_from_file(ns.expect), url, index, ns.trusted_publishing, ns.oidc_url)


def simple_index_url(repository_url: str) -> str:
    """The simple index listing what ``repository_url`` received: PyPI's and TestPyPI's, else ``<url>/simple/``."""
    parts = urllib.parse.urlsplit(repository_url)
    if parts.hostname == "upload.pypi.org":
        return "https://pypi.org/simple/"
    if parts.hostname == "test.pypi.org":
        return "https://test.pypi.org/simple/"
    base = repository_url if repository_url.endswith("/") else repository_url + "/"
    return urllib.parse.urljoin(base, "simple/")


def is_warehouse(repository_url: str) -> bool:
    """PyPI or TestPyPI: where twine's own --skip-existing works."""
    return repository_url.startswith(("https://upload.pypi.org/", "https://test.pypi.org/"))


# ----------------------------------------------------------------------------------------------
# What the index already has


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: List[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def existing_files(index_url: str, project: str, *, auth: Optional[str], secrets: Sequence[str], limits: net.Limits = net.Limits()) -> Dict[str, Optional[str]]:
    """``{file name: sha256 or None}`` the index lists for ``project``; empty when it has no such project."""
    url = urllib.parse.urljoin(index_url if index_url.endswith("/") else index_url + "/", f"{project}/")
    req = urllib.request.Request(url, headers={"Accept": "text/html", "User-Agent": "bnb-build-publish"})
    if auth:
        req.add_header("Authorization", f"Basic {auth}")
    try:
        status, raw = net.call(lambda timeout: net.urlopen(req, timeout), method="GET", url=url, limits=limits, what="the index page")
    except net.NetworkError as e:
        msg = f"cannot reach the index {url} ({e}); check --repository-url / --index-url and the network. Nothing was uploaded."
        raise PublishError(redact(msg, secrets)) from None
    if status == 404:
        return {}
    if status >= 400:
        msg = f"cannot read the index page {url}: HTTP {status}; pass --index-url of the simple index the uploads appear in"
        raise PublishError(redact(msg, secrets))
    page = raw.decode("utf-8", errors="replace")
    parser = _Links()
    parser.feed(page)
    found: Dict[str, Optional[str]] = {}
    for href in parser.hrefs:
        path, _, fragment = href.partition("#")
        name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
        algo, _, digest = fragment.partition("=")
        found[name] = digest.lower() if algo == "sha256" and digest else None
    return found


# ----------------------------------------------------------------------------------------------
# Credentials


def static_token(env: Mapping[str, str]) -> str:
    for name in TOKEN_ENVS:
        value = env.get(name, "").strip()
        if value:
            return value
    msg = (
        f"no upload token: set {' or '.join(TOKEN_ENVS)} in the environment (a PyPI API token, "
        "or the index's password), or use --trusted-publishing in GitHub Actions"
    )
    raise UsageError(msg)


def oidc_index_url(repository_url: str) -> str:
    """The index that mints tokens for an upload URL: upload.pypi.org -> pypi.org, else scheme://host."""
    parts = urllib.parse.urlsplit(repository_url)
    host = parts.netloc
    if parts.hostname == "upload.pypi.org":
        host = "pypi.org"
    return f"{parts.scheme}://{host}"


def _http_json(method: str, url: str, *, headers: Mapping[str, str], body: Any = None, secrets: Sequence[str], what: str,
               limits: net.Limits = net.Limits()) -> Any:  # fmt: skip
    data = json.dumps(body).encode("utf-8") if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    for key, value in headers.items():
        req.add_header(key, value)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    shown = net.display_url(url)
    try:
        status, raw = net.call(lambda timeout: net.urlopen(req, timeout), method=method, url=url, limits=limits, what=what)
    except net.NetworkError as e:
        msg = f"{what}: cannot reach {shown} ({e})"
        raise PublishError(redact(msg, secrets)) from None
    if status >= 400:
        detail = raw.decode("utf-8", errors="replace")[:500]
        msg = f"{what}: {method} {shown} answered HTTP {status}: {detail}"
        raise PublishError(redact(msg, secrets))
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError:
        msg = f"{what}: {shown} did not answer JSON"
        raise PublishError(msg) from None


def trusted_publishing_token(env: Mapping[str, str], index_url: str, limits: net.Limits = net.Limits()) -> str:
    """Exchange the GitHub Actions OIDC token for a short-lived upload token of the index."""
    request_url, request_token = env.get(OIDC_URL_ENV, ""), env.get(OIDC_TOKEN_ENV, "")
    if not request_url or not request_token:
        missing = [n for n, v in ((OIDC_URL_ENV, request_url), (OIDC_TOKEN_ENV, request_token)) if not v]
        msg = (
            f"--trusted-publishing needs {' and '.join(missing)} in the environment: GitHub Actions sets them in a job "
            "with `permissions: id-token: write`; pass them to the container as secrets"
        )
        raise UsageError(msg)
    secrets = [request_token]
    index = index_url.rstrip("/")
    audience = _http_json("GET", f"{index}/_/oidc/audience", headers={}, secrets=secrets, what="trusted publishing (audience)", limits=limits).get("audience")
    if not isinstance(audience, str) or not audience:
        msg = f"trusted publishing: {index}/_/oidc/audience named no audience; does the index support trusted publishing?"
        raise PublishError(msg)
    parts = urllib.parse.urlsplit(request_url)
    query = urllib.parse.urlencode(urllib.parse.parse_qsl(parts.query) + [("audience", audience)])
    oidc = _http_json(
        "GET",
        urllib.parse.urlunsplit(parts[:3] + (query, "")),
        headers={"Authorization": f"bearer {request_token}"},
        secrets=secrets,
        what="trusted publishing (GitHub OIDC token)",
        limits=limits,
    ).get("value")
    if not isinstance(oidc, str) or not oidc:
        msg = "trusted publishing: GitHub answered no OIDC token (`value`)"
        raise PublishError(msg)
    secrets.append(oidc)
    minted = _http_json("POST", f"{index}/_/oidc/mint-token", headers={}, body={"token": oidc}, secrets=secrets, what="trusted publishing (mint token)", limits=limits)
    token = minted.get("token") if isinstance(minted, dict) else None
    if not isinstance(token, str) or not token:
        detail = redact(json.dumps(minted)[:500], secrets)
        msg = f"trusted publishing: {index} minted no token: {detail}; is this repository and workflow a trusted publisher of the project?"
        raise PublishError(msg)
    print(f"trusted publishing: minted a short-lived upload token from {index} (audience {audience})", flush=True)
    return token


# ----------------------------------------------------------------------------------------------
# twine


def twine_argv(twine: str, repository_url: str, files: Sequence[Path]) -> List[str]:
    """The upload command: no credential in it (they are TWINE_USERNAME/TWINE_PASSWORD)."""
    skip = ["--skip-existing"] if is_warehouse(repository_url) else []
    return [twine, "--no-color", "upload", "--non-interactive", *skip, "--disable-progress-bar", "--repository-url", repository_url, *map(str, files)]


def twine_env(env: Mapping[str, str], username: str, token: str) -> Dict[str, str]:
    result = {k: v for k, v in env.items() if k not in DROPPED_ENV}
    result.update(
        TWINE_USERNAME=username,
        TWINE_PASSWORD=token,
        TWINE_NON_INTERACTIVE="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    return result


class TwineSilent(PublishError):
    """twine said nothing for longer than its watchdog allows (the index accepted the connection and
    never answered, or the network stalled); it was ended."""


def run_scrubbed(argv: Sequence[str], env: Mapping[str, str], secrets: Sequence[str], *, silence_s: Optional[float] = None,
                 start_s: float = TWINE_START_S) -> str:  # fmt: skip
    """Run ``argv``, passing its output through with every secret replaced; raise on failure. With
    ``silence_s``, a watchdog ends the tool when it prints nothing for that long (``start_s`` before
    its first line) and raises TwineSilent."""
    print(f"+ {redact(join_argv(argv), secrets)}", flush=True)
    tail: Deque[str] = collections.deque(maxlen=process.TAIL_LINES)
    lines: List[str] = []
    try:
        proc = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except FileNotFoundError as e:
        msg = f"cannot run {argv[0]}: {e.strerror}"
        raise ToolNotFound(msg) from None
    assert proc.stdout is not None
    out: "queue.Queue[Optional[bytes]]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            out.put(raw)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = None if silence_s is None else time.monotonic() + max(start_s, silence_s)
    silent = False
    while True:
        try:
            raw = out.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            silent = True
            proc.kill()
            break
        if raw is None:
            break
        line = redact(raw.decode("utf-8", errors="replace").rstrip("\r\n"), secrets)
        print(line, flush=True)
        tail.append(line)
        lines.append(line)
        if silence_s is not None:
            deadline = time.monotonic() + silence_s
    code = proc.wait()
    proc.stdout.close()
    if silent:
        msg = f"twine printed nothing for {silence_s:.1f} s and was ended (its last line: {tail[-1] if tail else '(none)'})"
        raise TwineSilent(msg)
    if code != 0:
        shown = "\n".join("    " + line for line in tail) or "    (no output)"
        msg = f"twine upload exited with code {code}:\n{shown}"
        raise PublishError(msg)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The step


def publish(job: PublishJob, env: Mapping[str, str]) -> List[Path]:
    infos = check_wheel_set(job.wheels, job.expected, env)
    files = sorted(info.path for info in infos)
    version = infos[0].version
    sums = {path.name: file_sha256(path) for path in files}
    print(f"verified {len(files)} wheel(s) of bitsandbytes {version}; sha256:", flush=True)
    for path in files:
        print(f"  {sums[path.name]}  {path.name}", flush=True)

    limits = net.limits_from_env(env)
    if job.trusted_publishing:
        token, username = trusted_publishing_token(env, job.oidc_url or oidc_index_url(job.repository_url), limits), "__token__"
    else:
        token, username = static_token(env), env.get("TWINE_USERNAME", "").strip() or "__token__"
    secrets = [token] + [env.get(n, "") for n in DROPPED_ENV if n != "TWINE_USERNAME"]
    twine = process.find_tool("twine", env)

    same_host = urllib.parse.urlsplit(job.index_url).netloc == urllib.parse.urlsplit(job.repository_url).netloc
    auth = base64.b64encode(f"{username}:{token}".encode("utf-8")).decode("ascii") if same_host else None
    secrets.append(auth or "")
    project = infos[0].name.lower().replace("_", "-")
    uploaded = 0
    for attempt in range(limits.retries + 1):
        on_index = existing_files(job.index_url, project, auth=auth, secrets=secrets, limits=limits)
        todo = []
        for path in files:
            if path.name not in on_index:
                todo.append(path)
                continue
            listed = on_index[path.name]
            if listed is not None and listed != sums[path.name]:
                msg = (
                    f"{job.index_url} already holds {path.name} with sha256 {listed}, but this file has {sums[path.name]}; "
                    "an index never replaces a file: release a new version. Nothing was uploaded."
                )
                raise PublishError(msg)
            if attempt == 0:
                print(f"skipping {path.name}: already on the index" + (" (same sha256)" if listed else ""), flush=True)
        if not todo:
            if attempt:
                print(f"the index lists every wheel now: the upload that did not answer in time went through", flush=True)
                uploaded = -1
            break
        silence = limits.transfer_timeout(max(path.stat().st_size for path in todo))
        try:
            run_scrubbed(twine_argv(twine, job.repository_url, todo), twine_env(env, username, token), secrets, silence_s=silence)
        except TwineSilent as e:
            if attempt < limits.retries:
                wait = net.backoff(attempt + 1)
                print(f"upload to {job.repository_url}: {e}; asking the index what it has and trying again in {wait:g} s "
                      f"(retry {attempt + 1} of {limits.retries})", flush=True)  # fmt: skip
                time.sleep(wait)
                continue
            msg = (
                f"upload to {job.repository_url} did not answer: {e}, {limits.retries + 1} time(s) ({limits.describe()}).\n"
                "check that the index is reachable; files uploaded before stay, and rerunning is safe (files already on the index are skipped)"
            )
            raise PublishError(msg) from None
        except PublishError as e:
            msg = (
                f"upload to {job.repository_url} failed: {e}\n"
                "check that the index is reachable and the token may upload to the project; files uploaded before the "
                "failure stay, and rerunning is safe (files already on the index are skipped)"
            )
            raise PublishError(msg) from None
        uploaded = len(todo)
        break
    if uploaded < 0:
        return files
    if not uploaded:
        print(f"nothing to upload: all {len(files)} wheel(s) are already on {job.index_url}", flush=True)
        return files
    print(f"published {uploaded} wheel(s) to {job.repository_url}; {len(files) - uploaded} already there were skipped", flush=True)
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    env = dict(os.environ)
    secrets = [env.get(n, "") for n in DROPPED_ENV if n != "TWINE_USERNAME"]
    return run_step(lambda: publish(parse_args(sys.argv[1:] if argv is None else argv), env), secrets)
