"""Fixtures of the package tests: the CPU library plugged into the package, fake package folders."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pytest

from bitsandbytes import LibraryChoice, _detect, _native
from bitsandbytes._loader import Runtime


@pytest.fixture
def native(cpu_library: Path, monkeypatch: pytest.MonkeyPatch) -> _native.NativeLibrary:
    """bitsandbytes.functional runs on the CPU library built from this checkout."""
    library = _native.NativeLibrary(cpu_library)
    monkeypatch.setattr(_native, "_choice", LibraryChoice(cpu_library, "cpu", "test fixture"))
    monkeypatch.setattr(_native, "_loaded", library)
    return library


@pytest.fixture
def no_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of the native library fails the test (checks must happen before the native call)."""

    def refuse() -> None:
        raise AssertionError("the native library was called although the arguments are invalid")

    monkeypatch.setattr(_native, "library", refuse)


PackageFactory = Callable[..., Path]


@pytest.fixture
def package_with_copies(
    cpu_library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PackageFactory:
    """A package folder holding REAL COPIES OF THE CPU LIBRARY under the given (GPU) names.

    `make(names, runtimes=[...])` fills the folder, points the package at it and makes runtime
    detection report `runtimes`; the library choice is reset so the next call chooses afresh.
    Loading any of these files really loads the CPU library (bnb_backend() says "cpu").
    """
    folder = tmp_path / "package"

    def make(names: Iterable[str], runtimes: Sequence[Runtime] = ()) -> Path:
        folder.mkdir(exist_ok=True)
        for name in names:
            shutil.copyfile(cpu_library, folder / name)
        monkeypatch.setattr(_native, "PACKAGE_DIR", folder)
        monkeypatch.setattr(_native, "_choice", None)
        monkeypatch.setattr(_native, "_loaded", None)
        monkeypatch.setattr(_detect, "detect_runtimes", lambda: list(runtimes))
        for variable in ("BNB_CUDA_VERSION", "BNB_ROCM_VERSION"):
            monkeypatch.delenv(variable, raising=False)
        return folder

    return make
