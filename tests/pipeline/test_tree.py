"""bitsandbytes_ci.core.tree and bnb_build.version: what the pipeline reads from the tree it builds, and how
the plan follows it. Two trees: this repository, and tests/fixtures/upstream_tree (upstream's shape:
flat csrc/, no VERSION file, setuptools backend, OpenMP, a CUDA library that links cuBLAS)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bnb_build_helpers import UPSTREAM_VERSION

from bitsandbytes_ci.host import cli
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, expectations, plan_jobs, plan_wheels
from bitsandbytes_ci.core.tree import DEFAULT_TREE, TreeError, read_tree, tree_config_from_text, tree_from_texts
from bnb_build.version import static_version, tree_version

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO / "tests" / "fixtures" / "upstream_tree"


def plan_of(source: Path, *args: str) -> list[dict]:
    out = io.StringIO()
    assert cli.main_inner(["plan", "--format", "json", "--source", str(source), *args], env={}, stdout=out) == 0
    return json.loads(out.getvalue())


# ---- facts ------------------------------------------------------------------------------------------


def test_the_upstream_shaped_tree() -> None:
    tree = read_tree(UPSTREAM)
    assert tree.version == UPSTREAM_VERSION, "no VERSION file: the package's __version__"
    assert tree.package == "bitsandbytes" and tree.uses_openmp
    assert tree.cuda_components == ("cublas", "cublasLt")
    assert tree.config.symbol_parity is False and tree.config.sources.named() == []


def test_this_repository() -> None:
    tree = read_tree(REPO)
    assert tree.version == (REPO / "VERSION").read_text().strip()
    assert not tree.uses_openmp and tree.cuda_components == ()
    assert tree.config.symbol_parity and tree.config.try_script == "tests/wheel_smoke.py"
    assert tree.config.sources.cuda == ("csrc/cuda/**",)


@pytest.mark.parametrize(("files", "version"), [
    ({"VERSION": "1.2.3\n", "pyproject.toml": '[project]\nversion = "9.9"\n'}, "1.2.3"),
    ({"pyproject.toml": '[project]\nname = "x"\nversion = "2.0.1"\n'}, "2.0.1"),
    ({"pyproject.toml": '[project]\nname = "x"\ndynamic = ["version"]\n', "bitsandbytes/__init__.py": '__version__ = "0.5.0.dev0"\n'}, "0.5.0.dev0"),
    ({"setup.py": 'setup_kwargs = {"version": "3.1.4", "name": "x"}\n'}, "3.1.4"),
    ({"setup.py": 'setup(name="x", version=compute())\n'}, None),
])  # fmt: skip
def test_versions_the_files_state(files: dict, version: str | None) -> None:
    assert tree_from_texts(files).version == version


def test_a_version_only_the_backend_knows(tmp_path: Path) -> None:
    """No file states it: the PEP 517 backend is asked (prepare_metadata_for_build_wheel, isolated)."""
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    (tmp_path / "setup.py").write_text('from setuptools import setup\nsetup(name="computed", version=".".join(["4", "5", "6"]), py_modules=[])\n')
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PIP_CONSTRAINT": str(REPO / "pipeline" / "step-requirements.txt")}
    try:
        assert tree_version(tmp_path, env) == "4.5.6"
    except Exception as e:  # only a missing network may stop it
        if "No matching distribution" in str(e) or "Network" in str(e):
            pytest.skip(f"the build requirements cannot be downloaded here: {e}")
        raise
    step = subprocess.run([sys.executable, "-m", "bnb_build", "version", "--source", str(tmp_path)], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO / "pipeline" / "src")}, timeout=600, check=False)  # fmt: skip
    assert step.returncode == 0 and step.stdout.strip() == "4.5.6", step.stderr


def test_static_version_ignores_what_is_not_a_version() -> None:
    # (a VERSION file is the exception: one that states no version is refused, test_refused_inputs.py)
    assert static_version(package_init="__version__ = get_version()\n") is None


# ---- what a tree may set ------------------------------------------------------------------------------


def test_unknown_keys_and_bad_values_name_themselves() -> None:
    with pytest.raises(TreeError, match=r"unknown key 'try_scrip' \(did you mean 'try-script'\?\)"):
        tree_config_from_text('[tool.bitsandbytes-ci]\ntry_scrip = "x.py"\n')
    with pytest.raises(TreeError, match=r"cpu-toolchain"):
        tree_config_from_text('[tool.bitsandbytes-ci]\ncpu-toolchain = "icc"\n')
    with pytest.raises(TreeError, match=r"source pattern 'csrc/\*.cu' is not allowed"):
        tree_config_from_text('[tool.bitsandbytes-ci.sources]\ncuda = ["csrc/*.cu"]\n')
    with pytest.raises(TreeError, match=r"not valid TOML"):
        tree_config_from_text("[tool.bitsandbytes-ci\n")
    assert tree_config_from_text(None) == DEFAULT_TREE.config


def test_a_pattern_that_selects_nothing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(UPSTREAM, tree)
    text = (tree / "pyproject.toml").read_text()
    (tree / "pyproject.toml").write_text(text + '\n[tool.bitsandbytes-ci.sources]\ncuda = ["csrc/kernels.cu", "csrc/gpu/**"]\n')
    with pytest.raises(TreeError, match=r"sources: 'csrc/gpu/\*\*' select\(s\) no file in .*tree; fix the pattern"):
        read_tree(tree)
    assert cli.main(["plan", "--source", str(tree)]) == 2
    err = capsys.readouterr().err
    assert "select(s) no file" in err and "Traceback" not in err


def test_a_wheel_pattern_may_name_the_package_folder(tmp_path: Path) -> None:
    """`{package}` in the tree's own wheel sources stands for its package folder, as in the matrix."""
    tree = tmp_path / "tree"
    shutil.copytree(UPSTREAM, tree)
    text = (tree / "pyproject.toml").read_text()
    (tree / "pyproject.toml").write_text(text + '\n[tool.bitsandbytes-ci.sources]\nwheel = ["pyproject.toml", "setup.py", "{package}/**"]\n')
    facts = read_tree(tree)
    assert facts.named_sources() == ["pyproject.toml", "setup.py", f"{facts.package}/**"]
    [wheel] = plan_wheels(load_matrix(), plan_jobs(load_matrix(), Selection(platforms=("linux-x86_64",), backends=("cpu",)), facts), facts)
    assert f"{facts.package}/**" in wheel.sources


# ---- the plan follows the tree -----------------------------------------------------------------------


def test_plan_source_reads_the_tree_it_names() -> None:
    ours = {j["id"]: j for j in plan_of(REPO, "--backend", "cpu")}
    upstream = {j["id"]: j for j in plan_of(UPSTREAM, "--backend", "cpu")}
    assert ours["cpu-linux-x86_64"]["runner"] == "cross" and ours["cpu-linux-x86_64"]["sources"][:2] == ["CMakeLists.txt", "VERSION"]
    # OpenMP is kept where the tree uses it: gcc in the manylinux_2_28 image, libgomp vendored into the wheel
    linux = upstream["cpu-linux-x86_64"]
    assert (linux["runner"], linux["toolchain"], linux["image"]) == ("container", "gcc", "quay.io/pypa/manylinux_2_28_x86_64:latest")
    assert linux["vendor"] == ["libgomp.so.1"] and linux["openmp_wanted"] and linux["step_python"] == "/opt/python/cp312-cp312/bin/python3"
    assert upstream["cpu-linux-aarch64"]["image"] == "quay.io/pypa/manylinux_2_28_aarch64:latest"
    # zig stays for macOS (it builds without OpenMP, and says so); Windows gets MSVC, which the tree's CMake expects
    assert upstream["cpu-macos-arm64"]["runner"] == "cross" and upstream["cpu-macos-arm64"]["vendor"] == []
    assert (upstream["cpu-windows-x64"]["runner"], upstream["cpu-windows-x64"]["toolchain"]) == ("native-runner", "msvc")
    # no named subsets: every default pattern, where present
    assert linux["sources"] == [] and linux["optional_sources"] == ["CMakeLists.txt", "VERSION", "cmake/**", "include/**", "csrc/**"]


def test_a_tree_can_choose_zig_for_its_linux_cpu_libraries(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(UPSTREAM, tree)
    (tree / "pyproject.toml").write_text((tree / "pyproject.toml").read_text() + '\n[tool.bitsandbytes-ci]\ncpu-toolchain = "zig"\n')
    jobs = {j["id"]: j for j in plan_of(tree, "--backend", "cpu")}
    assert jobs["cpu-linux-x86_64"]["runner"] == "cross" and jobs["cpu-linux-x86_64"]["toolchain"] == "zig"


def test_wheels_and_audit_follow_the_tree() -> None:
    matrix, tree = load_matrix(), read_tree(UPSTREAM)
    jobs = plan_jobs(matrix, Selection(backends=("cpu", "cuda"), versions=(), platforms=("linux-x86_64",)), tree)
    [wheel] = plan_wheels(matrix, jobs, tree)
    assert wheel.vendor == ["libgomp.so.1"] and wheel.wheel_argv()[-2:] == ["--vendor", "libgomp.so.1"]
    assert wheel.sources == ["pyproject.toml", "bitsandbytes/**"] and "setup.py" in wheel.optional_sources
    expected = expectations(matrix, jobs, tree)
    assert expected["symbol_parity"] is False, "the tree declares no symbol parity"
    assert expected["wheels"]["linux-x86_64"]["libraries"]["libbitsandbytes_cpu.so"]["openmp"] is True
    assert "openmp" not in expected["wheels"]["linux-x86_64"]["libraries"]["libbitsandbytes_cuda130.so"]
    cuda = next(j for j in jobs if j.id == "cuda130-linux-x86_64")
    assert cuda.toolkit_components == ["cublas", "cublasLt"]


# ---- what the tree needs from a toolkit ------------------------------------------------------------


def toolkit(root: Path, *, with_cublas: bool) -> Path:
    """A CUDA toolkit's folder layout as detection and the component check read it (headers and
    libraries by name; nothing here runs them)."""
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    if with_cublas:
        for header, lib in (("cublas_v2.h", "libcublas.so.13"), ("cublasLt.h", "libcublasLt.so.13")):
            (root / "include" / header).write_text("")
            (root / "lib" / lib).write_text("")
    return root


def test_a_cuda_toolkit_without_cublas_cannot_build_a_tree_that_links_it(tmp_path: Path) -> None:
    from bitsandbytes_ci.host import doctor
    from bitsandbytes_ci.host.toolchains import HostToolchains, Installation, Runnable, decide, missing_cuda_components

    without, with_cublas = toolkit(tmp_path / "cuda", with_cublas=False), toolkit(tmp_path / "cuda-cublas", with_cublas=True)
    assert missing_cuda_components(without, ["cublas", "cublasLt"]) == ["cublas", "cublasLt"]
    assert missing_cuda_components(with_cublas, ["cublas", "cublasLt"]) == []
    windows = tmp_path / "cuda-windows"  # the layout of NVIDIA's Windows installer
    for folder in ("include", "lib/x64", "bin"):
        (windows / folder).mkdir(parents=True)
    (windows / "include" / "cublas_v2.h").write_text("")
    (windows / "lib" / "x64" / "cublas.lib").write_text("")
    assert missing_cuda_components(windows, ["cublas"]) == ["cublas"], "an import library without its DLL cannot run"
    (windows / "bin" / "cublas64_13.dll").write_text("")
    assert missing_cuda_components(windows, ["cublas"]) == []
    matrix = load_matrix()
    [job] = plan_jobs(matrix, Selection(backends=("cuda",), versions=("13.0",), platforms=("linux-x86_64",)), read_tree(UPSTREAM))
    [ours] = plan_jobs(matrix, Selection(backends=("cuda",), versions=("13.0",), platforms=("linux-x86_64",)), read_tree(REPO))

    def host(*roots: Path) -> HostToolchains:
        cuda = tuple(Installation("cuda", "13.0.88", r, r / "bin" / "nvcc", "test") for r in roots)
        return HostToolchains(platform="linux-x86_64", python_dir=Path(sys.executable).parent, path="/usr/bin", cmake="/usr/bin/cmake",
                              cxx="/usr/bin/c++", cuda=cuda)  # fmt: skip

    skip = decide(job, host(without), {"PATH": "/usr/bin"})
    assert not isinstance(skip, Runnable)
    assert "the tree links CUDA::cublas, CUDA::cublasLt" in skip.reason and "--with-cublas" in skip.reason
    assert isinstance(decide(ours, host(without), {"PATH": "/usr/bin"}), Runnable), "our tree links no cuBLAS"
    chosen = decide(job, host(without, with_cublas), {"PATH": "/usr/bin"})
    assert isinstance(chosen, Runnable) and chosen.env["CUDAToolkit_ROOT"] == str(with_cublas), "the toolkit that has it"
    rows = {row.toolkit: row for row in doctor._cuda_component_rows([job], host(without), set())}
    row = rows["cublas (CUDA 13.0, the tree links CUDA::cublas)"]
    assert row.found == "" and row.enables == ("cuda130-linux-x86_64",) and "nvidia-cublas" in row.hint
    verdicts = doctor.verdicts([job, ours], host(without), {"PATH": "/usr/bin"})
    assert "cuda130-linux-x86_64  no: the tree links CUDA::cublas" in verdicts
