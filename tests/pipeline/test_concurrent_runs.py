"""Runs that share a cache, a machine or a parent: they take turns and say so, and nothing outlives them.

- locks.py: a lock held by another (real) process is reported with its pid and command; the waiter
  gets it once that process is gone, even when it was killed;
- two `bnb-ci build-cpu` runs on one cache, started together: the second waits for the first's
  work directory (printing who holds it) and then takes the library from the artifact cache;
- a kept CMake build folder whose object changed since its last build is not built on;
- the stable source path of the native step belongs to the user (`<tmp>/bnb-src-<uid>`) and a
  build that has to wait for it says who holds it;
- a step's processes end when the bnb-ci that started it is killed (SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from host_helpers import BNB_CI, REPO_ROOT, copy_repo, host_env

from bitsandbytes_ci.host import local, locks
from bnb_build import stable_source
from bnb_build.errors import UsageError

PYTHONPATH = str(REPO_ROOT / "pipeline" / "src")


def holder_process(code: str) -> subprocess.Popen[str]:
    """A real process running `code` (with the pipeline importable), which prints 'held' once it holds what it takes."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH})  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held", "the holder process did not start"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def wait_gone(pid: int, deadline_s: float = 60.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):  # ended, not yet reaped by its new parent
            return True
        time.sleep(0.1)
    return False


# ---- locks ---------------------------------------------------------------------------------------


def test_a_held_lock_names_its_holder_and_is_taken_once_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "jobs" / "cpu-linux-x86_64.lock"
    holder = holder_process(f"""
        import sys, time
        from bitsandbytes_ci.host import locks
        lock = locks.FileLock({str(path)!r}, "x")
        lock.try_acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    try:
        lock = local.work_dir_lock(tmp_path, "cpu-linux-x86_64")
        with pytest.raises(locks.LockBusy) as busy:
            lock.try_acquire()
        assert busy.value.holder["pid"] == holder.pid and "-c" in busy.value.holder["command"]
        assert locks.is_held(path)

        said: list[str] = []
        taker = threading.Thread(target=lock.acquire, args=(said.append,), kwargs={"poll_s": 0.05})
        taker.start()
        while not said:
            time.sleep(0.05)
        assert said == [f"waiting for the work directory of cpu-linux-x86_64 ({path}): held by {locks.describe_holder(busy.value.holder)}"]
        assert f"pid {holder.pid} (" in said[0]
        holder.send_signal(signal.SIGKILL)  # no release: the operating system drops the lock
        taker.join(60)
        assert not taker.is_alive() and lock.held
        assert json.loads(path.read_text())["pid"] == os.getpid(), "the new holder names itself"
        lock.release()
        assert not locks.is_held(path) and path.read_text() == ""
    finally:
        stop(holder)


def test_several_locks_are_taken_in_one_order_and_all_released(tmp_path: Path) -> None:
    a, b = (locks.FileLock(tmp_path / f"{n}.lock", n) for n in ("a", "b"))
    with pytest.raises(RuntimeError), locks.held([b, a], print) as taken:
        assert [lock.path.name for lock in taken] == ["a.lock", "b.lock"]
        assert locks.is_held(a.path) and locks.is_held(b.path)  # any other open file of the lock is refused, in this process too
        raise RuntimeError
    assert not a.held and not b.held


# ---- two runs on one cache ------------------------------------------------------------------------


def test_two_runs_on_one_cache_take_turns_and_the_second_takes_the_first_ones_library(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    cache = tmp_path / "cache"
    env = {**host_env(), "BNB_NO_CCACHE": "1"}
    argv = [str(BNB_CI), "build-cpu", "--platform", "linux-x86_64", "--source", str(repo), "--cache-dir", str(cache)]
    first = subprocess.Popen([*argv, "--out", str(tmp_path / "out-1")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert first.stdout is not None
    for line in first.stdout:  # the first run holds the work directory once it says where its cache is
        if line.strip().startswith("cache:"):
            break
    time.sleep(0.5)
    second = subprocess.run([*argv, "--out", str(tmp_path / "out-2")], env=env, capture_output=True, text=True, timeout=1800, check=False)
    rest = first.stdout.read()
    first.stdout.close()
    assert first.wait(1800) == 0, rest[-4000:]
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    assert f"waiting for the work directory of cpu-linux-x86_64 ({cache / 'jobs' / 'cpu-linux-x86_64.lock'}): held by pid {first.pid} (" in second.stdout
    assert "[cpu-linux-x86_64] cached" in second.stdout and "[cpu-linux-x86_64] start" not in second.stdout
    lib = Path("linux/x86_64/libbitsandbytes_cpu.so")
    assert (tmp_path / "out-1" / lib).read_bytes() == (tmp_path / "out-2" / lib).read_bytes()


# ---- kept build folders ---------------------------------------------------------------------------


def test_a_kept_build_folder_whose_object_changed_is_not_built_on(tmp_path: Path) -> None:
    work = tmp_path / "work"
    obj = work / "build" / "CMakeFiles" / "bnb.dir" / "csrc" / "cpu" / "kernels.cpp.o"
    obj.parent.mkdir(parents=True)
    obj.write_bytes(bytes(range(256)) * 64)
    (work / "build" / "CMakeCache.txt").write_text("CMAKE_HOME_DIRECTORY:INTERNAL=/x\n")
    local.record_build_state(work, "sha256:key")
    assert local.prepare_build_work_dir(work, "sha256:key"), "unchanged: kept"
    local.record_build_state(work, "sha256:key")

    data = bytearray(obj.read_bytes())
    data[1000] ^= 0x01  # one flipped bit
    obj.write_bytes(bytes(data))
    said: list[str] = []
    assert not local.prepare_build_work_dir(work, "sha256:key", said.append)
    assert not (work / "build").exists(), "built from an empty folder"
    assert said == ["the kept build folder changed since its last successful build (CMakeFiles/bnb.dir/csrc/cpu/kernels.cpp.o); building from an empty one"]


def test_a_build_state_without_file_hashes_is_not_trusted(tmp_path: Path) -> None:
    """A state file of an older bnb-ci (only the key) does not vouch for the folder's objects."""
    work = tmp_path / "work"
    (work / "build").mkdir(parents=True)
    (work / "build" / "x.o").write_bytes(b"object")
    (work / local.BUILD_STATE).write_text(json.dumps({"key": "sha256:key"}))
    assert not local.prepare_build_work_dir(work, "sha256:key")


# ---- the stable source path -------------------------------------------------------------------------


def test_the_stable_source_path_is_the_users_own_and_a_waiting_build_names_the_holder(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "CMakeLists.txt").write_text("project(x)\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    root = stable_source.stable_root(tmp)
    assert root == tmp / f"bnb-src-{os.getuid()}"
    holder = holder_process(f"""
        import time
        from pathlib import Path
        from bnb_build.stable_source import stable_source_path
        with stable_source_path(Path({str(source)!r}), "cuda130-linux-x86_64", tmp=Path({str(tmp)!r})) as path:
            print("held", flush=True)
            time.sleep(600)
    """)
    try:
        result: list[Path] = []

        def build() -> None:
            with stable_source.stable_source_path(source, "cuda130-linux-x86_64", tmp=tmp) as path:
                result.append(path)
                assert (path / "CMakeLists.txt").read_text() == "project(x)\n"

        out = tmp_path / "stdout"
        with open(out, "w") as f:
            saved = sys.stdout
            sys.stdout = f
            try:
                waiter = threading.Thread(target=build)
                waiter.start()
                deadline = time.monotonic() + 60
                while "waiting for" not in out.read_text() and time.monotonic() < deadline:
                    time.sleep(0.05)
                holder.send_signal(signal.SIGKILL)
                waiter.join(60)
            finally:
                sys.stdout = saved
        said = out.read_text()
        assert f"waiting for {root / 'cuda130-linux-x86_64'} (another build of cuda130-linux-x86_64 uses it): held by pid {holder.pid} (since " in said
        assert result == [root / "cuda130-linux-x86_64"]
        assert os.stat(root).st_mode & 0o777 == 0o700
    finally:
        stop(holder)


@pytest.mark.skipif(os.getuid() != 0, reason="giving the folder to another user needs root")
def test_a_stable_source_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    root = stable_source.stable_root(tmp_path)
    root.mkdir()
    os.chown(root, 65534, 65534)
    with pytest.raises(UsageError, match=rf"{root} \(the stable source folder of this user's builds\) is not a folder owned by uid 0"):
        with stable_source.stable_source_path(tmp_path, "cpu-linux-x86_64", tmp=tmp_path):
            pass


# ---- steps end with bnb-ci --------------------------------------------------------------------------


def test_a_steps_processes_end_when_bnb_ci_is_killed(tmp_path: Path) -> None:
    """The host executor's run_step in a real process that is SIGKILLed: the step (a bnb_build program
    that watches its parent) and the tool it started (sleep, as CMake would be) end too."""
    log = tmp_path / "log.txt"
    step = (
        "import os, subprocess, time\n"
        "from bnb_build.process import watch_parent\n"
        "assert watch_parent(os.environ)\n"
        "tool = subprocess.Popen(['sleep', '600'])\n"
        "print('tool', tool.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    driver = textwrap.dedent(f"""
        import anyio, sys
        from pathlib import Path
        from bitsandbytes_ci.host.local import run_step
        print("held", flush=True)
        anyio.run(lambda: run_step([sys.executable, "-c", {step!r}], cwd=Path({str(tmp_path)!r}), env={{"PYTHONPATH": {PYTHONPATH!r}, "PATH": "/usr/bin:/bin"}},
                                   log=Path({str(log)!r}), header=""))
    """)
    bnb_ci = holder_process(driver)
    deadline = time.monotonic() + 60
    while "tool " not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    tool_pid = int(log.read_text().split("tool ")[1].split()[0])
    os.kill(tool_pid, 0)  # running
    bnb_ci.send_signal(signal.SIGKILL)
    stop(bnb_ci)
    assert wait_gone(tool_pid), f"the step's tool (pid {tool_pid}) outlived the killed bnb-ci"
