"""A fixed path for a build job's sources: ``<tmp>/bnb-src-<user id>/<job id>``.

nvcc names relocatable device code after the real absolute path of each source file
(``__fatbinwrap_<hash of the path>_...``, a module id; it resolves links, and ``--frandom-seed`` does
not change it), so the path must not depend on where the work folder is: every build of a job by the
same user, from any checkout or cache folder, copies its sources to the same path. Containers build in
/work, the same path everywhere.

The folder is the user's own (created with mode 0700; one owned by someone else, or a link, is
refused), so builds of different users never wait for each other. Two builds of the same job by the
same user take turns: the path is held under a lock (``<job id>.lock``, ``fcntl.flock``, released
when its holder exits however it ends) whose file names the holder; a build that finds it held
prints who holds it (pid, command, since when) before it waits. Where no lock can be taken
(Windows), the sources' own path is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator

from .errors import UsageError
from .files import remove_tree

STABLE_ROOT = "bnb-src"
POLL_S = 0.5


def stable_root(tmp: Path | None = None) -> Path:
    """``<tmp>/bnb-src-<uid>``: this user's folder of stable source paths."""
    return Path(tmp or tempfile.gettempdir()) / f"{STABLE_ROOT}-{os.getuid()}"


def _own_folder(root: Path) -> Path:
    """`root` created (mode 0700) or checked: a folder, not a link, owned by this user."""
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        msg = (
            f"{root} (the stable source folder of this user's builds) is not a folder owned by uid {os.getuid()}; "
            "remove it, or point TMPDIR at another temporary folder"
        )
        raise UsageError(msg)
    return root


def _holder(lock_path: Path) -> Dict[str, Any]:
    try:
        holder = json.loads(lock_path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: Dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another build (it has not written its name yet)"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(float(holder.get("since") or 0)))
    return f"pid {holder['pid']} (since {since}): {' '.join(str(a) for a in holder.get('command') or [])}"


@contextlib.contextmanager
def stable_source_path(source: Path, job_id: str, *, tmp: Path | None = None) -> Iterator[Path]:
    """A copy of ``source`` at ``<tmp>/bnb-src-<uid>/<job id>`` (file times kept, so a kept build folder
    recompiles only what changed), held under the job's lock while the body runs and removed after it."""
    real = source.resolve()
    if os.name != "posix":
        yield real
        return
    import fcntl

    root = _own_folder(stable_root(tmp))
    stable = root / job_id
    lock_path = root / f"{job_id}.lock"
    with open(lock_path, "a+", encoding="utf-8") as lock:
        told = None
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(lock_path)
                if holder.get("pid") != told:
                    print(f"waiting for {stable} (another build of {job_id} uses it): held by {describe(holder)}", flush=True)
                    told = holder.get("pid")
                time.sleep(POLL_S)
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps({"pid": os.getpid(), "command": [Path(sys.executable).name, *sys.argv], "since": time.time()}) + "\n")
        lock.flush()
        remove_tree(stable)
        try:
            shutil.copytree(real, stable, symlinks=True)
            yield stable
        finally:
            remove_tree(stable)
            lock.seek(0)
            lock.truncate()
            lock.flush()
