"""Shared helpers of the bnb_build tests (test_bnb_build_*.py): paths, source patterns, running steps.

Expensive builds (the real CPU library, a CUDA library) are made once per test session and cached
here, because several test modules use them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_SRC = REPO_ROOT / "pipeline" / "src"
if str(PIPELINE_SRC) not in sys.path:
    sys.path.insert(0, str(PIPELINE_SRC))

# A job's source subset (docs/contracts.md): shared files plus the backend's folder.
COMMON_PATTERNS = ["CMakeLists.txt", "VERSION", "cmake/**", "csrc/bitsandbytes.h", "csrc/common/**"]
BACKEND_FOLDER = {"cpu": "csrc/cpu/**", "cuda": "csrc/cuda/**", "hip": "csrc/cuda/**", "xpu": "csrc/xpu/**"}
WHEEL_PATTERNS = ["pyproject.toml", "VERSION", "bitsandbytes/**"]

NVCC = Path("/usr/local/cuda/bin/nvcc")
CUOBJDUMP = REPO_ROOT / ".venv/lib/python3.11/site-packages/nvidia/cu13/bin/cuobjdump"

# Runs ``python -m bnb_build`` the way build images do (-I: isolated), with the package from this checkout.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from bnb_build.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def source_patterns(backend: str) -> List[str]:
    return COMMON_PATTERNS + [BACKEND_FOLDER[backend]]


def step_env(**extra: str) -> Dict[str, str]:
    """The environment steps run with in tests: the test venv's tools (cmake, ninja, auditwheel) first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.pop("SOURCE_DATE_EPOCH", None)
    env.update(extra)
    return env


def run_step(args: Sequence[str], cwd: Path, env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    """``python3 -I -m bnb_build <args>`` in ``cwd``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-I", "-c", _BOOT, str(PIPELINE_SRC), *args],
        cwd=str(cwd),
        env=dict(step_env() if env is None else env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def require_repo_file(rel: str) -> None:
    if not (REPO_ROOT / rel).exists():
        pytest.skip(f"{rel} is not in this checkout yet")


def native_args(job_id: str, backend: str, library: str, *, archs: str = "", toolkit: str = "") -> List[str]:
    args = ["native", "--job-id", job_id, "--backend", backend, "--platform", "linux-x86_64", "--library", library]
    if toolkit:
        args += ["--toolkit-version", toolkit]
    if archs:
        args += ["--archs", archs]
    return args + ["--source", "src", "--out", "out"]


def prepare_work_dir(work: Path, backend: str) -> Path:
    """A job work dir holding ``src/`` = the backend's source subset of this checkout."""
    from bnb_build import inputs

    require_repo_file("CMakeLists.txt")
    work.mkdir(parents=True, exist_ok=True)
    inputs.copy_subset(REPO_ROOT, source_patterns(backend), work / "src")
    return work


def check_ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


# ----------------------------------------------------------------------------------------------
# Session-wide builds


_SCRATCH: Optional[Path] = None
_CACHE: Dict[str, Path] = {}


def scratch_dir() -> Path:
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="bnb-build-tests-"))
        atexit.register(shutil.rmtree, str(_SCRATCH), True)
    return _SCRATCH


def cpu_work_dir() -> Path:
    """Work dir of one real CPU build by the native step (made once): ``out/linux/x86_64/...``."""
    if "cpu" not in _CACHE:
        work = prepare_work_dir(scratch_dir() / "cpu-a", "cpu")
        check_ok(run_step(native_args("cpu-linux-x86_64", "cpu", "libbitsandbytes_cpu.so"), work))
        _CACHE["cpu"] = work
    return _CACHE["cpu"]


def threads_source() -> Path:
    """C++ using std::thread and dlopen: on this host's glibc (2.36) it needs GLIBC_2.34."""
    src = scratch_dir() / "threads.cpp"
    src.write_text(
        "#include <thread>\n#include <dlfcn.h>\n"
        'extern "C" __attribute__((visibility("default"))) int bnb_probe(void) {\n'
        '  void *h = dlopen("libm.so.6", RTLD_NOW); int r = h != nullptr; if (h) dlclose(h);\n'
        "  std::thread t([] {}); t.join(); return r; }\n"
    )
    return src


def build_threads_library(dest: Path) -> Path:
    """A host-built library from :func:`threads_source` at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["g++", "-O2", "-shared", "-fPIC", "-o", str(dest), str(threads_source())], check=True)
    return dest


def wheel_args(plat_tag: str, *, libs: str = "libs", source: str = "wsrc", out: str = "wheels") -> List[str]:
    return ["wheel", "--platform", "linux-x86_64", "--plat-tag", plat_tag, "--libs", libs, "--source", source, "--out", out]


def prepare_wheel_dir(work: Path, libs_from: Path) -> Path:
    """A wheel work dir: ``wsrc/`` = the wheel sources of this checkout, ``libs/`` = a copy of ``libs_from``."""
    from bnb_build import inputs

    require_repo_file("pyproject.toml")
    work.mkdir(parents=True, exist_ok=True)
    inputs.copy_subset(REPO_ROOT, WHEEL_PATTERNS, work / "wsrc")
    shutil.copytree(libs_from, work / "libs")
    return work


def cpu_wheel() -> Path:
    """The wheel of the real CPU library (made once), aimed at manylinux_2_28_x86_64."""
    if "cpu-wheel" not in _CACHE:
        work = prepare_wheel_dir(scratch_dir() / "wheel-a", cpu_work_dir() / "out")
        check_ok(run_step(wheel_args("manylinux_2_28_x86_64"), work))
        (wheel,) = sorted((work / "wheels").glob("*.whl"))
        _CACHE["cpu-wheel"] = wheel
    return _CACHE["cpu-wheel"]


# ----------------------------------------------------------------------------------------------
# Other trees for the wheel step: the upstream-shaped fixture and tiny synthetic ones

UPSTREAM_TREE = REPO_ROOT / "tests" / "fixtures" / "upstream_tree"
UPSTREAM_VERSION = "0.50.2.dev0"
STEP_REQUIREMENTS = REPO_ROOT / "pipeline" / "step-requirements.txt"


def pinned_version(name: str) -> str:
    """The version pipeline/step-requirements.txt pins for ``name``."""
    for line in STEP_REQUIREMENTS.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement.lower().startswith(f"{name.lower()}=="):
            return requirement.split("==", 1)[1]
    raise AssertionError(f"{name} is not pinned in {STEP_REQUIREMENTS}")


def copy_upstream_tree(dest: Path) -> Path:
    """A clean copy of tests/fixtures/upstream_tree (nothing a build left there)."""
    shutil.copytree(UPSTREAM_TREE, dest, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "libbitsandbytes_*"))
    return dest


def upstream_cpu_libs() -> Path:
    """A ``libs`` folder holding ``linux/x86_64/libbitsandbytes_cpu.so`` of the upstream-shaped tree, built
    once with CMake as upstream does (the library lands in the tree's bitsandbytes/, then moves)."""
    if "upstream-cpu" not in _CACHE:
        tree = copy_upstream_tree(scratch_dir() / "upstream-cpu" / "tree")
        cmake = Path(sys.executable).parent / "cmake"
        env = step_env()
        for argv in ([str(cmake), "-S", str(tree), "-B", str(tree / "build"), "-G", "Ninja", "-DCOMPUTE_BACKEND=cpu"],
                     [str(cmake), "--build", str(tree / "build")]):
            result = subprocess.run(argv, cwd=str(tree), env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        libs = tree.parent / "libs"
        (libs / "linux" / "x86_64").mkdir(parents=True)
        shutil.move(str(tree / "bitsandbytes" / "libbitsandbytes_cpu.so"), str(libs / "linux" / "x86_64"))
        _CACHE["upstream-cpu"] = libs
    return _CACHE["upstream-cpu"]


def require_downloads(*requirements: str) -> None:
    """Skip (with pip's reason) when the package index cannot provide ``requirements``."""
    key = "downloads:" + " ".join(requirements)
    if key not in _CACHE:
        where = scratch_dir() / f"downloads-{len(_CACHE)}"
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(where), *requirements],
                                capture_output=True, text=True, env=step_env(PIP_DISABLE_PIP_VERSION_CHECK="1"), timeout=300)
        if result.returncode != 0:
            pytest.skip(f"cannot download {' '.join(requirements)}: {result.stderr.strip()[-500:]}")
        _CACHE[key] = where


def build_plain_library(dest: Path) -> Path:
    """A host-built ELF library that needs no versioned glibc symbol (so no tag is raised)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = scratch_dir() / "plain.c"
    src.write_text('__attribute__((visibility("default"))) int bnb_probe(void) { return 1; }\n')
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-nostdlib", "-o", str(dest), str(src)], check=True)
    return dest


# A PEP 517 backend in the tree itself (backend-path), writing the wheel that fake.json describes:
# "filename", "tags", "build", "purelib", "package" (folder packed, default bitsandbytes), "libraries" (pack its
# libbitsandbytes_*), "extra" (one more file name to pack into it), "report" (build requirements whose
# versions it prints). It also prints the config settings it was given.
FAKE_BACKEND = '''\
import base64, hashlib, importlib.metadata, json, zipfile
from pathlib import Path


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    spec = json.loads(Path("fake.json").read_text())
    for requirement in spec.get("report", []):
        print(f"fake backend sees {requirement}=={importlib.metadata.version(requirement)}")
    print(f"fake backend config settings: {json.dumps(config_settings or {}, sort_keys=True)}")
    files = {}
    package = spec.get("package", "bitsandbytes")
    for path in sorted(Path(package).rglob("*")):
        if path.is_file() and (spec.get("libraries", True) or not path.name.startswith("libbitsandbytes_")):
            files[path.as_posix()] = path.read_bytes()
    if spec.get("extra"):
        files[package + "/" + spec["extra"]] = b"not really a library"
    dist = "bitsandbytes-1.0.dist-info"
    files[dist + "/METADATA"] = b"Metadata-Version: 2.1\\nName: bitsandbytes\\nVersion: 1.0\\n"
    wheel = "Wheel-Version: 1.0\\nGenerator: fake\\nRoot-Is-Purelib: " + spec.get("purelib", "false") + "\\n"
    wheel += "".join("Tag: " + tag + "\\n" for tag in spec["tags"])
    if spec.get("build"):
        wheel += "Build: " + spec["build"] + "\\n"
    files[dist + "/WHEEL"] = wheel.encode()
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(dist + "/RECORD,,")
    files[dist + "/RECORD"] = ("\\n".join(record) + "\\n").encode()
    with zipfile.ZipFile(Path(wheel_directory) / spec["filename"], "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return spec["filename"]
'''


def fake_tree(dest: Path, spec: Mapping[str, object], *, requires: Sequence[str] = ()) -> Path:
    """A tree whose in-tree backend writes the wheel ``spec`` describes (see :data:`FAKE_BACKEND`)."""
    import json

    package = dest / str(spec.get("package", "bitsandbytes"))
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (dest / "fake_backend.py").write_text(FAKE_BACKEND)
    (dest / "fake.json").write_text(json.dumps(spec))
    (dest / "pyproject.toml").write_text(
        "[build-system]\n"
        f"requires = {json.dumps(list(requires))}\n"
        'build-backend = "fake_backend"\n'
        'backend-path = ["."]\n'
    )
    return dest
