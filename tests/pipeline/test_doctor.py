"""`bnb-ci doctor`: this host's toolkits, the jobs they enable, install hints for the missing ones."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from host_helpers import BNB_CI, host_env

from bitsandbytes_ci.host import cli, doctor
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import plan_jobs
from bitsandbytes_ci.host.toolchains import HostToolchains, Installation

NVCC_13 = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"


def rows_by_toolkit(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| toolkit |"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.skipif(not Path("/usr/local/cuda/bin/nvcc").exists(), reason="needs this host's CUDA 13.0")
def test_this_host_reports_nvcc_13_0_and_the_jobs_it_enables() -> None:
    result = subprocess.run([str(BNB_CI), "doctor"], env=host_env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = rows_by_toolkit(result.stdout)
    toolkit, found, enables, hint = rows["nvcc 13.0"]
    assert found.startswith("13.0.") and "/usr/local/cuda" in found and "cuda130-linux-x86_64" in enables and hint == ""
    # The jobs that compile with the host's C++ compiler: the CUDA one, not this tree's zig CPU jobs.
    assert "cuda130-linux-x86_64" in rows["C++ compiler"][2] and "cpu-linux-x86_64" not in rows["C++ compiler"][2]
    # Missing toolkits: what they would enable, and how to install them.
    assert rows["nvcc 12.8"][1:] == ["not found", "(cuda128-linux-x86_64)", doctor.CUDA_HINT.format(v="12.8")]
    assert rows["icpx 2025"][1] == "not found" and "intel-oneapi-compiler-dpcpp-cpp-2025" in rows["icpx 2025"][3]
    assert rows["hipcc 6.4"][2] == "(rocm64-linux-x86_64)" and "ROCM_PATH" in rows["hipcc 6.4"][3]
    for name in ("aarch64-linux-gnu-g++", "zig", "wine64", "qemu-aarch64-static"):
        [row] = [cells for key, cells in rows.items() if key.startswith(name + " (")]
        assert (row[1] == "not found") == (row[3] != ""), row  # a hint exactly when it is missing
    assert "dagger CLI" in rows and "dagger engine" in rows
    assert "bnb-ci can build " in result.stdout and "cuda130-linux-x86_64" in result.stdout.split("bnb-ci can build ")[1]


def fake_host() -> HostToolchains:
    cuda = Installation("cuda", "13.0.88", Path("/usr/local/cuda-13.0"), Path("/usr/local/cuda-13.0/bin/nvcc"), "/usr/local/cuda*")
    return HostToolchains(platform="linux-x86_64", python_dir=Path(sys.executable).parent, path="/usr/bin", cmake="/usr/bin/cmake", cxx="/usr/bin/c++", cuda=(cuda,))


def test_diagnose_is_pure_and_names_hints_for_missing_tools() -> None:
    jobs = plan_jobs(load_matrix())
    missing = doctor.Tool("x", None)
    extras = doctor.Extras(cross_gxx=missing, zig=missing, wine=missing, qemu=missing, dagger=missing,
                           engine=doctor.Tool("dagger engine", None, detail="no dagger CLI to reach it with"))  # fmt: skip
    host = fake_host()
    rows = {r.toolkit: r for r in doctor.diagnose(jobs, host, {"PATH": "/usr/bin"}, extras)}
    assert rows["nvcc 13.0"].enables == ("cuda130-linux-x86_64",) and rows["nvcc 13.0"].hint == ""
    assert rows["ninja"].hint.startswith("install the pipeline with its host extra, e.g. pip install './pipeline[host]'") and rows["ccache"].hint == "apt-get install ccache"
    assert rows["dagger CLI"].hint.startswith("curl -fsSL https://dl.dagger.io/dagger/install.sh")
    assert rows["dagger CLI"].would_enable and rows["dagger CLI"].enables[0].endswith("Linux container job(s) through `dagger call build-all`")
    assert "start Docker" in rows["dagger engine"].hint


def test_doctor_verb_exits_0_with_injected_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "detect_host", lambda env, **kw: fake_host())
    monkeypatch.setattr(doctor, "detect_extras", lambda env, **kw: doctor.Extras(*(doctor.Tool(n, f"/usr/bin/{n}", "1.0") for n in ("g", "z", "w", "q", "d", "e"))))
    out = io.StringIO()
    assert cli.main_inner(["doctor"], env={"PATH": "/usr/bin"}, stdout=out) == 0
    text = out.getvalue()
    assert "| dagger engine | reachable (1.0) |" in text
    assert "cuda130-linux-x86_64" in text.rstrip().splitlines()[-1]


def test_plan_here_says_per_job_whether_this_host_builds_it() -> None:
    out = io.StringIO()
    code = cli.main_inner(["plan", "--here", "--platform", "linux-x86_64", "--platform", "windows-x64", "--backend", "cpu", "--backend", "cuda"],
                          env=host_env(), stdout=out)  # fmt: skip
    assert code == 0
    table, verdict_lines = out.getvalue().split("buildable here (linux-x86_64):\n")
    assert "cpu-linux-x86_64" in table
    verdict = {line.split()[0]: line.split(None, 1)[1] for line in verdict_lines.splitlines() if line.strip()}
    assert verdict["cpu-linux-x86_64"].startswith("yes (zig")
    assert verdict["cuda130-windows-x64"].startswith("no: native-runner job for windows-x64")
    assert set(verdict) == {line.split()[0] for line in table.splitlines()[1:] if line.split() and "-" in line.split()[0] and not line.startswith("wheel")}


def test_plan_here_refuses_a_data_format() -> None:
    with pytest.raises(cli.SelectionError, match=r"--here adds a text table .* --format json .*; use it with --format table or markdown"):
        cli.main_inner(["plan", "--here", "--format", "json"], env=host_env(), stdout=io.StringIO())


def cuda_root(root: Path, *, cublas: bool) -> Installation:
    """A CUDA 13.0 root's file layout (headers and library names only: what the component check
    reads; no compiler runs here), with or without cuBLAS."""
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    if cublas:
        for header, library in (("cublas_v2.h", "libcublas.so.13"), ("cublasLt.h", "libcublasLt.so.13")):
            (root / "include" / header).write_text("")
            (root / "lib" / library).write_text("")
    return Installation("cuda", "13.0.88", root, root / "bin" / "nvcc", "$BNB_CUDA_ROOTS" if cublas else "/usr/local/cuda*")


def test_cublas_of_another_root_of_the_version_counts_as_found(tmp_path: Path) -> None:
    """The system CUDA lacks cuBLAS, the one BNB_CUDA_ROOTS names has it: found, and the job enabled."""
    from bitsandbytes_ci.core.tree import read_tree

    jobs = plan_jobs(load_matrix(), tree=read_tree(Path(__file__).resolve().parents[1] / "fixtures" / "upstream_tree"))
    bare, full = cuda_root(tmp_path / "system", cublas=False), cuda_root(tmp_path / "wheels", cublas=True)
    host = HostToolchains(platform="linux-x86_64", python_dir=Path(sys.executable).parent, path="/usr/bin", cmake="/usr/bin/cmake", cxx="/usr/bin/c++",
                          cuda=(bare, full))  # fmt: skip
    missing = doctor.Tool("x", None)
    extras = doctor.Extras(cross_gxx=missing, zig=missing, wine=missing, qemu=missing, dagger=missing, engine=missing)
    rows = {r.toolkit: r for r in doctor.diagnose(jobs, host, {"PATH": "/usr/bin"}, extras)}
    for component in ("cublas", "cublasLt"):
        row = rows[f"{component} (CUDA 13.0)"]
        assert row.found == f"in {full.root} (not in {bare.root})" and row.hint == ""
        assert row.enables == ("cuda130-linux-x86_64",) and not row.would_enable
    assert "cuda130-linux-x86_64" in rows["C++ compiler"].enables, "nvcc compiles the host code with it"
    # Only the root lacking it: not found, with the command that adds it.
    rows = {r.toolkit: r for r in doctor.diagnose(jobs, replace(host, cuda=(bare,)), {"PATH": "/usr/bin"}, extras)}
    row = rows["cublas (CUDA 13.0, the tree links CUDA::cublas)"]
    assert row.found == "" and row.would_enable and row.hint.startswith("bnb-ci install-cuda-wheels --with-cublas")


def test_wine_is_for_trying_and_the_compiler_row_lists_no_zig_job() -> None:
    jobs = plan_jobs(load_matrix())  # this tree: every CPU library through zig
    missing = doctor.Tool("x", None)
    extras = doctor.Extras(cross_gxx=missing, zig=doctor.Tool("zig", "/usr/bin/zig", "0.17.1"), wine=doctor.Tool("wine64", None), qemu=missing,
                           dagger=missing, engine=missing)  # fmt: skip
    host = replace(fake_host(), zig="0.17.1")
    rows = {r.toolkit: r for r in doctor.diagnose(jobs, host, {"PATH": "/usr/bin"}, extras)}
    compiler = rows["C++ compiler"].enables
    assert compiler and not [j for j in compiler if j.startswith("cpu-")], compiler
    [zig] = [r for k, r in rows.items() if k.startswith("zig (")]
    assert "cpu-linux-x86_64" in zig.enables and "cpu-windows-x64" in zig.enables
    [wine] = [r for k, r in rows.items() if k.startswith("wine64 (")]
    assert wine.toolkit == "wine64 (tries windows-x64 wheels; no build needs it)"
    assert wine.enables == ("the try of windows-x64 wheels (with BNB_WINE_PYTHON)",) and wine.would_enable


@pytest.mark.parametrize("verb", ["build-cpu", "test-wheels", "doctor", "install-toolkit", "install-cuda-wheels"])
def test_verbs_without_architectures_do_not_offer_archs(verb: str) -> None:
    done = subprocess.run([str(BNB_CI), verb, "--archs", "75"], env=host_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "unrecognized arguments: --archs 75" in done.stderr


def test_verbs_with_architectures_offer_archs() -> None:
    for verb in ("plan", "build-cuda", "build-rocm", "build-all", "build-wheels", "audit-wheels", "pre-release", "publish"):
        assert cli.build_parser().parse_args([verb, "--archs", "75"]).archs == "75"


def test_a_gpu_build_asks_for_openmp_only_when_its_configure_did(tmp_path: Path) -> None:
    """upstream's CMake calls find_package(OpenMP) in its CPU branch: its CUDA build did not ask."""
    from bnb_build import native
    from bnb_build.platforms import get_platform

    source = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_tree"
    assert "find_package(OpenMP" in (source / "CMakeLists.txt").read_text()

    def report(backend: str, configured: dict | None) -> dict:
        build = tmp_path / f"{backend}-{len(list(tmp_path.iterdir()))}"
        build.mkdir()
        if configured is not None:
            (build / native.CONFIGURE_REPORT).write_text(json.dumps({"openmp": configured}))
        job = native.NativeJob(f"{backend}-linux-x86_64", backend, None, get_platform("linux-x86_64"), "libbitsandbytes_x.so", (), source,
                               tmp_path / "out", build, ())  # fmt: skip
        return native.openmp_report(job)

    assert report("cuda", {"asked": False, "found": False}) == {"asked": False, "found": False}
    assert report("cpu", {"asked": True, "found": True}) == {"asked": True, "found": True}
    assert report("hip", None)["asked"] is False
    assert report("cpu", None)["asked"] is True, "a CPU build whose configure said nothing: the tree's CMake files decide"
