"""Interrupting `bnb-ci build-all` (Ctrl-C = SIGINT, or SIGTERM as a CI runner sends it).

A real run builds the CPU job and the CUDA 13.0 job (five archs) of a copy of this repository; once the
CPU library is built and nvcc is compiling, the test signals bnb-ci's process group (what a terminal
does on Ctrl-C). bnb-ci must exit promptly with 128 + the signal number, leave no compiler, CMake or
step process behind, and leave no partial file in the output directory or the cache. After SIGINT a
second run completes and takes the CPU library from the cache instead of building it again.
ccache is off (BNB_NO_CCACHE=1) so the CUDA compile cannot be a quick ccache hit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from host_helpers import BNB_CI, copy_repo, host_env

from bitsandbytes_ci.host import artifact_cache

# Five archs: the CUDA compile must last long enough to be interrupted (one arch takes a few seconds).
SELECTION = ["--backend", "cpu", "--backend", "cuda", "--archs", "75;80;86;89;90", "--platform", "linux-x86_64"]
CUDA_JOB = "cuda130-linux-x86_64"
TEMP_PATTERNS = (".*.tmp", ".tmp-*", "*.partial*", ".*.partial-*")


def start(repo: Path, out: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(host_env(), BNB_NO_CCACHE="1")
    with open(log, "wb") as f:
        return subprocess.Popen(
            [str(BNB_CI), "build-all", "--out", str(out), "--cache-dir", str(cache), *SELECTION],
            cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_for(condition, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"bnb-ci ended (exit code {proc.returncode}) before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def processes_of(root: Path, pgid: int) -> list[str]:
    """Live processes working below `root` or in process group `pgid` ("pid name cwd")."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, group = stat.rsplit(")", 1)[1].split()[0], int(stat.rsplit(")", 1)[1].split()[2])
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError, IndexError):
            continue
        if state == "Z":
            continue
        if group == pgid or cwd == str(root) or cwd.startswith(str(root) + os.sep):
            found.append(f"{entry.name} {(entry / 'comm').read_text().strip()} {cwd}")
    return found


def partial_files(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots if root.exists() for pattern in TEMP_PATTERNS for p in root.rglob(pattern))


def compiling(cache: Path, pgid: int) -> bool:
    """nvcc (or a program it runs) is compiling in the CUDA job's work directory."""
    work = cache / "jobs" / CUDA_JOB
    return any(p.split()[1] in ("nvcc", "cicc", "ptxas") and p.split()[2].startswith(str(work)) for p in processes_of(work, pgid))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_every_process_and_leaves_no_partial_file(tmp_path: Path, sig: signal.Signals) -> None:
    repo = copy_repo(tmp_path / "repo")
    out, cache, log = tmp_path / "out", tmp_path / "cache", tmp_path / "run.log"
    proc = start(repo, out, cache, log)
    try:
        wait_for(lambda: "[cpu-linux-x86_64] built" in log.read_text(), "built CPU library", proc, log)
        wait_for(lambda: compiling(cache, proc.pid), "CUDA compile", proc, log)
        sent = time.monotonic()
        os.killpg(proc.pid, sig)
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert code == 128 + sig, text[-3000:]
    assert took < 30, f"bnb-ci took {took:.1f} s to stop"
    assert f"interrupted ({sig.name})" in text and "Run the same command again" in text
    deadline = time.monotonic() + 10
    while (left := processes_of(tmp_path, proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"processes left running: {left}"
    # Nothing partial: the output directory was never written, the interrupted job's work directory
    # is gone, every cache entry is complete.
    assert partial_files(out, cache) == []
    assert not out.exists() or not any(out.rglob("*"))
    assert not (cache / "jobs" / CUDA_JOB).exists()
    entries = [p for p in (cache / artifact_cache.ARTIFACTS_SUBDIR).iterdir()] if (cache / artifact_cache.ARTIFACTS_SUBDIR).is_dir() else []
    assert entries, "the CPU library, built before the interruption, should be in the cache"
    for entry in entries:
        assert (entry / artifact_cache.MARKER).is_file(), f"incomplete cache entry {entry}"
    if sig != signal.SIGINT:
        return
    # A second run goes on from what completed: the CPU library comes from the cache.
    again = subprocess.run(
        [str(BNB_CI), "build-all", "--out", str(out), "--cache-dir", str(cache), *SELECTION],
        cwd=repo, env=dict(host_env(), BNB_NO_CCACHE="1"), capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert "[cpu-linux-x86_64] cached" in again.stdout
    jobs = {j["id"]: j for j in json.loads((out / "manifest.json").read_text())["jobs"]}
    assert jobs["cpu-linux-x86_64"]["status"] == "built" and jobs[CUDA_JOB]["status"] == "built"
    assert partial_files(out, cache) == []
