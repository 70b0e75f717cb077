"""Detection of GPU runtimes: version decoding, torch when it is installed, ctypes without it.

The runtimes used here are stand-ins: a fake `torch` package on sys.path, and small C libraries
exporting the two CUDA runtime functions the package calls, compiled for the test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitsandbytes import _detect
from bitsandbytes._loader import Runtime


def test_cuda_runtime_version_numbers() -> None:
    assert _detect.cuda_version_from_int(13000) == (13, 0)
    assert _detect.cuda_version_from_int(12080) == (12, 8)
    assert _detect.cuda_version_from_int(11080) == (11, 8)


def test_hip_runtime_version_numbers() -> None:
    assert _detect.hip_version_from_int(60342131) == (6, 3)
    assert _detect.hip_version_from_int(70200000) == (7, 2)
    assert _detect.hip_version_from_int(50222222) == (5, 2)


@pytest.mark.parametrize("text, expected", [("12.8", (12, 8)), ("6.3.42131-fa1d09cbd", (6, 3)), ("13.0.1", (13, 0)),
                                            (None, None), ("", None), ("cuda", None)])
def test_dotted_versions(text, expected) -> None:
    assert _detect.parse_dotted_version(text) == expected


def test_detection_without_torch_does_not_import_it_and_does_not_raise() -> None:
    script = "import sys, bitsandbytes._detect as d; r = d.detect_runtimes(); print('torch' in sys.modules, r)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("False ")


FAKE_TORCH = """
__version__ = "9.9.9-fake"
class version:
    cuda = {cuda!r}
    hip = {hip!r}
class cuda:
    @staticmethod
    def is_available():
        return {devices} > 0
    @staticmethod
    def device_count():
        return {devices}
"""


@pytest.fixture
def fake_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a stand-in `torch` (version strings and device count as given) for this test only."""

    def install(cuda=None, hip=None, devices=0) -> None:
        (tmp_path / "torch").mkdir()
        (tmp_path / "torch" / "__init__.py").write_text(FAKE_TORCH.format(cuda=cuda, hip=hip, devices=devices))
        monkeypatch.syspath_prepend(str(tmp_path))

    yield install
    sys.modules.pop("torch", None)


def test_torch_cuda_build_with_devices(fake_torch) -> None:
    fake_torch(cuda="12.8", devices=2)
    assert _detect.detect_runtimes() == [Runtime("cuda", 12, 8, 2, "torch 9.9.9-fake")]


def test_torch_rocm_build_with_devices(fake_torch) -> None:
    fake_torch(hip="7.2.26015-abc", devices=1)
    assert _detect.detect_runtimes() == [Runtime("rocm", 7, 2, 1, "torch 9.9.9-fake")]


def test_torch_without_devices_lets_ctypes_detection_run(fake_torch, monkeypatch) -> None:
    fake_torch(cuda="13.0", devices=0)
    found = Runtime("cuda", 13, 0, 1, "libcudart.so.13")
    monkeypatch.setattr(_detect, "_cuda_via_ctypes", lambda: found)
    monkeypatch.setattr(_detect, "_hip_via_ctypes", lambda: None)
    assert _detect.detect_runtimes() == [found, Runtime("cuda", 13, 0, 0, "torch 9.9.9-fake")]


FAKE_CUDART = """
int cudaRuntimeGetVersion(int *version) { *version = VERSION; return 0; }
int cudaGetDeviceCount(int *count) { *count = DEVICES; return DEVICES > 0 ? 0 : 100; }
"""


@pytest.fixture
def fake_cudart(tmp_path: Path):
    """Compile a stand-in CUDA runtime library reporting the given version and device count."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None or not sys.platform.startswith("linux"):
        pytest.skip("needs a C compiler on Linux to build a stand-in libcudart")

    def build(name: str, version: int, devices: int) -> str:
        source = tmp_path / f"{name}.c"
        source.write_text(textwrap.dedent(FAKE_CUDART).replace("VERSION", str(version)).replace("DEVICES", str(devices)))
        library = tmp_path / f"{name}.so"
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
        return str(library)

    return build


def test_ctypes_probe_skips_a_runtime_without_devices(fake_cudart) -> None:
    """A runtime too new for the driver sees no device; the next candidate that does wins."""
    candidates = [fake_cudart("cudart13", 13020, 0), fake_cudart("cudart12", 12080, 3)]
    runtime = _detect._probe("cuda", iter(candidates), "cudaRuntimeGetVersion", "cudaGetDeviceCount",
                             _detect.cuda_version_from_int)
    assert runtime == Runtime("cuda", 12, 8, 3, "cudart12.so")


def test_ctypes_probe_reports_a_runtime_without_devices_when_none_has_one(fake_cudart, tmp_path) -> None:
    candidates = [str(tmp_path / "missing.so"), fake_cudart("cudart13", 13000, 0)]
    runtime = _detect._probe("cuda", iter(candidates), "cudaRuntimeGetVersion", "cudaGetDeviceCount",
                             _detect.cuda_version_from_int)
    assert runtime == Runtime("cuda", 13, 0, 0, "cudart13.so")
