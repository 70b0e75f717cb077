"""The CPU library's threads under the limits of real machines and containers.

Each case runs threads_probe.c (a small program that loads the library) in a process of its own,
started under one limit: a pids cgroup or RLIMIT_NPROC (no new thread can start: the calls must
still succeed, on the calling thread, instead of aborting the process), an affinity mask or a
cgroup CPU quota (the default thread count follows them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pids limits, affinity and cgroups are Linux's")

PROBE_C = Path(__file__).resolve().with_name("threads_probe.c")
NOBODY = 65534
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture(scope="module")
def probe_dir(cpu_build) -> Iterator[Path]:
    """The probe and the library in a folder every user may read (the RLIMIT_NPROC case runs as nobody)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc) to build threads_probe.c")
    folder = Path(tempfile.mkdtemp(prefix="bnb-threads-"))
    try:
        folder.chmod(0o755)
        shutil.copy2(cpu_build.library, folder / cpu_build.library.name)
        (folder / cpu_build.library.name).chmod(0o755)
        built = subprocess.run([compiler, "-O2", "-o", str(folder / "probe"), str(PROBE_C), "-ldl"], capture_output=True, text=True, check=False)
        assert built.returncode == 0, built.stderr
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_probe(folder: Path, threads: int, *, prefix: tuple[str, ...] = (), preexec: Callable[[], None] | None = None) -> dict[str, str]:
    """Runs the probe; its `key value` lines. Fails the test with the output when it did not exit 0."""
    library = next(folder.glob("libbitsandbytes_cpu*"))
    done = subprocess.run([*prefix, str(folder / "probe"), str(library), str(threads)], capture_output=True, text=True,
                          preexec_fn=preexec, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, f"the probe ended with {done.returncode}:\n{done.stdout}{done.stderr}"
    return dict(line.split(" ", 1) if " " in line else (line, "") for line in done.stdout.splitlines())


@contextlib.contextmanager
def child_cgroup(controller: str, files: dict[str, str]) -> Iterator[Path]:
    """A new cgroup of `controller` (v1 hierarchy, else v2) with `files` written; skips where none can be made."""
    parents = [CGROUP_ROOT / controller] if (CGROUP_ROOT / controller).is_dir() else []
    subtree = CGROUP_ROOT / "cgroup.subtree_control"
    if subtree.is_file() and controller in subtree.read_text().split():
        parents.append(CGROUP_ROOT)
    for parent in parents:
        group = parent / f"bnb-threads-{os.getpid()}-{time.monotonic_ns()}"
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            try:
                for name, value in files.items():
                    (group / name).write_text(value)
            except OSError as e:
                pytest.skip(f"cannot set up cgroup {group}: {e}")
            yield group
        finally:
            for _ in range(50):  # the probe may still be leaving it
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        return
    pytest.skip(f"no writable {controller} cgroup hierarchy under {CGROUP_ROOT} (needs root or a delegated cgroup)")


def join_cgroup(group: Path) -> Callable[[], None]:
    return lambda: (group / "cgroup.procs").write_text(str(os.getpid()))


def test_no_new_thread_under_a_pids_cgroup_still_computes(probe_dir):
    # pids.max 1: the probe itself is the only task it may have, so no helper thread can start
    # (std::thread throws std::system_error; it used to end the process with SIGABRT).
    with child_cgroup("pids", {"pids.max": "1"}) as group:
        result = run_probe(probe_dir, 8, preexec=join_cgroup(group))
    assert result["status"] == "0 0", result
    assert result["same"] == "yes", result


def test_no_new_thread_under_rlimit_nproc_still_computes(probe_dir):
    # RLIMIT_NPROC counts the threads of a user; root ignores it, so a root test runs the probe as nobody.
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) is not installed")
    prefix: tuple[str, ...] = (prlimit, "--nproc=1")
    if os.geteuid() == 0:
        if setpriv is None:
            pytest.skip("root ignores RLIMIT_NPROC and setpriv (util-linux) is not installed to run as nobody")
        prefix = (setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *prefix)
    result = run_probe(probe_dir, 8, prefix=prefix)
    assert result["status"] == "0 0", result
    assert result["same"] == "yes", result
    assert result["error"] == "", "falling back to fewer threads is not a failure"


def test_some_threads_refused_uses_those_that_started(probe_dir):
    # Each call asks for more helpers than can start: the calls go on with those there are.
    with child_cgroup("pids", {"pids.max": "3"}) as group:
        result = run_probe(probe_dir, 16, preexec=join_cgroup(group))
    assert (result["status"], result["same"]) == ("0 0", "yes"), result


@pytest.fixture(scope="module")
def two_cpus() -> list[int]:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip(f"this process may use {len(allowed)} CPU: an affinity or quota of one would not show")
    return allowed


def test_default_threads_follow_the_affinity_mask(probe_dir, two_cpus):
    taskset = shutil.which("taskset")
    prefix = (taskset, "-c", str(two_cpus[0])) if taskset else ()
    preexec = None if taskset else (lambda: os.sched_setaffinity(0, {two_cpus[0]}))
    assert run_probe(probe_dir, 0, prefix=prefix, preexec=preexec)["default"] == "1"
    assert run_probe(probe_dir, 0)["default"] == str(len(two_cpus))


@pytest.mark.parametrize(("quota_us", "expected"), [(50_000, 1), (150_000, 2)])
def test_default_threads_follow_a_cgroup_cpu_quota(probe_dir, two_cpus, quota_us, expected):
    # Half a CPU is one thread; one and a half round up to two (as many as the affinity allows).
    v1 = (CGROUP_ROOT / "cpu").is_dir()
    files = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": str(quota_us)} if v1 else {"cpu.max": f"{quota_us} 100000"}
    with child_cgroup("cpu", files) as group:
        result = run_probe(probe_dir, 0, preexec=join_cgroup(group))
    assert result["default"] == str(min(expected, len(two_cpus))), result
