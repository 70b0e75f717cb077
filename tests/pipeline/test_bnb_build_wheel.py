"""The wheel step (bnb_build.wheel): real wheels from real libraries, tags, reproducibility, errors.

Our own tree here, and tiny trees with an in-tree backend (bnb_build_helpers.FAKE_BACKEND) for what other
backends do: other tags, missing or extra libraries, the pinned build environment, vendoring. The
upstream-shaped tree is in test_bnb_build_wheel_upstream.py.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bnb_build_helpers import (
    REPO_ROOT,
    STEP_REQUIREMENTS,
    build_plain_library,
    build_threads_library,
    check_ok,
    cpu_wheel,
    cpu_work_dir,
    fake_tree,
    pinned_version,
    prepare_wheel_dir,
    require_downloads,
    run_step,
    scratch_dir,
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


# ----------------------------------------------------------------------------------------------
# Other trees: an in-tree backend that writes what fake.json says

TAG = "manylinux_2_28_x86_64"
PYTHON_TAG = "cp{0}{1}-cp{0}{1}-linux_x86_64".format(*sys.version_info[:2])


def fake_work(tmp_path: Path, spec: dict, *, requires: tuple = (), library=build_plain_library) -> Path:
    """A work dir: ``src/`` = a tree of the fake backend, ``libs/linux/x86_64/libbitsandbytes_cpu.so``."""
    work = tmp_path / "w"
    fake_tree(work / "src", spec, requires=requires)
    library(work / "libs" / "linux" / "x86_64" / "libbitsandbytes_cpu.so")
    return work


def fake_args(*extra: str, tag: str = TAG) -> list:
    return wheel_args(tag, source="src") + list(extra)


def wheel_meta(built: Path) -> str:
    with zipfile.ZipFile(built) as z:
        return z.read(next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))).decode()


@pytest.mark.parametrize(
    ("filename", "tags", "purelib"),
    [
        (f"bitsandbytes-1.0-{PYTHON_TAG}.whl", [PYTHON_TAG], "false"),
        ("bitsandbytes-1.0-py2.py3-none-any.whl", ["py2-none-any", "py3-none-any"], "true"),
    ],
)
def test_a_wheel_of_another_backend_is_retagged(tmp_path: Path, filename: str, tags: list, purelib: str) -> None:
    work = fake_work(tmp_path, {"filename": filename, "tags": tags, "purelib": purelib})
    result = check_ok(run_step(fake_args(), work))
    (built,) = (work / "wheels").glob("*.whl")
    assert built.name == f"bitsandbytes-1.0-py3-none-{TAG}.whl"
    assert f"{filename} is not tagged py3-none-{TAG}: retagging" in result.stdout
    assert "fake backend config settings: {}" in result.stdout, "wheel.tags goes to scikit_build_core.build only"
    meta = wheel_meta(built)
    assert [line for line in meta.splitlines() if line.startswith("Tag:")] == [f"Tag: py3-none-{TAG}"]
    assert "Root-Is-Purelib: false" in meta
    with zipfile.ZipFile(built) as z:
        assert "bitsandbytes/libbitsandbytes_cpu.so" in z.namelist()
        assert read_record(z).keys() == set(z.namelist())


@pytest.mark.parametrize(
    ("spec", "messages"),
    [
        ({"filename": "bitsandbytes-1.0-py3-none-any.whl", "tags": [PYTHON_TAG]},
         [f"cannot retag bitsandbytes-1.0-py3-none-any.whl to py3-none-{TAG}", "Wheel internal tags"]),
        ({"filename": f"bitsandbytes-1.0-py3-none-{TAG}.whl", "tags": [PYTHON_TAG]},
         [f"cannot retag bitsandbytes-1.0-py3-none-{TAG}.whl to py3-none-{TAG}", "Wheel internal tags"]),
        ({"filename": f"bitsandbytes-1.0-1-{PYTHON_TAG}.whl", "tags": [PYTHON_TAG], "build": "1"},
         [f"bitsandbytes-1.0-1-py3-none-{TAG}.whl has the build number '1'"]),
    ],
    ids=["name-and-metadata-disagree", "right-name-wrong-metadata", "build-number"],
)
def test_a_wheel_whose_tags_cannot_be_fixed_fails(tmp_path: Path, spec: dict, messages: list) -> None:
    work = fake_work(tmp_path, spec)
    result = run_step(fake_args(), work)
    assert result.returncode == WheelError.exit_code, result.stdout + result.stderr
    for message in messages:
        assert message in result.stderr
    assert not list((work / "wheels").glob("*.whl")) and [p.name for p in (work / "wheels").iterdir()] == []


def test_a_wheel_missing_a_library_fails(tmp_path: Path) -> None:
    work = fake_work(tmp_path, {"filename": f"bitsandbytes-1.0-{PYTHON_TAG}.whl", "tags": [PYTHON_TAG], "libraries": False})
    result = run_step(fake_args(), work)
    assert result.returncode == WheelError.exit_code
    assert f"bitsandbytes-1.0-py3-none-{TAG}.whl misses bitsandbytes/libbitsandbytes_cpu.so of --libs" in result.stderr


def test_a_wheel_with_a_library_not_in_libs_fails(tmp_path: Path) -> None:
    spec = {"filename": f"bitsandbytes-1.0-{PYTHON_TAG}.whl", "tags": [PYTHON_TAG], "extra": "libbitsandbytes_cuda130.so"}
    result = run_step(fake_args(), fake_work(tmp_path, spec))
    assert result.returncode == WheelError.exit_code
    assert "holds bitsandbytes/libbitsandbytes_cuda130.so, not among the libraries of --libs (libbitsandbytes_cpu.so)" in result.stderr


def test_the_libraries_go_into_the_package_folder(tmp_path: Path) -> None:
    spec = {"filename": "bitsandbytes-1.0-py3-none-any.whl", "tags": ["py3-none-any"], "package": "mypkg"}
    work = fake_work(tmp_path, spec)
    check_ok(run_step(fake_args("--package", "mypkg"), work))
    (built,) = (work / "wheels").glob("*.whl")
    with zipfile.ZipFile(built) as z:
        assert [n for n in z.namelist() if "libbitsandbytes_" in n] == ["mypkg/libbitsandbytes_cpu.so"]
    missing = run_step(fake_args("--package", "other"), work)
    assert missing.returncode == InputError.exit_code
    assert "the package folder other/ is not in --source src (--package other)" in missing.stderr


def test_the_build_environment_gets_the_constrained_versions(tmp_path: Path) -> None:
    older = "2025.1.15.22"
    require_downloads(f"trove-classifiers=={older}")
    spec = {"filename": "bitsandbytes-1.0-py3-none-any.whl", "tags": ["py3-none-any"], "report": ["trove-classifiers"]}
    work = fake_work(tmp_path, spec, requires=("trove-classifiers",))

    pinned = check_ok(run_step(fake_args(), work)).stdout
    assert f"--dependency-constraints-txt {STEP_REQUIREMENTS}" in pinned, "the default: pipeline/step-requirements.txt"
    assert f"fake backend sees trove-classifiers=={pinned_version('trove-classifiers')}" in pinned

    (work / "constraints.txt").write_text(f"trove-classifiers=={older}\n")
    constrained = check_ok(run_step(fake_args("--constraints", "constraints.txt"), work)).stdout
    assert f"- trove-classifiers=={older}" in constrained
    assert f"fake backend sees trove-classifiers=={older}" in constrained


def test_a_missing_constraints_file(tmp_path: Path) -> None:
    work = fake_work(tmp_path, {"filename": "bitsandbytes-1.0-py3-none-any.whl", "tags": ["py3-none-any"]})
    result = run_step(fake_args("--constraints", "nowhere.txt"), work)
    assert result.returncode == InputError.exit_code
    assert "constraints file nowhere.txt not found: pass --constraints FILE" in result.stderr
    assert wheel.DEFAULT_CONSTRAINTS == REPO_ROOT / "pipeline" / "step-requirements.txt"


def test_a_stale_library_in_our_tree_is_not_packed(tmp_path: Path) -> None:
    work = prepare_wheel_dir(tmp_path / "w", cpu_work_dir() / "out")
    (work / "wsrc" / "bitsandbytes" / "libbitsandbytes_cuda130.so").write_bytes(b"\x7fELF stale")
    result = check_ok(run_step(wheel_args(TAG), work))
    assert "removing bitsandbytes/libbitsandbytes_cuda130.so from the copied sources" in result.stdout
    (built,) = (work / "wheels").glob("*.whl")
    assert built.read_bytes() == cpu_wheel().read_bytes()


# ----------------------------------------------------------------------------------------------
# Vendoring


def openmp_library(dest: Path) -> Path:
    """A library needing libgomp.so.1 and libbnbtest_absent.so.1, which is there only at link time (as
    libcudart is on a build machine)."""
    where = scratch_dir() / "openmp"
    stub = where / "stub" / "libbnbtest_absent.so.1"
    if not stub.exists():
        stub.parent.mkdir(parents=True)
        (where / "stub.c").write_text("int bnbtest_absent(void) { return 2; }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libbnbtest_absent.so.1", "-o", str(stub), str(where / "stub.c")], check=True)
        (stub.parent / "libbnbtest_absent.so").symlink_to(stub.name)
        (where / "omp.c").write_text(
            "#include <omp.h>\nint bnbtest_absent(void);\n"
            '__attribute__((visibility("default"))) int bnb_probe(void) { return omp_get_max_threads() + bnbtest_absent(); }\n'
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-fopenmp", "-o", str(dest), str(where / "omp.c"), f"-L{stub.parent}", "-lbnbtest_absent"],
                   check=True)  # fmt: skip
    return dest


def test_vendoring_grafts_exactly_the_named_libraries(tmp_path: Path) -> None:
    work = fake_work(tmp_path, {"filename": f"bitsandbytes-1.0-{PYTHON_TAG}.whl", "tags": [PYTHON_TAG]}, library=openmp_library)
    result = check_ok(run_step(fake_args("--vendor", "libgomp.so.1"), work))
    assert "; excluding libbnbtest_absent.so.1" in result.stdout
    assert "--only-plat --exclude libbnbtest_absent.so.1 -w " in result.stdout
    assert "--exclude libc.so.6" not in result.stdout, "the policy's libraries are left to auditwheel's checks"
    (built,) = (work / "wheels").glob("*.whl")
    tag = built.name.rsplit("-", 1)[-1][: -len(".whl")]
    assert parse_platform_tag(tag).glibc >= (2, 28)
    with zipfile.ZipFile(built) as z:
        grafted = [n for n in z.namelist() if n.startswith("bitsandbytes.libs/")]
        assert len(grafted) == 1 and grafted[0].startswith("bitsandbytes.libs/libgomp-"), grafted
        packed = tmp_path / "packed.so"
        packed.write_bytes(z.read("bitsandbytes/libbitsandbytes_cpu.so"))
    readelf = subprocess.run(["readelf", "-d", str(packed)], capture_output=True, text=True, check=True).stdout
    assert "[libbnbtest_absent.so.1]" in readelf and "[libgomp.so.1]" not in readelf
    assert "$ORIGIN/../bitsandbytes.libs" in readelf


def test_a_named_library_nothing_needs_is_not_vendored(tmp_path: Path) -> None:
    work = fake_work(tmp_path, {"filename": "bitsandbytes-1.0-py3-none-any.whl", "tags": ["py3-none-any"]})
    result = check_ok(run_step(fake_args("--vendor", "libgomp.so.1"), work))
    assert "--vendor libgomp.so.1: no packed library needs it; not vendored" in result.stdout
    assert "auditwheel repair" not in result.stdout
    (built,) = (work / "wheels").glob("*.whl")
    assert built.name == f"bitsandbytes-1.0-py3-none-{TAG}.whl"


def test_vendor_options_are_checked() -> None:
    with pytest.raises(UsageError, match="vendoring \\(auditwheel\\) is for Linux wheels, not for windows-x64"):
        wheel.parse_args(["--platform", "windows-x64", "--plat-tag", "win_amd64", "--libs", "l", "--source", "s", "--out", "o",
                          "--vendor", "libgomp.so.1"])  # fmt: skip
    with pytest.raises(UsageError, match="--vendor needs a manylinux --plat-tag .*, not linux_x86_64"):
        wheel.parse_args(wheel_args("linux_x86_64")[1:] + ["--vendor", "libgomp.so.1"])
    with pytest.raises(UsageError, match="--vendor 'gomp' is not a library soname"):
        wheel.parse_args(wheel_args(TAG)[1:] + ["--vendor", "gomp"])
    with pytest.raises(UsageError, match="--package 'a/b' is not an import name"):
        wheel.parse_args(wheel_args(TAG)[1:] + ["--package", "a/b"])
    job = wheel.parse_args(wheel_args(TAG)[1:] + ["--vendor", "libgomp.so.1", "--vendor", "libgomp.so.1", "--package", "pkg.sub"])
    assert job.vendor == ("libgomp.so.1",) and job.package_dir == "pkg/sub" and job.constraints == wheel.DEFAULT_CONSTRAINTS


def test_plan_vendoring() -> None:
    probe = {
        "policies": {"manylinux_2_17": ["libc.so.6"], "manylinux_2_28": ["libc.so.6", "libstdc++.so.6"]},
        "trees": {
            "/x/libbitsandbytes_cuda130.so": {
                "needed": ["libcudart.so.13", "libgomp.so.1", "libstdc++.so.6", "ld-linux-x86-64.so.2"],
                "libraries": {
                    "libcudart.so.13": {"realpath": None, "needed": []},
                    "libgomp.so.1": {"realpath": "/usr/lib/libgomp.so.1.0.0", "needed": ["libc.so.6", "libextra.so.2"]},
                    "libextra.so.2": {"realpath": "/usr/lib/libextra.so.2", "needed": []},
                    "libstdc++.so.6": {"realpath": "/usr/lib/libstdc++.so.6", "needed": ["libm.so.6"]},
                },
            },
        },
    }
    plan = wheel.plan_vendoring(probe, ["libgomp.so.1", "libnuma.so.1"], TAG)
    assert plan.vendored == {"libgomp.so.1": "/usr/lib/libgomp.so.1.0.0"}
    assert plan.excluded == ["libcudart.so.13", "libextra.so.2"]
    assert plan.not_needed == ["libnuma.so.1"]
    assert wheel.plan_vendoring(probe, ["libgomp.so.1"], "manylinux2014_x86_64").excluded == ["libcudart.so.13", "libextra.so.2", "libstdc++.so.6"]
    with pytest.raises(WheelError, match="libbitsandbytes_cuda130.so needs libcudart.so.13 \\(--vendor\\), but it is not found"):
        wheel.plan_vendoring(probe, ["libcudart.so.13"], TAG)
    with pytest.raises(WheelError, match="auditwheel knows no policy manylinux_2_99"):
        wheel.plan_vendoring(probe, [], "manylinux_2_99_x86_64")


def test_commands() -> None:
    constraints = Path("/c/step-requirements.txt")
    assert wheel.build_command("py", "scikit_build_core.build", "src", "dist", TAG, constraints) == [
        "py", "-m", "build", "--wheel", "--outdir", "dist", "--dependency-constraints-txt", str(constraints),
        f"--config-setting=wheel.tags=py3-none-{TAG}", "src",
    ]  # fmt: skip
    assert "--config-setting" not in " ".join(wheel.build_command("py", "scikit_build_core.setuptools.build_meta", "src", "dist", TAG, constraints))
    assert wheel.retag_command("py", Path("/d/a.whl"), TAG) == [
        "py", "-m", "wheel", "tags", "--remove", "--python-tag", "py3", "--abi-tag", "none", "--platform-tag", TAG, "/d/a.whl",
    ]  # fmt: skip
    assert wheel.repair_command("py", Path("/d/a.whl"), TAG, ["libcudart.so.13"], Path("/r")) == [
        "py", "-m", "auditwheel", "repair", "--plat", TAG, "--only-plat", "--exclude", "libcudart.so.13", "-w", "/r", "/d/a.whl",
    ]  # fmt: skip
    assert wheel.grafted_source_name("libgomp-1a2b3c4d.so.1.0.0") == "libgomp.so.1.0.0"


def test_verify_wheel_reads_the_result_back(tmp_path: Path) -> None:
    def make(name: str, wheel_text: str, files: tuple = ("bitsandbytes/libbitsandbytes_cpu.so",)) -> Path:
        path = tmp_path / str(len(list(tmp_path.iterdir()))) / name
        path.parent.mkdir()
        with zipfile.ZipFile(path, "w") as z:
            for f in files:
                z.writestr(f, b"x")
            z.writestr("bitsandbytes-1.0.dist-info/WHEEL", wheel_text)
        return path

    good = f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-{TAG}\n"
    libs = ["libbitsandbytes_cpu.so"]
    wheel.verify_wheel(make(f"bitsandbytes-1.0-py3-none-{TAG}.whl", good), TAG, "bitsandbytes", libs, {})
    cases = [
        (make("bitsandbytes-1.0-py3-none-any.whl", good), "bitsandbytes-1.0-py3-none-any.whl is tagged py3-none-any, not py3-none-"),
        (make(f"bitsandbytes-1.0-py3-none-{TAG}.whl", good.replace("py3-none", "cp311-cp311")),
         "WHEEL metadata lists tags ['cp311-cp311-manylinux_2_28_x86_64'], expected"),
        (make(f"bitsandbytes-1.0-py3-none-{TAG}.whl", good.replace("false", "true")), "WHEEL says Root-Is-Purelib: true, expected false"),
        (make(f"bitsandbytes-1.0-py3-none-{TAG}.whl", good, ("bitsandbytes/sub/libbitsandbytes_cpu.so",)),
         "holds bitsandbytes/sub/libbitsandbytes_cpu.so, not among the libraries of --libs"),
        (make(f"bitsandbytes-1.0-py3-none-{TAG}.whl", good, ("bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes.libs/libz-0123abcd.so.1")),
         "vendors bitsandbytes.libs/libz-0123abcd.so.1, expected exactly nothing (--vendor)"),
    ]
    for path, message in cases:
        with pytest.raises(WheelError, match=re.escape(message)):
            wheel.verify_wheel(path, TAG, "bitsandbytes", libs, {})
