"""linux-aarch64 CPU libraries of an OpenMP tree (upstream's shape) built on this x86_64 host with
Debian's cross gcc (g++-aarch64-linux-gnu, sysroot from libc6-dev-arm64-cross), packed with the
cross sysroot's libgomp vendored as on x86_64, and audited by the same rules. The end-to-end test
needs the cross compiler (.ci/run installs it) and is skipped without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from host_helpers import BNB_CI, host_env

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs
from bitsandbytes_ci.core.tree import read_tree
from bitsandbytes_ci.host import toolchains
from bitsandbytes_ci.host.toolchains import HostToolchains, Runnable, Skip, decide, step_environment
from bnb_build import elf, wheel as wheel_step
from bnb_build.platforms import get_platform

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO / "tests" / "fixtures" / "upstream_tree"
AARCH64_ELF = 183
CROSS_GXX = shutil.which("aarch64-linux-gnu-g++")
SYSROOT = Path("/usr/aarch64-linux-gnu")


def aarch64_job(tree: Path = UPSTREAM):
    [job] = plan_jobs(load_matrix(), Selection(backends=("cpu",), platforms=("linux-aarch64",)), read_tree(tree))
    return job


def fake_host(**kwargs: object) -> HostToolchains:
    """Detection results as data (what a machine with or without the cross gcc would have found)."""
    defaults: dict[str, object] = dict(platform="linux-x86_64", python_dir=Path(sys.executable).parent, path="/usr/bin", cmake="/usr/bin/cmake", cxx="/usr/bin/c++")
    return HostToolchains(**(defaults | kwargs))  # type: ignore[arg-type]


def base(host: HostToolchains) -> dict[str, str]:
    return step_environment({"PATH": "/usr/bin"}, host, pythonpath=REPO / "pipeline" / "src", source_date_epoch="315532800")


def test_the_openmp_tree_plans_gcc_for_linux_aarch64() -> None:
    job = aarch64_job()
    assert (job.toolchain, job.runner, job.vendor, job.openmp_wanted) == ("gcc", "container", ["libgomp.so.1"], True)


def test_without_the_cross_gcc_the_skip_names_the_packages() -> None:
    host = fake_host()
    decision = decide(aarch64_job(), host, base(host))
    assert isinstance(decision, Skip)
    assert "apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross" in decision.reason


@pytest.mark.skipif(CROSS_GXX is None or not (SYSROOT / "include" / "stdio.h").is_file(), reason="needs g++-aarch64-linux-gnu and libc6-dev-arm64-cross")
def test_with_the_cross_gcc_the_job_runs_here_with_the_pipelines_toolchain_file() -> None:
    host = fake_host(cross_gxx={"linux-aarch64": CROSS_GXX})
    decision = decide(aarch64_job(), host, base(host))
    assert isinstance(decision, Runnable), decision
    assert decision.changes == {"CMAKE_TOOLCHAIN_FILE": toolchains.GCC_CROSS_TOOLCHAIN, "BNB_GCC_CROSS_TRIPLE": "aarch64-linux-gnu"}
    assert Path(toolchains.GCC_CROSS_TOOLCHAIN).is_file() and "cross gcc" in decision.toolchain
    # a zig-built tree's aarch64 job stays a zig cross job
    ours = aarch64_job(REPO)
    assert ours.runner == "cross" and not toolchains.gcc_cross_applies(ours, host)


def test_auditwheel_is_pointed_at_the_cross_sysroot_for_a_foreign_wheel(tmp_path: Path) -> None:
    sysroot = tmp_path / "lib"
    sysroot.mkdir()
    aarch64, x86 = get_platform("linux-aarch64"), get_platform("linux-x86_64")
    env = wheel_step.with_cross_sysroot({"AUDITWHEEL_LD_LIBRARY_PATH": "/elsewhere"}, aarch64, "x86_64", {"aarch64": str(sysroot)})
    assert env["AUDITWHEEL_LD_LIBRARY_PATH"] == f"{sysroot}:/elsewhere"
    assert "AUDITWHEEL_LD_LIBRARY_PATH" not in wheel_step.with_cross_sysroot({}, x86, "x86_64", {"x86_64": str(sysroot)}), "own arch: unchanged"
    argv = ["py", "-m", "auditwheel", "repair", "--plat", "manylinux_2_34_aarch64", "--only-plat", "-w", "o", "w.whl"]
    assert wheel_step.foreign_repair(argv, "manylinux_2_34_aarch64", machine="x86_64")[4:6] == ["--plat", "auto"]
    assert wheel_step.foreign_repair(argv, "manylinux_2_34_aarch64", machine="aarch64") == argv


@pytest.mark.skipif(CROSS_GXX is None or not (SYSROOT / "include" / "stdio.h").is_file(), reason="needs g++-aarch64-linux-gnu and libc6-dev-arm64-cross")
def test_build_all_cross_builds_packs_and_audits_the_aarch64_wheel(tmp_path: Path) -> None:
    tree, out = tmp_path / "tree", tmp_path / "out"
    shutil.copytree(UPSTREAM, tree)
    env = {**host_env(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([str(BNB_CI), "build-all", "--source", str(tree), "--out", str(out), "--backend", "cpu", "--platform", "linux-aarch64"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    library = out / "libs" / "linux" / "aarch64" / "libbitsandbytes_cpu.so"
    info = elf.read_elf(library)
    assert info.machine == AARCH64_ELF and "libgomp.so.1" in info.needed
    manifest = json.loads((out / "manifest.json").read_text())
    [cpu] = [j for j in manifest["jobs"] if j["id"] == "cpu-linux-aarch64"]
    assert cpu["build_info"]["openmp"] == {"asked": True, "found": True}
    [wheel] = sorted((out / "wheels").glob("*.whl"))
    assert wheel.name.startswith("bitsandbytes-") and wheel.name.endswith("_aarch64.whl") and "-py3-none-manylinux_" in wheel.name
    with zipfile.ZipFile(wheel) as z:
        [gomp] = [n for n in z.namelist() if n.startswith("bitsandbytes.libs/libgomp")]
        grafted = tmp_path / "libgomp.so"
        grafted.write_bytes(z.read(gomp))
    assert elf.read_elf(grafted).machine == AARCH64_ELF, "the cross sysroot's libgomp, not the host's"
    assert "Result: **PASS**" in (out / "audit.md").read_text()
