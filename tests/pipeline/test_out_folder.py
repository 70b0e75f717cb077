"""`--out`: checked before any job runs, replaced whole by build-all, never losing what is not ours.

- refused: the source tree, a folder holding it, `/`, the home folder, a non-empty folder that is
  not an earlier build-all output, a folder that cannot be written (found before any job runs);
- a failed build-all keeps the previous output (as the Dagger function exports nothing); with
  --keep-going the complete new output (with failures.md) replaces it, and files someone else put
  into the folder stay;
- a write that fails (a full disk) leaves the previous output whole and exits 2 naming the path and
  the OS error.

The runs that need a failing job use `build-all --libs` with a folder that lacks the library: the
job fails at once, nothing is compiled.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from host_helpers import BNB_CI, copy_env, copy_repo

from bitsandbytes_ci.core.results import JobResult
from bitsandbytes_ci.host import cli, outputs

CPU = ["--backend", "cpu", "--platform", "linux-x86_64"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("out-folder") / "repo")


def bnb_ci(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BNB_CI), *args], cwd=cwd, env={**copy_env(cwd), **env}, capture_output=True, text=True, timeout=900, check=False)


def snapshot(root: Path) -> dict[str, str]:
    """Every file below `root` (hidden ones too) with its sha256."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def earlier_output(out: Path, tmp: Path) -> dict[str, str]:
    """A complete build-all output of ours in `out` (a library, a wheel, reports, manifest), written by
    outputs.publish_build_all; returns its snapshot."""
    art = tmp / "earlier-artifacts"
    lib = art / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.write_bytes(b"\x7fELF an earlier library")
    lib.with_name(lib.name + ".build-info.json").write_text(json.dumps({"job_id": "cpu-linux-x86_64"}))
    wheel = art / "bitsandbytes-0.0.1-py3-none-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"an earlier wheel")
    audit = art / "audit.md"
    audit.write_text("earlier audit: PASS\n")
    results = [
        JobResult("cpu-linux-x86_64", "library", "built", "linux-x86_64", artifact=lib),
        JobResult("wheel-linux-x86_64", "wheel", "built", "linux-x86_64", artifact=wheel),
        JobResult("audit", "audit", "built", artifact=audit),
    ]
    outputs.publish_build_all(out, wheels=[(wheel, "linux-x86_64")], reports={"audit.md": audit}, results=results, digests={},
                              version="0.0.1", source_date_epoch="315532800")  # fmt: skip
    return snapshot(out)


def libs_of_another_platform(tmp: Path) -> Path:
    """A --libs folder with linux-aarch64's CPU library only: build-all of linux-x86_64 fails at once."""
    libs = tmp / "aarch64-libs"
    lib = libs / "linux" / "aarch64" / "libbitsandbytes_cpu.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"\x7fELF")
    lib.with_name(lib.name + ".build-info.json").write_text(json.dumps({"job_id": "cpu-linux-aarch64"}))
    return libs


# ---- refusals before any job runs -----------------------------------------------------------------


def test_out_that_is_the_source_tree_or_holds_it_is_refused_and_nothing_is_deleted(repo: Path, tmp_path: Path) -> None:
    (repo / "libs").mkdir(exist_ok=True)
    (repo / "libs" / "vendored.so").write_bytes(b"keep")
    (repo / "wheels").mkdir(exist_ok=True)
    (repo / "wheels" / "vendored-1.0-py3-none-any.whl").write_bytes(b"keep")
    (repo / "csrc" / ".notes.abcdefgh.tmp").write_text("keep")
    before = snapshot(repo)
    empty = libs_of_another_platform(tmp_path)
    same = bnb_ci(["build-all", "--source", str(repo), "--out", str(repo), "--libs", str(empty), *CPU], cwd=tmp_path)
    assert same.returncode == 2, same.stdout[-2000:] + same.stderr
    assert f"--out {repo} is the source tree; the outputs would mix with (and replace) its files" in same.stderr
    holding = bnb_ci(["build-all", "--source", str(repo), "--out", str(repo.parent), "--libs", str(empty), *CPU], cwd=tmp_path)
    assert holding.returncode == 2 and f"--out {repo.parent} holds the source tree {repo}" in holding.stderr
    libs = bnb_ci(["build-cpu", "--source", str(repo), "--out", str(repo), "--platform", "linux-x86_64"], cwd=tmp_path)
    assert libs.returncode == 2 and f"--out {repo} is the source tree" in libs.stderr
    assert "start" not in same.stdout + holding.stdout + libs.stdout
    assert snapshot(repo) == before


def test_out_that_is_the_root_or_the_home_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(outputs.OutputError, match=r"--out / is the root of the file system; pass a folder of its own"):
        cli.main_inner(["build-all", "--out", "/", *CPU], env={"HOME": str(home)}, stdout=io.StringIO())
    with pytest.raises(outputs.OutputError, match=rf"--out {home} is the home folder; pass a folder of its own for the outputs, e.g. --out {home / 'dist'}"):
        cli.main_inner(["build-all", "--out", str(home), *CPU], env={"HOME": str(home)}, stdout=io.StringIO())
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "bitsandbytes-0.0.1-py3-none-manylinux_2_28_x86_64.whl", "w") as z:
        z.writestr("bitsandbytes/__init__.py", "")
    with pytest.raises(outputs.OutputError, match="is the home folder"):
        cli.main_inner(["audit-wheels", "--wheels", str(wheels), "--out", str(home)], env={"HOME": str(home)}, stdout=io.StringIO())


def test_a_non_empty_folder_that_is_not_an_earlier_output_is_refused(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "wheels").mkdir(parents=True)
    (out / "wheels" / "vendored-1.0-py3-none-any.whl").write_bytes(b"keep")
    (out / ".draft.md.abcdefgh.tmp").write_text("keep")
    before = snapshot(out)
    run = bnb_ci(["build-all", "--source", str(repo), "--out", str(out), "--libs", str(tmp_path / "none"), *CPU], cwd=tmp_path)
    assert run.returncode == 2, run.stdout[-2000:]
    assert f"--out {out} is not empty and holds no manifest.json of an earlier build-all, so it is not an earlier output" in run.stderr
    assert snapshot(out) == before


def _unshare() -> list[str]:
    """A command prefix that runs its command as root of a new user and mount namespace (tmpfs, read-only mounts)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("unshare -rm (user and mount namespaces) is not available here")
    return ["unshare", "-rm"]


def test_a_read_only_out_is_refused_before_any_job_runs(repo: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {mnt} && mkdir {mnt}/out && mount -o remount,ro {mnt} && "
        f"{BNB_CI} build-cpu --platform linux-x86_64 --source {repo} --out {mnt}/out"
    )
    run = subprocess.run([*_unshare(), "sh", "-c", script], cwd=tmp_path, env=copy_env(tmp_path), capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr
    assert f"--out {mnt}/out: cannot write in {mnt}/out: Read-only file system; pass a writable folder" in run.stderr
    assert "[cpu-linux-x86_64]" not in run.stdout, "no job ran"


# ---- replacing the previous output ------------------------------------------------------------------


def test_a_failed_build_all_keeps_the_previous_output_and_keep_going_replaces_it_whole(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    before = earlier_output(out, tmp_path)
    missing = libs_of_another_platform(tmp_path)
    failed = bnb_ci(["build-all", "--source", str(repo), "--out", str(out), "--libs", str(missing), *CPU], cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr
    assert f"outputs: not written (a job failed); {out} keeps the previous output" in failed.stdout
    assert snapshot(out) == before

    (out / "wheels" / "notes.txt").write_text("someone's notes")  # not ours: must survive
    (out / "README.txt").write_text("someone's readme")
    (out / "wheels" / ".bitsandbytes-0.0.1-py3-none-manylinux_2_28_x86_64.whl.abcd1234.tmp").write_bytes(b"a killed copy of ours")
    kept_going = bnb_ci(["build-all", "--source", str(repo), "--out", str(out), "--libs", str(missing), "--keep-going", *CPU], cwd=tmp_path)
    assert kept_going.returncode == 1, kept_going.stdout[-3000:] + kept_going.stderr
    after = snapshot(out)
    assert sorted(after) == ["README.txt", "failures.md", "manifest.json", "summary.md", "wheels/notes.txt"]
    assert (out / "wheels" / "notes.txt").read_text() == "someone's notes" and (out / "README.txt").read_text() == "someone's readme"
    jobs = {j["id"]: j for j in json.loads((out / "manifest.json").read_text())["jobs"]}
    assert jobs["cpu-linux-x86_64"]["status"] == "failed" and "cpu-linux-x86_64" in (out / "failures.md").read_text()


def test_earlier_output_files_come_from_its_manifest(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    earlier_output(out, tmp_path)
    assert outputs.earlier_output_files(out) == {
        "audit.md", "failures.md", "manifest.json", "summary.md", "tries.md", "wheels/INCOMPLETE.md",
        "libs/linux/x86_64/libbitsandbytes_cpu.so", "libs/linux/x86_64/libbitsandbytes_cpu.so.build-info.json",
        "wheels/bitsandbytes-0.0.1-py3-none-manylinux_2_28_x86_64.whl",
    }  # fmt: skip
    assert outputs.earlier_output_files(tmp_path / "elsewhere") is None


def test_a_full_disk_leaves_the_previous_output_whole_and_exits_2(repo: Path, tmp_path: Path) -> None:
    """bnb-ci build-all --keep-going on a tmpfs filled up after an earlier output was written there."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    missing = libs_of_another_platform(tmp_path)
    driver = textwrap.dedent(f"""
        import json, subprocess, sys, hashlib
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_out_folder import earlier_output, snapshot
        mnt = Path({str(mnt)!r})
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
        before = earlier_output(mnt / "dist", mnt / "scratch")
        try:
            with open(mnt / "filler", "wb") as f:
                while True:
                    f.write(b"x" * 4096)
                    f.flush()
        except OSError:
            pass
        run = subprocess.run([{str(BNB_CI)!r}, "build-all", "--source", {str(repo)!r}, "--out", str(mnt / "dist"), "--libs", {str(missing)!r},
                              "--keep-going", "--cache-dir", {str(tmp_path / "cache")!r}, *{CPU!r}], capture_output=True, text=True)
        left = sorted(p.name for p in mnt.iterdir())
        print(json.dumps({{"rc": run.returncode, "stderr": run.stderr, "stdout": run.stdout[-3000:], "same": snapshot(mnt / "dist") == before,
                          "left": left, "inside": sorted(p.name for p in (mnt / "dist").iterdir())}}))
    """)
    done = subprocess.run([*_unshare(), sys.executable, "-c", driver], cwd=tmp_path, env=copy_env(tmp_path), capture_output=True, text=True,
                          timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 2, result
    assert f"writing the outputs into {mnt / 'dist'} failed: [Errno 28] No space left on device" in result["stderr"]
    assert "the previous output there is kept whole" in result["stderr"]
    assert result["same"], "the previous output changed"
    assert result["left"] == ["dist", "filler", "scratch"] and not any(n.startswith(".bnb-") for n in result["inside"]), result


def test_a_new_output_folder_gets_the_mode_of_any_new_folder(tmp_path: Path) -> None:
    """The staging folder becomes --out when there was none: its mode follows the umask, as mkdir's does."""
    out = tmp_path / "dist"
    earlier_output(out, tmp_path)
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode & 0o7777 == (tmp_path / "plain").stat().st_mode & 0o7777
    assert not [p for p in tmp_path.iterdir() if ".bnb-staging-" in p.name], "no staging folder is left"


def test_an_output_moved_aside_by_a_killed_switch_is_restored_by_the_next_run(tmp_path: Path) -> None:
    """A run killed between moving the earlier output aside and moving the new one in leaves no
    manifest.json in --out: the next publish moves the earlier files back before anything else."""
    out = tmp_path / "dist"
    before = earlier_output(out, tmp_path)
    aside = out / f"{outputs.PREVIOUS_PREFIX}killed"
    aside.mkdir()
    for name in ("manifest.json", "libs", "wheels"):
        (out / name).rename(aside / name)
    (out / f"{outputs.STAGING_PREFIX}killed").mkdir()  # the killed run's half-written output
    outputs.recover(out)
    assert snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".bnb-")]
