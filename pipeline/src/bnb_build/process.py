"""Running external tools: print the command, run it, keep the tail of its output for errors.

Commands are computed as a list first (pure functions elsewhere), then handed to :func:`run`, which
prints ``+ cmd ...`` and streams the tool's output through, so logs read the same on the host and in
a container.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Mapping, MutableMapping, Sequence

from . import inputs
from .errors import ToolFailed, ToolNotFound, join_argv

TAIL_LINES = 40

PARENT_FD_VARIABLE = "BNBCI_PARENT_FD"
"""Set by the host executor (bitsandbytes_ci.host.local.run_step): the read end of a pipe whose write
end only the executor holds. It reaches end-of-file when the executor is gone, however it ended."""


def watch_parent(environ: MutableMapping[str, str]) -> bool:
    """When ``environ`` names a parent pipe (PARENT_FD_VARIABLE, removed from ``environ`` so the tools
    started later do not see it), watch it from a daemon thread: when the executor that started this
    step dies (a SIGKILL too), its end of the pipe closes and this step ends its whole process group
    (this step, CMake, Ninja, the compilers: the executor started the step as a group leader), so no
    orphan goes on writing into a work directory or the cache. True when watching."""
    value = environ.pop(PARENT_FD_VARIABLE, None)
    if value is None or not value.isdigit() or not hasattr(os, "killpg"):
        return False
    fd = int(value)

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        if os.getpgrp() == os.getpid():  # the group is this step's own: end all of it
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(137)

    threading.Thread(target=watch, name="bnb-parent-watch", daemon=True).start()
    return True


def find_tool(name: str, env: Mapping[str, str]) -> str:
    """The full path of ``name`` on the PATH of ``env``; raises ToolNotFound naming that PATH."""
    path = env.get("PATH", os.defpath)
    found = shutil.which(name, path=path)
    if found is None:
        msg = f"{name} not found on PATH ({path}); install it or put it on PATH"
        raise ToolNotFound(msg)
    return found


def has_tool(name: str, env: Mapping[str, str]) -> bool:
    return shutil.which(name, path=env.get("PATH", os.defpath)) is not None


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    echo: bool = True,
) -> str:
    """Run ``argv``; return its combined stdout/stderr. Raises ToolFailed on a non-zero exit.

    With ``echo`` the output is passed through to our stdout line by line as it comes.
    """
    argv = [str(a) for a in argv]
    print(f"+ {join_argv(argv)}", flush=True)
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=None if cwd is None else str(cwd),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except FileNotFoundError as e:
        msg = f"cannot run {argv[0]}: {e.strerror}"
        raise ToolNotFound(msg) from e
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        lines.append(line)
        tail.append(line)
        if echo:
            print(line, flush=True)
    returncode = proc.wait()
    if returncode != 0:
        raise ToolFailed(argv, returncode, "\n".join(tail))
    return "\n".join(lines)


def python_executable() -> str:
    """The interpreter running this step (used for the PEP 517 backend)."""
    return sys.executable or "python3"


# The fixed default for SOURCE_DATE_EPOCH (1980-01-01T00:00:00Z), one value for every executor.
DEFAULT_SOURCE_DATE_EPOCH = inputs.DEFAULT_SOURCE_DATE_EPOCH


def reproducible_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus the settings that make builds independent of the machine's locale and clock.

    ``SOURCE_DATE_EPOCH`` is kept when the caller sets it (e.g. from the last commit), otherwise
    set to :data:`DEFAULT_SOURCE_DATE_EPOCH`; ``LC_ALL=C`` and ``TZ=UTC`` always.
    """
    result = dict(env)
    if not result.get("SOURCE_DATE_EPOCH", "").strip().isdigit():
        result["SOURCE_DATE_EPOCH"] = DEFAULT_SOURCE_DATE_EPOCH
    result["LC_ALL"] = "C"
    result["TZ"] = "UTC"
    return result
