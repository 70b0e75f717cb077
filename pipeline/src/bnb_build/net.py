"""Network calls that never hang: a timeout on every call, bounded retries, and the URL in every error.

Every step that talks to a server (``publish``: the index page, trusted publishing, twine;
``github-release``: the GitHub REST API; ``bnb-ci install-toolkit``: the toolkit downloads) takes its
limits from the environment (docs/contracts.md, "Network timeouts"):

- ``BNB_NETWORK_TIMEOUT_S`` (default 60): how long a server may stay silent: connecting, and each
  wait for an answer or for the next bytes. Sending a body of N bytes may take this plus N at
  :data:`MIN_BYTES_PER_S` (:func:`transfer_timeout`).
- ``BNB_NETWORK_RETRIES`` (default 2): how many times a call that timed out, could not connect or got
  HTTP 429/5xx is tried again, after 1 s, 2 s, 4 s ... (at most 10 s). A request that may have
  changed something on the server (a POST that was sent) is never repeated: its error says so.

A call that still fails raises :class:`NetworkError` naming the method and URL (without query or user
info), what went wrong, and the limits in force.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Tuple

from .errors import StepError, UsageError

TIMEOUT_ENV = "BNB_NETWORK_TIMEOUT_S"
RETRIES_ENV = "BNB_NETWORK_RETRIES"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 2
MAX_RETRIES = 10
MAX_BACKOFF_S = 10.0
MIN_BYTES_PER_S = 256 * 1024
"""The slowest transfer a step waits for: a body of N bytes may take N / this, on top of the timeout."""
RETRIED_STATUS = (429, 500, 502, 503, 504)
IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")


class NetworkError(StepError):
    """A server did not answer in time, could not be reached, or kept failing after the retries."""

    exit_code = 12


@dataclass(frozen=True)
class Limits:
    """The timeout (seconds a server may stay silent) and the number of retries after the first try."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    def transfer_timeout(self, size_bytes: int) -> float:
        """The time a transfer of ``size_bytes`` may take: the timeout plus the size at the slowest rate."""
        return self.timeout_s + size_bytes / MIN_BYTES_PER_S

    def describe(self) -> str:
        return f"{TIMEOUT_ENV}={self.timeout_s:g}, {RETRIES_ENV}={self.retries}"


def limits_from_env(env: Mapping[str, str]) -> Limits:
    """The limits ``env`` sets; a value that is not a positive number (retries: 0..10) is refused, named."""
    raw = env.get(TIMEOUT_ENV, "").strip()
    timeout = DEFAULT_TIMEOUT_S
    if raw:
        try:
            timeout = float(raw)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            msg = f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds; e.g. {TIMEOUT_ENV}=60"
            raise UsageError(msg)
    raw = env.get(RETRIES_ENV, "").strip()
    retries = DEFAULT_RETRIES
    if raw:
        if not raw.isdigit() or int(raw) > MAX_RETRIES:
            msg = f"{RETRIES_ENV}={raw!r} is not a whole number from 0 to {MAX_RETRIES}; e.g. {RETRIES_ENV}={DEFAULT_RETRIES}"
            raise UsageError(msg)
        retries = int(raw)
    return Limits(timeout, retries)


def display_url(url: str) -> str:
    """``url`` for messages: without user info, query or fragment (where tokens could hide)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): 1, 2, 4 ... at most MAX_BACKOFF_S."""
    return min(float(2 ** (attempt - 1)), MAX_BACKOFF_S)


def is_timeout(error: BaseException) -> bool:
    reason = getattr(error, "reason", error)
    return isinstance(reason, (socket.timeout, TimeoutError)) or isinstance(error, (socket.timeout, TimeoutError))


def describe_error(error: BaseException, timeout_s: float) -> str:
    """What went wrong, in words: a timeout says how long the server stayed silent."""
    if is_timeout(error):
        return f"no answer within {timeout_s:g} s"
    reason = getattr(error, "reason", None)
    return str(reason if reason is not None else error) or type(error).__name__


def _not_sent(error: BaseException) -> bool:
    """The request never reached the server (the connection was refused): repeating it is safe."""
    reason = getattr(error, "reason", error)
    return isinstance(reason, (ConnectionRefusedError, socket.gaierror))


def call(
    request: Callable[[float], Tuple[int, bytes]],
    *,
    method: str,
    url: str,
    limits: Limits,
    timeout_s: Optional[float] = None,
    ok_status: Callable[[int], bool] = lambda status: status < 400,
    what: str = "",
    log: Callable[[str], None] = lambda text: print(text, flush=True),
    sleep: Callable[[float], None] = time.sleep,
) -> Tuple[int, bytes]:
    """Run ``request(timeout)`` (which returns status and body, and raises OSError/URLError when the
    server cannot be reached or stays silent) with the retries of ``limits``. HTTP statuses go back
    to the caller, except 429/5xx of an idempotent method, which are retried first."""
    timeout = limits.timeout_s if timeout_s is None else timeout_s
    repeatable = method.upper() in IDEMPOTENT
    where = f"{what}: " if what else ""
    last = ""
    for attempt in range(limits.retries + 1):
        if attempt:
            wait = backoff(attempt)
            log(f"{where}{method} {display_url(url)}: {last}; trying again in {wait:g} s (retry {attempt} of {limits.retries})")
            sleep(wait)
        try:
            status, body = request(timeout)
        except (urllib.error.URLError, OSError) as e:
            if isinstance(e, urllib.error.HTTPError):
                raise
            last = describe_error(e, timeout)
            if repeatable or _not_sent(e):
                continue
            msg = (
                f"{where}{method} {display_url(url)}: {last}; not repeated, since the server may have acted on it "
                f"({limits.describe()})"
            )
            raise NetworkError(msg) from None
        if status in RETRIED_STATUS and repeatable and not ok_status(status):
            last = f"HTTP {status}"
            continue
        return status, body
    msg = f"{where}{method} {display_url(url)}: {last}, {limits.retries + 1} time(s) ({limits.describe()}); check the URL and the network"
    raise NetworkError(msg)


def urlopen(req: urllib.request.Request, timeout: float) -> Tuple[int, bytes]:
    """One HTTP exchange with ``timeout``: (status, body); an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - callers pass http(s) URLs
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        try:
            return e.code, e.read()
        finally:
            e.close()


def download(url: str, dest: Path, limits: Limits, *, what: str = "download", log: Callable[[str], None] = lambda text: print(text, flush=True),
             sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
    """Fetch ``url`` into ``dest`` (written whole, or not at all), with the timeout and retries of ``limits``."""
    partial = dest.with_name(dest.name + ".part")

    def fetch(timeout: float) -> Tuple[int, bytes]:
        req = urllib.request.Request(url, headers={"User-Agent": "bnb-build"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(partial, "wb") as out:  # noqa: S310
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                return resp.status, b""
        except urllib.error.HTTPError as e:
            e.close()
            return e.code, b""

    try:
        status, _ = call(fetch, method="GET", url=url, limits=limits, what=what, log=log, sleep=sleep)
        if status >= 400:
            msg = f"{what}: GET {display_url(url)} answered HTTP {status}"
            raise NetworkError(msg)
        partial.replace(dest)
    finally:
        if partial.exists():
            partial.unlink()


__all__: Sequence[str] = (
    "Limits",
    "NetworkError",
    "call",
    "display_url",
    "download",
    "limits_from_env",
    "urlopen",
)
