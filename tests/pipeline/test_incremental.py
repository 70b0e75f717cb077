"""Incremental rebuilds of the host executor: a build job's work directory is kept between runs.

- `bnb_build.inputs.sync_subset`: unchanged files keep their modification time, changed ones are
  rewritten, files no longer selected are removed;
- `local.prepare_build_work_dir`: the CMake folder is kept only with a matching build state;
- end to end (nvcc 13.0, one arch): after editing a .cu file only that file is compiled again, and
  the library has the bytes of a clean build of the edited sources (built without ccache in a fresh
  cache folder); a CMake file change and a build folder left broken also give the clean build's bytes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from host_helpers import BNB_CI, copy_repo, host_env

from bitsandbytes_ci.host import local
from bnb_build import inputs

JOB = "cuda130-linux-x86_64"
CUDA = ["build-cuda", "--cuda-version", "13.0", "--platform", "linux-x86_64", "--archs", "75"]
LIBRARY = Path("linux/x86_64/libbitsandbytes_cuda130.so")


# ---- sync_subset ------------------------------------------------------------------------------------


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_sync_rewrites_only_what_changed_and_removes_what_is_gone(tmp_path: Path) -> None:
    root, dest = tmp_path / "root", tmp_path / "dest"
    write(root, "CMakeLists.txt", "project(x)\n")
    write(root, "csrc/a.cu", "// a\n")
    write(root, "csrc/b.cu", "// b\n")
    write(root, "csrc/old/gone.h", "// gone\n")
    write(root, "tool.sh", "#!/bin/sh\n")
    patterns = ["CMakeLists.txt", "csrc/**", "tool.sh"]
    assert inputs.sync_subset(root, patterns, dest) == inputs.expand(root, patterns)
    assert inputs.all_files(dest) == inputs.expand(root, patterns)

    past = time.time_ns() - 3600 * 10**9
    for rel in inputs.all_files(dest):
        os.utime(dest / rel, ns=(past, past))
    write(root, "csrc/a.cu", "// a, edited\n")
    (root / "csrc/old/gone.h").unlink()
    (root / "csrc/old").rmdir()
    write(root, "csrc/new.cuh", "// new\n")
    os.chmod(root / "tool.sh", 0o755)  # the executable bit is an input
    write(dest, "csrc/stray.o", "not selected\n")

    files = inputs.sync_subset(root, patterns, dest)
    assert files == inputs.all_files(dest) == ["CMakeLists.txt", "csrc/a.cu", "csrc/b.cu", "csrc/new.cuh", "tool.sh"]
    assert not (dest / "csrc/old").exists(), "emptied folders are removed"
    for rel in files:
        assert (dest / rel).read_bytes() == (root / rel).read_bytes()
    assert os.stat(dest / "tool.sh").st_mode & stat.S_IXUSR
    assert os.stat(dest / "CMakeLists.txt").st_mtime_ns == past and os.stat(dest / "csrc/b.cu").st_mtime_ns == past
    assert os.stat(dest / "csrc/a.cu").st_mtime_ns > past and os.stat(dest / "tool.sh").st_mtime_ns > past
    assert inputs.digest(dest, files) == inputs.digest(root, files)


def test_build_folder_is_kept_only_with_a_matching_state(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for rel in ("build/CMakeCache.txt", "src/CMakeLists.txt", "out/.partial-x/lib.so", "log.txt"):
        write(work, rel, "x\n")
    assert not local.prepare_build_work_dir(work, "sha256:one"), "no state: not kept"
    assert sorted(p.name for p in work.iterdir()) == ["src"]

    write(work, "build/CMakeCache.txt", "x\n")
    local.record_build_state(work, "sha256:one")
    write(work, "out/lib.so", "x\n")
    assert local.prepare_build_work_dir(work, "sha256:one")
    assert sorted(p.name for p in work.iterdir()) == ["build", "src"], "out/ and the state file go until the step succeeds"
    assert not local.prepare_build_work_dir(work, "sha256:one"), "the state is consumed: an interrupted run leaves none"

    write(work, "build/CMakeCache.txt", "x\n")
    local.record_build_state(work, "sha256:one")
    assert not local.prepare_build_work_dir(work, "sha256:two") and not (work / "build").exists()
    write(work, local.BUILD_STATE, "{not json")
    assert not local.prepare_build_work_dir(work, "sha256:one")


# ---- end to end -------------------------------------------------------------------------------------


def run(repo: Path, cache: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    args = [str(BNB_CI), *CUDA, "--out", str(out), "--cache-dir", str(cache), "--source", str(repo)]
    done = subprocess.run(args, cwd=repo, env={**host_env(), **env}, capture_output=True, text=True, timeout=1800, check=False)
    if "no nvcc 13.0 on this host" in done.stdout:
        pytest.skip("this host has no nvcc 13.0")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done


def clean_build(repo: Path, tmp: Path, name: str) -> bytes:
    """The library of a clean build of `repo` as it is now: fresh cache folder, no ccache."""
    done = run(repo, tmp / f"cache-{name}", tmp / f"out-{name}", BNB_NO_CCACHE="1")
    assert f"[{JOB}] built in" in done.stdout and "kept build folder" not in done.stdout
    return (tmp / f"out-{name}" / LIBRARY).read_bytes()


def step_log(cache: Path) -> str:
    return (cache / "jobs" / JOB / "log.txt").read_text()


def test_incremental_rebuilds_give_the_bytes_of_clean_builds(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    cache, out = tmp_path / "cache", tmp_path / "out"
    run(repo, cache, out)
    first = (out / LIBRARY).read_bytes()
    assert (cache / "jobs" / JOB / local.BUILD_STATE).is_file()

    # One .cu file edited (code, not a comment): the build folder is kept, CMake does not configure
    # from scratch, only that translation unit is compiled, and the bytes are a clean build's.
    cu = repo / "csrc" / "cuda" / "backend.cu"
    cu.write_text(
        cu.read_text()
        + "\n#ifndef BNB_INCREMENTAL_VALUE\n#define BNB_INCREMENTAL_VALUE 41\n#endif\n"
        + 'extern "C" __global__ void bnb_incremental_test_kernel(int* p) { *p = BNB_INCREMENTAL_VALUE; }\n'
    )
    done = run(repo, cache, out)
    assert f"[{JOB}] start (" in done.stdout and "kept build folder" in done.stdout
    log = step_log(cache)
    assert "Building CUDA object" in log and "Building CXX object" not in log, log[-3000:]
    assert "Check for working CUDA compiler" not in log and "The CUDA compiler identification" not in log, "configured from scratch"
    edited = (out / LIBRARY).read_bytes()
    assert edited != first
    assert edited == clean_build(repo, tmp_path, "edited")

    # A CMake file change: the build is correct (here from an empty build folder: CMake keeps cached
    # values across a reconfigure).
    cmakelists = repo / "CMakeLists.txt"
    cmakelists.write_text(cmakelists.read_text() + "\ntarget_compile_definitions(bitsandbytes PRIVATE BNB_INCREMENTAL_VALUE=7)\n")
    done = run(repo, cache, out)
    assert f"[{JOB}] built in" in done.stdout and "kept build folder" not in done.stdout
    changed = (out / LIBRARY).read_bytes()
    assert changed != edited
    assert changed == clean_build(repo, tmp_path, "cmake")

    # A build folder left in a bad state (an interrupted configure: no state file, a broken cache)
    # is emptied and built again.
    (cache / "jobs" / JOB / local.BUILD_STATE).unlink()
    (cache / "jobs" / JOB / "build" / "CMakeCache.txt").write_text("garbage from an interrupted configure\n")
    cu.write_text(cu.read_text() + "// and a comment\n")
    done = run(repo, cache, out)
    assert f"[{JOB}] built in" in done.stdout and "kept build folder" not in done.stdout
    assert (out / LIBRARY).read_bytes() == changed, "a comment does not change the library"
