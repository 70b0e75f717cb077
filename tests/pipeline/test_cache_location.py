"""Where bnb-ci keeps its cache, and `bnb-ci cache info|prune`.

- the default cache root is the user's cache folder ($XDG_CACHE_HOME/bitsandbytes-ci, else
  ~/.cache/bitsandbytes-ci), shared by every checkout, never `<source>/.bnb-cache`;
- `cache info` names it and its size per kind; `cache prune` removes what was not used lately
  (by age, then least recently used down to a size), never a work directory a run holds, and no
  artifact entry while a run holds any.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from host_helpers import BNB_CI, REPO_ROOT, copy_repo, host_env

from bitsandbytes_ci.host import artifact_cache, cache_usage, cli, local

DAY = 86400.0


def test_the_default_cache_is_the_users_cache_folder(tmp_path: Path) -> None:
    assert local.default_cache_dir({"XDG_CACHE_HOME": "/var/cache/me", "HOME": "/home/me"}) == Path("/var/cache/me/bitsandbytes-ci")
    assert local.default_cache_dir({"XDG_CACHE_HOME": "relative/is/ignored", "HOME": "/home/me"}) == Path("/home/me/.cache/bitsandbytes-ci")
    assert local.default_cache_dir({"HOME": "/home/me"}) == Path("/home/me/.cache/bitsandbytes-ci")


def test_a_run_without_cache_dir_uses_the_user_cache_and_writes_nothing_into_the_checkout(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    libs = tmp_path / "libs"
    lib = libs / "linux" / "aarch64" / "libbitsandbytes_cpu.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"\x7fELF")
    lib.with_name(lib.name + ".build-info.json").write_text(json.dumps({"job_id": "cpu-linux-aarch64"}))
    xdg = tmp_path / "xdg"
    env = {**host_env(), "XDG_CACHE_HOME": str(xdg)}
    run = subprocess.run([str(BNB_CI), "build-all", "--out", str(tmp_path / "out"), "--libs", str(libs), "--backend", "cpu", "--platform", "linux-x86_64"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr  # the library is not in --libs
    assert f"  cache: {xdg / 'bitsandbytes-ci'}\n" in run.stdout
    assert (xdg / "bitsandbytes-ci" / "jobs" / "wheel-linux-x86_64.lock").is_file(), "the run held its work directories there"
    assert not (repo / ".bnb-cache").exists()


def test_the_test_run_never_uses_the_real_user_cache() -> None:
    """tests/conftest.py points XDG_CACHE_HOME at a temporary folder of the test run."""
    assert Path(os.environ["XDG_CACHE_HOME"]).name.startswith("bnb-tests-user-cache-")


# ---- info and prune ------------------------------------------------------------------------------------


def store(cache: Path, n: int, name: str, size: int, *, age_days: float) -> Path:
    src = cache.parent / "src" / f"{n}-{name}"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(bytes([n]) * size)
    digest = "sha256:" + f"{n:x}".rjust(64, "0")
    entry = artifact_cache.store(cache, digest, {name: src})
    then = time.time() - age_days * DAY
    os.utime(entry / artifact_cache.MARKER, (then, then))
    return entry


def work(cache: Path, job_id: str, size: int, *, age_days: float) -> Path:
    folder = cache / "jobs" / job_id
    (folder / "build").mkdir(parents=True)
    (folder / "build" / "x.o").write_bytes(b"o" * size)
    then = time.time() - age_days * DAY
    os.utime(folder, (then, then))
    return folder


def test_info_names_the_cache_and_its_size_per_kind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    store(cache, 1, "linux/x86_64/libbitsandbytes_cpu.so", 3000, age_days=0)
    store(cache, 2, "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl", 5000, age_days=0)
    store(cache, 3, "audit.md", 700, age_days=0)
    work(cache, "cpu-linux-x86_64", 2048, age_days=0)
    sizes = cache_usage.usage(cache)
    assert sizes["wheel"] == 5000 + (cache / "artifacts" / f"{2:064x}" / artifact_cache.MARKER).stat().st_size
    assert sizes["work directory"] == 2048 and sizes["report"] > 700 and sizes["library"] > 3000 and sizes["zig runtime"] == 0
    out = io.StringIO()
    assert cli.main_inner(["cache", "info", "--cache-dir", str(cache)], env={}, stdout=out) == 0
    text = out.getvalue()
    assert text.startswith(f"cache: {cache}\n") and "  work directory     2.0 KiB" in text and "  total " in text


def test_prune_removes_what_was_not_used_lately_and_never_what_a_run_holds(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = store(cache, 1, "old.so", 1000, age_days=40)
    recent = store(cache, 2, "recent.so", 1000, age_days=1)
    old_work = work(cache, "cpu-linux-aarch64", 1000, age_days=40)
    held_work = work(cache, "cpu-linux-x86_64", 1000, age_days=40)
    lock = local.work_dir_lock(cache, "cpu-linux-x86_64").path
    lock.touch()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from bitsandbytes_ci.host import locks
        lock = locks.FileLock({str(lock)!r}, "x")
        lock.try_acquire()
        print("held", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "pipeline" / "src")})  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        removed, kept = cache_usage.prune(cache, older_than_s=30 * DAY, max_bytes=None)
        assert [i.path for i in removed] == [old_work], "only the work directory nobody holds"
        assert old.exists() and recent.exists() and held_work.exists()
        assert kept[0].startswith(f"in use: the work directory of cpu-linux-x86_64, held by pid {holder.pid} (")
        assert "artifact entries: kept, because a run is using the cache" in kept[1]
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    removed, kept = cache_usage.prune(cache, older_than_s=30 * DAY, max_bytes=None)
    assert sorted(i.path for i in removed) == sorted([old, held_work]) and kept == []
    assert recent.exists()


def test_prune_to_a_size_removes_the_least_recently_used_first(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    entries = [store(cache, n, f"lib{n}.so", 10_000, age_days=10 - n) for n in range(1, 5)]  # entry 1 used longest ago
    used = artifact_cache.lookup(cache, "sha256:" + f"{1:x}".rjust(64, "0"))[0]  # a hit makes it the most recently used
    assert used == entries[0]
    out = io.StringIO()
    assert cli.main_inner(["cache", "prune", "--cache-dir", str(cache), "--max-size", "25K"], env={}, stdout=out) == 0
    assert [e.exists() for e in entries] == [True, False, False, True]
    assert "pruned 2 item(s)" in out.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (["--max-size", "lots"], "--max-size 'lots' is not a size; use a number of bytes or one with K, M, G or T, e.g. 20G"),
    (["--older-than", "-3"], "--older-than '-3' is not a number of days (0 or more), e.g. 30"),
    ([], "cache prune needs --older-than DAYS, --max-size SIZE or both"),
])  # fmt: skip
def test_bad_prune_options_exit_2_naming_the_value(tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cache", "prune", "--cache-dir", str(tmp_path), *args], env={}) == 2
    assert message in capsys.readouterr().err
