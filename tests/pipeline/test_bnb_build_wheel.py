"""The wheel step (bnb_build.wheel): real wheels from real libraries, tags, reproducibility, errors."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bnb_build_helpers import (
    build_threads_library,
    check_ok,
    cpu_wheel,
    cpu_work_dir,
    prepare_wheel_dir,
    run_step,
    wheel_args,
)

from bnb_build import wheel
from bnb_build.errors import InputError, UsageError, WheelError
from bnb_build.platforms import get_platform, parse_platform_tag

LINUX = get_platform("linux-x86_64")


def read_record(z: zipfile.ZipFile) -> dict:
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    return {row[0]: row[1:] for row in csv.reader(io.StringIO(z.read(record).decode()))}


def test_wheel_of_the_cpu_library() -> None:
    built = cpu_wheel()
    assert built.name.startswith("bitsandbytes-") and built.name.endswith("-py3-none-manylinux_2_28_x86_64.whl")
    assert [p.name for p in built.parent.iterdir()] == [built.name], "no staging leftovers in --out"
    with zipfile.ZipFile(built) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        assert "bitsandbytes/libbitsandbytes_cpu.so" in names and "bitsandbytes/__init__.py" in names
        dist_info = [n for n in names if ".dist-info/" in n]
        assert names == sorted(n for n in names if n not in dist_info) + sorted(dist_info[:-1]) + [dist_info[-1]]
        assert names[-1].endswith(".dist-info/RECORD")
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in infos}
        assert modes["bitsandbytes/libbitsandbytes_cpu.so"] == 0o755 and modes["bitsandbytes/__init__.py"] == 0o644
        record = read_record(z)
        for name in names[:-1]:
            data = z.read(name)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert record[name] == [f"sha256={digest}", str(len(data))], name
        wheel_meta = z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
        assert "Tag: py3-none-manylinux_2_28_x86_64" in wheel_meta


def test_wheel_installs_into_a_fresh_venv_and_quantizes(tmp_path: Path) -> None:
    built = cpu_wheel()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(built)], check=True, timeout=600)
    script = (
        "import numpy as np, bitsandbytes as bnb\n"
        "from bitsandbytes import functional as F\n"
        "x = np.linspace(-1, 1, 1000, dtype=np.float32)\n"
        "codes, absmax = F.quantize_blockwise(x, blocksize=256)\n"
        "y = F.dequantize_blockwise(codes, absmax, blocksize=256)\n"
        "assert codes.dtype == np.uint8 and y.shape == x.shape and float(np.abs(y - x).max()) < 0.02\n"
        "print(bnb.native_library())\n"
    )
    result = subprocess.run([str(python), "-c", script], cwd=str(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "libbitsandbytes_cpu" in result.stdout


def test_two_wheel_builds_in_different_directories_are_identical(tmp_path: Path) -> None:
    work = prepare_wheel_dir(tmp_path / "elsewhere" / "w", cpu_work_dir() / "out")
    check_ok(run_step(wheel_args("manylinux_2_28_x86_64", out="dist"), work))
    (second,) = sorted((work / "dist").glob("*.whl"))
    assert second.name == cpu_wheel().name
    assert second.read_bytes() == cpu_wheel().read_bytes()


def test_a_library_needing_a_newer_glibc_raises_the_tag(tmp_path: Path) -> None:
    libs = tmp_path / "threads-libs"
    build_threads_library(libs / "linux" / "x86_64" / "libbitsandbytes_cpu.so")
    work = prepare_wheel_dir(tmp_path / "w", libs)
    result = check_ok(run_step(wheel_args("manylinux_2_28_x86_64"), work))
    assert (
        "platform tag raised from manylinux_2_28_x86_64 to manylinux_2_34_x86_64: "
        "libbitsandbytes_cpu.so requires GLIBC_2.34"
    ) in result.stdout
    assert [p.name.rsplit("-", 1)[-1] for p in (work / "wheels").glob("*.whl")] == ["manylinux_2_34_x86_64.whl"]


def test_choose_tag() -> None:
    aimed = parse_platform_tag("manylinux_2_28_x86_64")
    assert wheel.choose_tag(aimed, LINUX, {"a.so": (2, 17), "b.so": None}) == ("manylinux_2_28_x86_64", None)
    tag, why = wheel.choose_tag(aimed, LINUX, {"a.so": (2, 17), "b.so": (2, 34)})
    assert tag == "manylinux_2_34_x86_64" and "b.so requires GLIBC_2.34" in (why or "")
    assert wheel.choose_tag(parse_platform_tag("manylinux2014_x86_64"), LINUX, {"a.so": (2, 28)})[0] == "manylinux_2_28_x86_64"
    assert wheel.choose_tag(parse_platform_tag("linux_x86_64"), LINUX, {"a.so": (2, 34)}) == ("linux_x86_64", None)


def test_no_libraries_for_the_platform(tmp_path: Path) -> None:
    (tmp_path / "libs" / "windows" / "x64").mkdir(parents=True)
    (tmp_path / "libs" / "windows" / "x64" / "libbitsandbytes_cpu.dll").write_bytes(b"MZ")
    result = run_step(wheel_args("manylinux_2_28_x86_64"), tmp_path)
    assert result.returncode == InputError.exit_code
    assert "no libraries for linux-x86_64 in libs/linux/x86_64" in result.stderr
    assert "windows/x64/libbitsandbytes_cpu.dll" in result.stderr


def test_a_library_of_another_platform_format(tmp_path: Path) -> None:
    lib = tmp_path / "libs" / "linux" / "x86_64" / "libbitsandbytes_cpu.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"MZ" + b"\0" * 100)
    result = run_step(wheel_args("manylinux_2_28_x86_64"), tmp_path)
    assert result.returncode == WheelError.exit_code
    assert "is a PE library, but linux-x86_64 needs ELF" in result.stderr
    assert not (tmp_path / "wheels").exists() or not list((tmp_path / "wheels").iterdir())


def test_a_tag_of_another_platform(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="platform tag 'win_amd64' is for windows-x64, not for linux-x86_64"):
        wheel.parse_args(wheel_args("win_amd64")[1:])
    with pytest.raises(UsageError, match="unknown wheel platform tag 'manylinux_x86_64'"):
        wheel.parse_args(wheel_args("manylinux_x86_64")[1:])


def test_normalise_wheel_sorts_fixes_times_and_rewrites_record(tmp_path: Path) -> None:
    messy = tmp_path / "in.whl"
    with zipfile.ZipFile(messy, "w") as z:
        for name, mode in (("pkg-1.dist-info/RECORD", 0o600), ("pkg/b.py", 0o664), ("pkg-1.dist-info/WHEEL", 0o600),
                           ("pkg/a.so", 0o775)):
            info = zipfile.ZipInfo(name, date_time=(2024, 5, 6, 7, 8, 10))
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, "stale" if name.endswith("RECORD") else name)
    wheel.normalise_wheel(messy, tmp_path / "a.whl", 1700000000)
    wheel.normalise_wheel(messy, tmp_path / "b.whl", 1700000000)
    assert (tmp_path / "a.whl").read_bytes() == (tmp_path / "b.whl").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.whl") as z:
        assert z.namelist() == ["pkg/a.so", "pkg/b.py", "pkg-1.dist-info/WHEEL", "pkg-1.dist-info/RECORD"]
        assert {i.date_time for i in z.infolist()} == {(2023, 11, 14, 22, 13, 20)}
        assert [(i.external_attr >> 16) & 0o777 for i in z.infolist()] == [0o755, 0o644, 0o644, 0o644]
        record = read_record(z)
        assert set(record) == set(z.namelist()) and record["pkg-1.dist-info/RECORD"] == ["", ""]
