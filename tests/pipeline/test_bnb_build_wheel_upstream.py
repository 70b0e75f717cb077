"""The wheel step (bnb_build.wheel) on the upstream-shaped tree (tests/fixtures/upstream_tree), unmodified.

Its backend is scikit-build-core's setuptools one, which writes cp3XX-cp3XX-linux_x86_64 wheels: the step
retags them, vendors libgomp with auditwheel on request, and two builds give the same bytes. The CPU library
is built with CMake the way upstream builds it. The isolated build environment installs the tree's build
requirements from the package index; the tests are skipped (with pip's reason) when it cannot provide them.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from bnb_build_helpers import (
    UPSTREAM_VERSION,
    check_ok,
    copy_upstream_tree,
    pinned_version,
    require_downloads,
    run_step,
    upstream_cpu_libs,
    wheel_args,
)
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

AIMED = (2, 28)
BUILD_REQUIREMENTS = ("scikit-build-core", "setuptools", "trove-classifiers")
LIBRARY = "bitsandbytes/libbitsandbytes_cpu.so"


@pytest.fixture(scope="module", autouse=True)
def build_requirements() -> None:
    require_downloads(*(f"{name}=={pinned_version(name)}" for name in BUILD_REQUIREMENTS))


def upstream_work(where: Path) -> Path:
    """A wheel work dir: ``src/`` = a clean copy of the fixture tree, ``libs/`` = its CPU library."""
    where.mkdir(parents=True)
    copy_upstream_tree(where / "src")
    shutil.copytree(upstream_cpu_libs(), where / "libs")
    return where


def pack(work: Path, *extra: str) -> Tuple[Path, str]:
    args = wheel_args(f"manylinux_{AIMED[0]}_{AIMED[1]}_x86_64", source="src") + list(extra)
    result = check_ok(run_step(args, work))
    (built,) = sorted((work / "wheels").glob("*.whl"))
    return built, result.stdout


def dynamic(data: bytes) -> Dict[str, List[str]]:
    """NEEDED, RPATH and RUNPATH of an ELF file."""
    found: Dict[str, List[str]] = {"needed": [], "rpath": [], "runpath": []}
    for section in ELFFile(io.BytesIO(data)).iter_sections():
        if isinstance(section, DynamicSection):
            for tag in section.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    found["needed"].append(tag.needed)
                elif tag.entry.d_tag == "DT_RPATH":
                    found["rpath"] += tag.rpath.split(":")
                elif tag.entry.d_tag == "DT_RUNPATH":
                    found["runpath"] += tag.runpath.split(":")
    return found


def newest_glibc(data: bytes) -> Optional[Tuple[int, int]]:
    best = None
    for section in ELFFile(io.BytesIO(data)).iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for _, auxiliaries in section.iter_versions():
                for aux in auxiliaries:
                    m = re.match(r"^GLIBC_(\d+)\.(\d+)", aux.name)
                    if m and (best is None or (int(m.group(1)), int(m.group(2))) > best):
                        best = (int(m.group(1)), int(m.group(2)))
    return best


def expected_tag(*libraries: bytes) -> str:
    """The aimed tag, raised to the newest glibc the libraries need (what the step must choose)."""
    glibc = max([AIMED] + [v for v in map(newest_glibc, libraries) if v is not None])
    return f"manylinux_{glibc[0]}_{glibc[1]}_x86_64"


def read_members(wheel: Path) -> Dict[str, bytes]:
    with zipfile.ZipFile(wheel) as z:
        return {name: z.read(name) for name in z.namelist()}


def install_and_selftest(wheel: Path, where: Path) -> str:
    """The wheel installed (no dependencies) into a new venv; ``bitsandbytes.selftest()`` run there, then
    the files mapped into the process listed."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    script = ("import bitsandbytes; print(bitsandbytes.__file__, bitsandbytes.__version__); bitsandbytes.selftest(); "
              "print(open('/proc/self/maps').read())")
    result = subprocess.run([str(python), "-I", "-c", script], cwd=str(where), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(venv) in result.stdout and UPSTREAM_VERSION in result.stdout and "selftest ok" in result.stdout
    return result.stdout


def test_the_upstream_tree_packs_retagged_with_the_pinned_build_requirements(tmp_path: Path) -> None:
    work = upstream_work(tmp_path / "w")
    library = (work / "libs" / "linux" / "x86_64" / "libbitsandbytes_cpu.so").read_bytes()
    built, log = pack(work)

    tag = expected_tag(library)
    assert built.name == f"bitsandbytes-{UPSTREAM_VERSION}-py3-none-{tag}.whl"
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert f"bitsandbytes-{UPSTREAM_VERSION}-{python}-{python}-linux_x86_64.whl is not tagged py3-none-{tag}: retagging" in log
    assert f"-m wheel tags --remove --python-tag py3 --abi-tag none --platform-tag {tag}" in log
    assert "wheel.tags" not in log, "only scikit_build_core.build is handed the tag"
    for name in BUILD_REQUIREMENTS:
        assert f"- {name}=={pinned_version(name)}" in log, f"{name} not installed at its pin"
    assert "BNB_SKIP_CMAKE is set" in log

    members = read_members(built)
    dist_info = f"bitsandbytes-{UPSTREAM_VERSION}.dist-info"
    assert f"\nVersion: {UPSTREAM_VERSION}\n" in members[f"{dist_info}/METADATA"].decode()
    wheel_meta = members[f"{dist_info}/WHEEL"].decode()
    assert re.findall(r"^Tag: (\S+)$", wheel_meta, re.MULTILINE) == [f"py3-none-{tag}"]
    assert "Root-Is-Purelib: false" in wheel_meta
    assert sorted(n for n in members if "libbitsandbytes_" in n) == [LIBRARY]
    assert not [n for n in members if ".libs/" in n], "nothing vendored without --vendor"
    assert members[LIBRARY] == library
    assert "libgomp.so.1" in dynamic(members[LIBRARY])["needed"]
    install_and_selftest(built, tmp_path)


def test_the_upstream_tree_with_libgomp_vendored_installs_and_runs(tmp_path: Path) -> None:
    work = upstream_work(tmp_path / "w")
    built, log = pack(work, "--vendor", "libgomp.so.1")

    m = re.search(r"^vendoring libgomp\.so\.1 \((/\S+)\); excluding nothing else$", log, re.MULTILINE)
    assert m, log
    system_libgomp = Path(m.group(1))
    library = (work / "libs" / "linux" / "x86_64" / "libbitsandbytes_cpu.so").read_bytes()
    tag = expected_tag(library, system_libgomp.read_bytes())
    assert built.name == f"bitsandbytes-{UPSTREAM_VERSION}-py3-none-{tag}.whl"
    assert f"-m auditwheel repair --plat {tag} --only-plat -w " in log

    members = read_members(built)
    grafted = [n for n in members if n.startswith("bitsandbytes.libs/")]
    assert len(grafted) == 1 and re.match(r"^bitsandbytes\.libs/libgomp-[0-9a-f]{8}\.so\.1", grafted[0]), grafted
    packed = dynamic(members[LIBRARY])
    assert Path(grafted[0]).name in packed["needed"] and "libgomp.so.1" not in packed["needed"]
    search = packed["runpath"] or packed["rpath"]
    assert search == ["$ORIGIN/../bitsandbytes.libs"], packed
    wheel_meta = members[f"bitsandbytes-{UPSTREAM_VERSION}.dist-info/WHEEL"].decode()
    assert re.findall(r"^Tag: (\S+)$", wheel_meta, re.MULTILINE) == [f"py3-none-{tag}"]

    maps = install_and_selftest(built, tmp_path)
    loaded = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line}
    assert loaded and all("/site-packages/bitsandbytes.libs/libgomp-" in path for path in loaded), loaded


def test_upstream_wheels_built_in_two_folders_are_identical(tmp_path: Path) -> None:
    first, _ = pack(upstream_work(tmp_path / "a" / "w"), "--vendor", "libgomp.so.1")
    second, _ = pack(upstream_work(tmp_path / "elsewhere" / "deeper" / "w"), "--vendor", "libgomp.so.1")
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as z:
        names = z.namelist()
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert names[-1].endswith(".dist-info/RECORD") and names == sorted(names[:-1], key=lambda n: (".dist-info/" in n, n)) + names[-1:]


def test_stale_libraries_in_the_upstream_tree_are_not_packed(tmp_path: Path) -> None:
    work = upstream_work(tmp_path / "w")
    library = work / "libs" / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    shutil.copyfile(library, work / "src" / "bitsandbytes" / "libbitsandbytes_cuda130.so")
    old_build = work / "src" / "build" / "lib.linux-x86_64-cpython-311" / "bitsandbytes"
    old_build.mkdir(parents=True)
    shutil.copyfile(library, old_build / "libbitsandbytes_cuda124.so")
    built, log = pack(work)

    assert "removing build/ from the copied sources" in log and "removing bitsandbytes.egg-info/" not in log
    assert "removing bitsandbytes/libbitsandbytes_cuda130.so from the copied sources" in log
    assert sorted(n for n in read_members(built) if "libbitsandbytes_" in n) == [LIBRARY]
    assert (work / "src" / "bitsandbytes" / "libbitsandbytes_cuda130.so").exists(), "--source itself is left alone"
