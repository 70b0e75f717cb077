"""Small helpers shared by the package tests."""

from __future__ import annotations

from typing import List

from bitsandbytes._loader import Runtime, library_suffix


def cuda(major: int, minor: int, devices: int = 1) -> Runtime:
    return Runtime("cuda", major, minor, devices, "injected for the test")


def rocm(major: int, minor: int, devices: int = 1) -> Runtime:
    return Runtime("rocm", major, minor, devices, "injected for the test")


def lib_names(*tags: str) -> List[str]:
    """File names of packaged libraries: lib_names("cpu", "cuda130") on Linux gives libbitsandbytes_cpu.so, ..."""
    return [f"libbitsandbytes_{tag}{library_suffix()}" for tag in tags]
