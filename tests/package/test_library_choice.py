"""Which native library the package loads.

The GPU-named files in these tests (libbitsandbytes_cuda130.so, ..._cuda128.so, ..._rocm72.so) are
REAL COPIES OF THE CPU LIBRARY: loading one really loads a library (it reports backend "cpu"),
which proves the package loaded the file it chose. The detected GPU runtime is injected.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bitsandbytes
from bitsandbytes import LibraryFallbackWarning, LibraryNotFoundError, _native, functional
from bitsandbytes._loader import choose_library

from ._support import cuda, lib_names, rocm

ALL = lib_names("cpu", "cuda128", "cuda130", "rocm72")
PACKAGE_SOURCE = Path(bitsandbytes.__file__).resolve().parent


def loaded_file() -> str:
    """Quantize something, then name the file the package has loaded to do it."""
    functional.quantize_4bit(np.linspace(-1, 1, 100, dtype=np.float32))
    library = _native.library()
    assert library.backend() == "cpu", "every file in these tests is a copy of the CPU library"
    return library.path.name


# --------------------------------------------------------------------------- through the package, real copies


def test_no_runtime_loads_the_cpu_library(package_with_copies) -> None:
    package_with_copies(ALL, runtimes=[])
    choice = bitsandbytes.native_library()
    assert choice.backend == "cpu" and choice.path.name == lib_names("cpu")[0]
    assert choice.reason == "No CUDA or ROCm runtime was found."
    assert loaded_file() == choice.path.name


def test_runtime_without_devices_loads_the_cpu_library(package_with_copies) -> None:
    package_with_copies(ALL, runtimes=[cuda(13, 0, devices=0)])
    choice = bitsandbytes.native_library()
    assert choice.backend == "cpu"
    assert "No GPU runtime with a device was found" in choice.reason and "CUDA 13.0" in choice.reason
    assert loaded_file() == lib_names("cpu")[0]


@pytest.mark.parametrize("major, minor, expected", [(13, 0, "cuda130"), (12, 8, "cuda128")])
def test_cuda_runtime_loads_the_matching_copy(package_with_copies, major: int, minor: int, expected: str) -> None:
    package_with_copies(ALL, runtimes=[cuda(major, minor)])
    choice = bitsandbytes.native_library()
    assert (choice.backend, choice.path.name) == ("cuda", lib_names(expected)[0])
    assert choice.reason == f"It matches the CUDA {major}.{minor} runtime (injected for the test, 1 device)."
    assert loaded_file() == lib_names(expected)[0]


def test_rocm_runtime_loads_the_matching_copy(package_with_copies) -> None:
    package_with_copies(ALL, runtimes=[rocm(7, 2, devices=2)])
    choice = bitsandbytes.native_library()
    assert (choice.backend, choice.path.name) == ("rocm", lib_names("rocm72")[0])
    assert "ROCm 7.2 runtime" in choice.reason and "2 devices" in choice.reason
    assert loaded_file() == lib_names("rocm72")[0]


def test_first_runtime_with_a_device_wins(package_with_copies) -> None:
    package_with_copies(ALL, runtimes=[cuda(13, 0, devices=0), rocm(7, 2)])
    assert bitsandbytes.native_library().path.name == lib_names("rocm72")[0]


def test_newer_minor_falls_back_to_the_newest_older_same_major_copy_with_a_warning(package_with_copies) -> None:
    package_with_copies(ALL + lib_names("cuda134"), runtimes=[cuda(13, 2)])
    with pytest.warns(LibraryFallbackWarning, match="CUDA 13.2 runtime") as caught:
        assert loaded_file() == lib_names("cuda130")[0]
    message = str(caught[0].message)
    assert "BNB_CUDA_VERSION" in message and lib_names("cuda134")[0] in message
    assert "newest one older than the runtime" in bitsandbytes.native_library().reason


def test_no_cross_major_fallback_errors_at_the_first_call(package_with_copies) -> None:
    folder = package_with_copies(ALL, runtimes=[cuda(11, 8)])
    with pytest.raises(LibraryNotFoundError) as caught:
        functional.quantize_blockwise(np.ones(10, np.float32))
    message = str(caught.value)
    assert "CUDA 11.8 runtime" in message and "another major version" in message
    assert f"Packaged libraries in {folder}: {', '.join(sorted(ALL))}." in message
    assert "set BNB_CUDA_VERSION to one of 128, 130" in message
    assert "CUDA_VISIBLE_DEVICES=" in message
    assert _native._loaded is None, "nothing may be loaded"
    with pytest.raises(LibraryNotFoundError):
        bitsandbytes.native_library()


def test_no_cross_major_fallback_for_rocm(package_with_copies) -> None:
    package_with_copies(ALL, runtimes=[rocm(6, 3)])
    with pytest.raises(LibraryNotFoundError, match="set BNB_ROCM_VERSION to one of 72"):
        loaded_file()


def test_gpu_kind_without_any_packaged_library_uses_the_cpu_library(package_with_copies) -> None:
    package_with_copies(lib_names("cpu", "cuda130"), runtimes=[rocm(7, 2)])
    choice = bitsandbytes.native_library()
    assert choice.backend == "cpu" and "no ROCm library is packaged" in choice.reason
    assert loaded_file() == lib_names("cpu")[0]


@pytest.mark.parametrize(
    "variable, value, expected",
    [("BNB_CUDA_VERSION", "128", "cuda128"), ("BNB_CUDA_VERSION", "130", "cuda130"), ("BNB_ROCM_VERSION", "72", "rocm72")],
)
def test_override_loads_the_named_copy_whatever_the_runtime(package_with_copies, monkeypatch, variable, value, expected):
    package_with_copies(ALL, runtimes=[cuda(13, 0)])
    monkeypatch.setenv(variable, value)
    choice = bitsandbytes.native_library()
    assert choice.path.name == lib_names(expected)[0]
    assert choice.reason == f"{variable}={value} selects it."
    assert loaded_file() == lib_names(expected)[0]


def test_override_naming_an_absent_library_lists_the_packaged_ones(package_with_copies, monkeypatch) -> None:
    folder = package_with_copies(ALL, runtimes=[])
    monkeypatch.setenv("BNB_CUDA_VERSION", "120")
    with pytest.raises(LibraryNotFoundError) as caught:
        loaded_file()
    assert "BNB_CUDA_VERSION=120 asks for libbitsandbytes_cuda120, which is not packaged" in str(caught.value)
    assert f"Packaged libraries in {folder}: {', '.join(sorted(ALL))}." in str(caught.value)


@pytest.mark.parametrize("value", ["13.0", "cu130", "", "1", " 130", "130a"])
@pytest.mark.parametrize("variable", ["BNB_CUDA_VERSION", "BNB_ROCM_VERSION"])
def test_malformed_override_is_an_error_naming_value_and_form(package_with_copies, monkeypatch, variable, value):
    package_with_copies(ALL, runtimes=[cuda(13, 0)])
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as caught:
        loaded_file()
    assert f"{variable}={value!r} is not valid" in str(caught.value)
    assert "digits only" in str(caught.value) and f"e.g. {variable}=" in str(caught.value)


def test_both_overrides_at_once_is_an_error(package_with_copies, monkeypatch) -> None:
    package_with_copies(ALL, runtimes=[])
    monkeypatch.setenv("BNB_CUDA_VERSION", "130")
    monkeypatch.setenv("BNB_ROCM_VERSION", "72")
    with pytest.raises(ValueError, match="are both set: set at most one of them"):
        bitsandbytes.native_library()


def test_choice_is_a_frozen_dataclass_and_is_made_once(package_with_copies) -> None:
    package_with_copies(ALL, runtimes=[])
    choice = bitsandbytes.native_library()
    assert [f.name for f in dataclasses.fields(choice)] == ["path", "backend", "reason"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.backend = "cuda"  # type: ignore[misc]
    assert bitsandbytes.native_library() is choice


# --------------------------------------------------------------------------- the rules alone (names only)


def choose(names, runtimes=(), environ=None):
    return choose_library(Path("/pkg"), names, list(runtimes), environ or {})


def test_only_newer_same_major_library_is_used_with_a_warning() -> None:
    with pytest.warns(LibraryFallbackWarning, match="oldest one newer than the runtime"):
        assert choose(lib_names("cpu", "cuda134", "cuda136"), [cuda(13, 2)]).path.name == lib_names("cuda134")[0]


def test_older_minor_is_preferred_to_newer_minor() -> None:
    with pytest.warns(LibraryFallbackWarning):
        assert choose(lib_names("cuda124", "cuda126", "cuda128"), [cuda(12, 7)]).path.name == lib_names("cuda126")[0]


def test_rocm_minor_versions_above_nine_are_read_from_the_name() -> None:
    # rocm714 is ROCm 7.14 (ROCm majors have one digit); it must not be taken for 71.4.
    names = lib_names("cpu", "rocm72", "rocm714")
    assert choose(names, [rocm(7, 14)]).path.name == lib_names("rocm714")[0]
    with pytest.warns(LibraryFallbackWarning):
        assert choose(names, [rocm(7, 10)]).path.name == lib_names("rocm72")[0]


def test_unrelated_and_malformed_file_names_are_ignored() -> None:
    names = lib_names("cpu") + ["libbitsandbytes_cuda.so", "libbitsandbytes_cpu2.so", "libother_cuda130.so", "README"]
    assert choose(names, [cuda(13, 0)]).path == Path("/pkg") / lib_names("cpu")[0]


def test_nothing_packaged_is_an_error_that_says_how_to_get_a_library() -> None:
    with pytest.raises(LibraryNotFoundError, match=r"No native library \(libbitsandbytes_\*.*\) is packaged in /pkg"):
        choose([])


def test_gpu_only_package_without_runtime_is_an_error_listing_the_files() -> None:
    with pytest.raises(LibraryNotFoundError, match="No CPU library is packaged and no CUDA or ROCm runtime was found"):
        choose(lib_names("cuda130"))


# --------------------------------------------------------------------------- importing, in a fresh interpreter


def run_with_package(tmp_path: Path, libraries: dict, script: str, **env: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python that imports a copy of the package holding `libraries`."""
    site = tmp_path / "site"
    package = site / "bitsandbytes"
    package.mkdir(parents=True)
    for source in PACKAGE_SOURCE.glob("*.py"):
        shutil.copyfile(source, package / source.name)
    for name, source in libraries.items():
        shutil.copyfile(source, package / name)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BNB_")}
    # Real detection runs in the child: hide any GPU so the outcome is the same on every machine.
    environment.update(PYTHONPATH=str(site), CUDA_VISIBLE_DEVICES="", HIP_VISIBLE_DEVICES="", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=120)


IMPORT_ONLY = """
    import bitsandbytes
    from bitsandbytes import _native
    assert bitsandbytes.__file__.startswith(r"{site}"), bitsandbytes.__file__
    assert _native._choice is None and _native._loaded is None, "import must not choose or load a library"
    try:
        bitsandbytes.functional.quantize_4bit(__import__("numpy").ones(4, "float32"))
    except Exception as error:
        print(type(error).__name__ + ": " + str(error))
    else:
        print("OK " + bitsandbytes.native_library().path.name)
"""


def test_import_works_with_no_library_at_all(tmp_path: Path) -> None:
    result = run_with_package(tmp_path, {}, IMPORT_ONLY.replace("{site}", str(tmp_path / "site")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("LibraryNotFoundError: No native library (libbitsandbytes_*")
    assert "pip install ." in result.stdout


def test_import_works_with_no_gpu_library(tmp_path: Path, cpu_library: Path) -> None:
    result = run_with_package(tmp_path, {lib_names("cpu")[0]: cpu_library}, IMPORT_ONLY.replace("{site}", str(tmp_path / "site")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK " + lib_names("cpu")[0]


def test_import_works_with_a_malformed_override(tmp_path: Path, cpu_library: Path) -> None:
    """A bad BNB_CUDA_VERSION is reported at the first call, not at import."""
    libraries = {name: cpu_library for name in lib_names("cpu", "cuda130")}
    result = run_with_package(tmp_path, libraries, IMPORT_ONLY.replace("{site}", str(tmp_path / "site")),
                              BNB_CUDA_VERSION="13.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ValueError: BNB_CUDA_VERSION='13.0' is not valid")
