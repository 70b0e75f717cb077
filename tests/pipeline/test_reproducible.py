"""Every artifact of the host executor is the same, byte for byte, across two independent builds.

Two copies of this repository in different folders are built with `bnb-ci build-all` (CPU, CUDA 13
for one arch, HIP for gfx90a with Debian's hipcc), each with its own cache folder, at different
times, with different umasks, locales and time zones, and the second without ccache and with a stray
SOURCE_DATE_EPOCH in its environment (which bnb-ci must ignore: only --source-date-epoch sets it).
Every file of the two output folders (libraries, build-info, wheel, audit.md, manifest.json) must
have the same sha256; summary.md, the human-readable report with timings and paths, is the exception.

The support matrix has no ROCm 5.2 (Debian's packaged ROCm, the one HIP compiler here), so the test
builds from a copy of the matrix that adds it; everything else comes from the real matrix.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from host_helpers import BNB_CI, copy_repo, host_env

from bitsandbytes_ci.host.outputs import WHEELS_SUBDIR
from bnb_build import elf

ARCHS = "75;gfx90a"
SELECTION = ["--backend", "cpu", "--backend", "cuda", "--backend", "rocm", "--platform", "linux-x86_64", "--archs", ARCHS]
NOT_ARTIFACTS = {"summary.md"}  # timings and absolute paths, for people; not an artifact


def with_debian_rocm(matrix: str) -> str:
    """The matrix plus ROCm 5.2.3 on linux-x86_64 (Debian's hipcc), without flags its clang 15 lacks."""
    edits = [
        (r'(\n\s*\{ version = "6\.4\.4", platforms = \["linux-x86_64"\] \},)', r'\n  { version = "5.2.3", platforms = ["linux-x86_64"] },\1'),
        (r'(platforms = \["linux-x86_64"\], since = )"6\.0"(, image = "rocm/)', r'\1"5.0"\2'),
        (r'(platforms = \["linux-x86_64"\], since = )"6\.0"(, archs = "gfx90a)', r'\1"5.0"\2'),
        (r'\ncmake_defines = \{ CMAKE_HIP_FLAGS = "--offload-compress" \}', ""),
    ]
    for pattern, replacement in edits:
        matrix, count = re.subn(pattern, replacement, matrix)
        assert count == 1, f"the support matrix changed shape; update this test's edit {pattern!r}"
    return matrix


class Build:
    def __init__(self, out: Path, result: subprocess.CompletedProcess[str]) -> None:
        self.out, self.result = out, result

    def files(self) -> dict[str, str]:
        return {
            p.relative_to(self.out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.out.rglob("*"))
            if p.is_file() and p.name not in NOT_ARTIFACTS
        }


def build(snapshot: Path, root: Path, *, umask: int, env: dict[str, str]) -> Build:
    repo = root / "checkout"
    shutil.copytree(snapshot, repo)
    matrix = root / "matrix.toml"
    matrix.write_text(with_debian_rocm((repo / "pipeline/src/bitsandbytes_ci/core/matrix.toml").read_text()))
    out = root / "out"
    argv = [str(BNB_CI), "--matrix", str(matrix), "build-all", "--out", str(out), "--cache-dir", str(root / "cache"), *SELECTION]
    result = subprocess.run(
        argv, cwd=repo, env=env, capture_output=True, text=True, timeout=2400, check=False,
        preexec_fn=lambda: os.umask(umask),  # noqa: PLW1509  (single-threaded at this point)
    )  # fmt: skip
    return Build(out, result)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Build, Build]:
    if shutil.which("hipcc") is None or not Path("/usr/include/hip/hip_version.h").is_file():
        pytest.skip("Debian's hipcc (hipcc, libamdhip64-dev) is not installed")
    root = tmp_path_factory.mktemp("reproducible")
    snapshot = copy_repo(root / "snapshot")  # one snapshot: both builds get the very same sources
    # zig's own libc/libc++ builds: the session's cache (tests/conftest.py); zig addresses it by content.
    shared = {"ZIG_GLOBAL_CACHE_DIR": os.environ.get("ZIG_GLOBAL_CACHE_DIR", str(root / "zig-cache"))}
    first = build(snapshot, root / "a", umask=0o022, env=host_env() | shared | {"LC_ALL": "C.UTF-8", "TZ": "UTC"})
    time.sleep(2)  # a later build: a timestamp that leaks would differ
    second_env = host_env() | shared | {
        "LC_ALL": "de_DE.UTF-8", "LANG": "de_DE.UTF-8", "TZ": "America/New_York",
        "BNB_NO_CCACHE": "1", "SOURCE_DATE_EPOCH": "1234567890",
    }  # fmt: skip
    second = build(snapshot, root / "elsewhere" / "much" / "deeper", umask=0o077, env=second_env)
    return first, second


def test_both_builds_make_every_artifact(builds: tuple[Build, Build]) -> None:
    for b in builds:
        assert b.result.returncode == 0, b.result.stdout[-6000:] + b.result.stderr[-3000:]
    files = builds[0].files()
    libs = sorted(p for p in files if p.startswith("libs/") and not p.endswith(".build-info.json"))
    assert libs == [f"libs/linux/x86_64/libbitsandbytes_{v}.so" for v in ("cpu", "cuda130", "rocm52")]
    assert len([p for p in files if p.startswith(f"{WHEELS_SUBDIR}/") and p.endswith(".whl")]) == 1
    assert {"audit.md", "manifest.json"} <= set(files) and "failures.md" not in files


def test_every_artifact_is_identical(builds: tuple[Build, Build]) -> None:
    first, second = builds
    assert second.result.returncode == 0, second.result.stdout[-6000:]
    a, b = first.files(), second.files()
    assert sorted(a) == sorted(b)
    different = [path for path in a if a[path] != b[path]]
    diffs = []
    for path in different:
        if path.endswith((".json", ".md")):
            lines = difflib.unified_diff((first.out / path).read_text().splitlines(), (second.out / path).read_text().splitlines(), lineterm="")
            diffs.append("\n".join(list(lines)[:60]))
    assert different == [], f"not reproducible: {different}\n" + "\n".join(diffs)


def test_no_build_path_run_path_or_temporary_name_leaks(builds: tuple[Build, Build]) -> None:
    for b in builds:
        checkout = str(b.out.parent / "checkout").encode()
        for path in sorted(b.out.rglob("*")):
            if not path.is_file() or path.name in NOT_ARTIFACTS:
                continue
            data = path.read_bytes()
            assert checkout not in data and str(b.out.parent).encode() not in data, f"{path} holds a build path"
            assert b"tmpxft_" not in data, f"{path} holds an nvcc temporary file name"
        for library in (b.out / "libs/linux/x86_64").glob("libbitsandbytes_*.so"):
            info = elf.read_elf(library)
            assert info.runpath == [] and info.rpath == [], f"{library.name}: run path {info.runpath or info.rpath}"


def test_manifest_ignores_the_environment_and_records_the_default_epoch(builds: tuple[Build, Build]) -> None:
    manifest = (builds[1].out / "manifest.json").read_text()
    assert '"source_date_epoch": "315532800"' in manifest and "1234567890" not in manifest
    assert sys.version  # the manifest holds no interpreter or host detail beyond the compilers' versions
    assert "/tmp" not in manifest
