"""The module through `dagger call`, against a real engine (marker `engine`; skipped where the Dagger
CLI or its engine is missing). The same scenarios as the dry runs, now executed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def dagger_cli() -> Iterator[str]:
    cli = shutil.which("dagger")
    if cli is None:
        pytest.skip("no Dagger CLI on PATH (engine tests need `dagger` v0.21.11 and a container runtime)")
    probe = subprocess.run([cli, "--silent", "core", "version"], capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    if probe.returncode != 0:
        pytest.skip(f"the Dagger engine is not reachable: {probe.stderr.strip()[-300:]}")
    yield cli


def call(cli: str, *args: str, timeout: int = 7200) -> str:
    proc = subprocess.run([cli, "--progress", "plain", "call", *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plan(dagger_cli: str) -> None:
    out = call(dagger_cli, "plan", "--backend=cuda", "--version=12.8")
    assert "cuda128-linux-x86_64" in out and "cuda128-linux-aarch64" in out and "native-runner" in out
    jobs = json.loads(call(dagger_cli, "plan", "--backend=cuda", "--version=12.8", "--format=json"))
    assert {j["id"] for j in jobs} == {"cuda128-linux-x86_64", "cuda128-linux-aarch64", "cuda128-windows-x64"}
    shards = json.loads(call(dagger_cli, "plan", "--format=ci-matrix"))
    assert shards["build"]["include"] and shards["build-native"]["include"]


def test_build_cpu_exports_the_library(dagger_cli: str, tmp_path: Path) -> None:
    call(dagger_cli, "build-cpu", "--platform=linux-x86_64", "export", f"--path={tmp_path}")
    library = tmp_path / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    assert library.read_bytes()[:4] == b"\x7fELF"
    info = json.loads((tmp_path / "linux" / "x86_64" / "libbitsandbytes_cpu.so.build-info.json").read_text())
    assert info["library_sha256"] == sha256(library) and info["job_id"] == "cpu-linux-x86_64"


def test_build_cpu_is_reproducible(dagger_cli: str, tmp_path: Path) -> None:
    """A second build (other ccache seed, so not a cached result) yields the same bytes."""
    first, second = tmp_path / "a", tmp_path / "b"
    call(dagger_cli, "build-cpu", "--platform=linux-x86_64", "export", f"--path={first}")
    (tmp_path / "seed").mkdir()
    call(dagger_cli, "build-cpu", "--platform=linux-x86_64", f"--ccache={tmp_path / 'seed'}", "export", f"--path={second}")
    lib = Path("linux/x86_64/libbitsandbytes_cpu.so")
    assert sha256(first / lib) == sha256(second / lib)
    assert (second / "ccache" / "cpu-linux-x86_64").is_dir()


def test_build_all_cpu_wheels_tries_audit_manifest(dagger_cli: str, tmp_path: Path) -> None:
    """The CPU libraries of all five platforms (zig), one wheel each, tried, audited, described."""
    call(dagger_cli, "build-all", "--backend=cpu", "export", f"--path={tmp_path}")
    wheels = sorted(p.name for p in (tmp_path / "wheels").glob("*.whl"))
    tags = sorted(w.rsplit("-", 1)[1].removesuffix(".whl") for w in wheels)
    assert tags == sorted(["manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "win_amd64", "win_arm64", "macosx_14_0_arm64"])
    assert "Result: **PASS**" in (tmp_path / "audit.md").read_text()
    tries = (tmp_path / "tries.md").read_text()
    assert "Result: **PASS**" in tries and "| linux-x86_64 | plain | venv | passed |" in tries and "| linux-aarch64 | plain | venv | passed |" in tries
    assert "| windows-x64 | plain | wine | passed |" in tries
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["ok"] is True and {j["status"] for j in manifest["jobs"]} == {"built"}
    assert {j["kind"] for j in manifest["jobs"]} == {"library", "wheel", "try", "audit"}
    assert (tmp_path / "summary.md").read_text().startswith("## dagger call build-all")
    assert not (tmp_path / "failures.md").exists()


def test_build_all_from_libs_packs_what_the_shards_built(dagger_cli: str, tmp_path: Path) -> None:
    """The final CI job: the libraries of an earlier call (a shard), packed, tried and audited."""
    libs, dist = tmp_path / "libs", tmp_path / "dist"
    call(dagger_cli, "build-cpu", "--platform=linux-x86_64", "export", f"--path={libs}")
    call(dagger_cli, "build-all", "--backend=cpu", "--platform=linux-x86_64", f"--libs={libs}", "export", f"--path={dist}")
    [wheel] = (dist / "wheels").glob("*.whl")
    assert wheel.name.endswith("-py3-none-manylinux_2_28_x86_64.whl")
    assert sha256(dist / "libs/linux/x86_64/libbitsandbytes_cpu.so") == sha256(libs / "linux/x86_64/libbitsandbytes_cpu.so")


def test_test_wheels_alone(dagger_cli: str, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    call(dagger_cli, "build-all", "--backend=cpu", "--platform=linux-x86_64", "export", f"--path={dist}")
    call(dagger_cli, "test-wheels", f"--wheels={dist / 'wheels'}", "export", f"--path={tmp_path / 'tries.md'}")
    assert "| linux-x86_64 | plain | venv | passed |" in (tmp_path / "tries.md").read_text()


def test_lock_images(dagger_cli: str, tmp_path: Path) -> None:
    from bitsandbytes_ci.core.image_lock import load_lock

    lock = tmp_path / "images.lock.toml"
    call(dagger_cli, "lock-images", "export", f"--path={lock}")
    digests = load_lock(lock)
    assert digests and all(d and d.startswith("sha256:") for d in digests.values())
