"""Selections mean what they say, and every bad input ends in a message and exit code 2 (3 for the
matrix file), never a traceback, a silently wider selection or a green run that did nothing.

Everything runs through `cli.main`, which turns only the pipeline's own errors into a message and an
exit code: any other exception fails the test with its traceback.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from host_helpers import copy_repo

from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs
from bitsandbytes_ci.host import cli
from bnb_build import manifest as manifest_step
from bnb_build import try_wheels as try_step
from bnb_build import version as version_step
from bnb_build.inputs import LATEST_SOURCE_DATE_EPOCH

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def matrix():
    return load_matrix()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "tree")


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Runs bnb-ci; asserts it exited `code`; its stderr."""
    assert cli.main(argv, env={}) == code
    return capsys.readouterr().err


# ---- selections ----------------------------------------------------------------------------------------


def families(jobs) -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = {}
    for job in jobs:
        found.setdefault(job.family, set()).add(job.version)
    return found


def test_a_version_never_drops_a_named_backend(matrix) -> None:
    jobs = plan_jobs(matrix, Selection(backends=("cpu", "cuda"), versions=("13.0.2",)))
    assert families(jobs) == {"cpu": {None}, "cuda": {"13.0.2"}}
    assert {j.platform for j in jobs if j.family == "cpu"} == set(dict(matrix.families())["cpu"].platforms)


def test_a_version_applies_to_the_backends_that_have_it(matrix) -> None:
    every_rocm = {v for v in dict(matrix.families())["rocm"].all_versions()}
    named = families(plan_jobs(matrix, Selection(backends=("cuda", "rocm"), versions=("13.0.2",))))
    assert named == {"cuda": {"13.0.2"}, "rocm": every_rocm}
    each = families(plan_jobs(matrix, Selection(backends=("rocm", "cuda"), versions=("6.4", "13.0"))))
    assert each == {"cuda": {"13.0.2"}, "rocm": {"6.4.4"}}
    # without --backend a version selects only the families that have it, as before
    assert families(plan_jobs(matrix, Selection(versions=("13.0.2",)))) == {"cuda": {"13.0.2"}}


def test_cpu_and_a_cuda_version_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--backend", "cpu", "--backend", "cuda", "--version", "13.0.2", "--platform", "linux-x86_64"], env={}) == 0
    listed = capsys.readouterr().out
    assert "cpu-linux-x86_64" in listed and "cuda130-linux-x86_64" in listed and "cuda128-linux-x86_64" not in listed


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["build-cuda", "--cuda-version", ""], "version"),
        (["build-rocm", "--rocm-version", ""], "version"),
        (["build-xpu", "--oneapi-version", " "], "version"),
        (["build-all", "--version", ""], "version"),
        (["plan", "--backend", ""], "backend"),
        (["build-cpu", "--platform", ""], "platform"),
        (["plan", "--backend", "cuda", "--archs", ""], "archs"),
    ],
)
def test_an_empty_selection_value_is_refused(argv: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    extra = ["--out", str(out), "--cache-dir", str(tmp_path / "cache")] if argv[0] != "plan" else []
    err = refused([*argv, *extra], capsys)
    assert f"error: {field} " in err and "is empty" in err, err
    assert not out.exists(), "nothing was built"


# ---- --libs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["build-wheels", "build-all"])
def test_libs_that_do_not_exist_are_refused(verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused([verb, "--libs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert f"--libs {tmp_path / 'nowhere'} does not exist; build them first: bnb-ci build-<backend> --out DIR" in err
    assert not (tmp_path / "out" / "wheels").exists()


def test_libs_without_a_library_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "libs" / "linux" / "x86_64").mkdir(parents=True)
    err = refused(["build-wheels", "--libs", str(tmp_path / "libs"), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert "holds no library (no <os>/<arch>/<library> with its build-info.json)" in err


def test_an_empty_path_option_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["build-wheels", "--libs", "", "--out", str(tmp_path / "out")], env={})
    assert caught.value.code == 2
    assert "argument --libs: '' is empty: name a path" in capsys.readouterr().err


def test_garbage_build_info_in_libs_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "libs" / "linux" / "x86_64"
    folder.mkdir(parents=True)
    (folder / "libbitsandbytes_cpu.so").write_bytes(b"\x7fELF")
    (folder / "libbitsandbytes_cpu.so.build-info.json").write_text("{not json", encoding="utf-8")
    err = refused(["build-wheels", "--libs", str(tmp_path / "libs"), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert "libbitsandbytes_cpu.so.build-info.json is not a build-info file: not JSON" in err
    assert "build the library again" in err


def test_the_manifest_step_names_a_garbage_build_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dist" / "libs" / "linux" / "x86_64"
    folder.mkdir(parents=True)
    (folder / "libbitsandbytes_cpu.so").write_bytes(b"\x7fELF")
    (folder / "libbitsandbytes_cpu.so.build-info.json").write_bytes(b"\xff\xfe")
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"version": "0.1.0", "jobs": [{"id": "cpu-linux-x86_64", "kind": "library", "status": "built",
                                                              "artifact": "libbitsandbytes_cpu.so"}]}))  # fmt: skip
    assert manifest_step.main(["--dist", str(tmp_path / "dist"), "--jobs", str(jobs)]) == 3
    assert "libbitsandbytes_cpu.so.build-info.json is not a build-info file: not UTF-8 text" in capsys.readouterr().err


# ---- wheels --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["audit-wheels", "test-wheels"])
def test_a_corrupt_wheel_is_refused_by_name(verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    good = wheels / "bitsandbytes-0.1.0-py3-none-win_amd64.whl"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("bitsandbytes/__init__.py", "")
    bad = wheels / "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl"
    bad.write_bytes(good.read_bytes()[:40])  # a truncated copy
    err = refused([verb, "--wheels", str(wheels), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert f"not a readable wheel (zip archive): {bad} (" in err and str(good) not in err
    assert not (tmp_path / "out").exists()


def test_the_try_step_refuses_a_corrupt_wheel_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the step behind `bnb-ci test-wheels` and the Dagger test-wheels function
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    bad = wheels / "bitsandbytes-0.1.0-py3-none-manylinux_2_28_x86_64.whl"
    bad.write_text("not a zip")
    assert try_step.main(["--wheels", str(wheels), "--report", str(tmp_path / "tries.md")]) == 2
    assert f"not a readable wheel (zip archive): {bad} (File is not a zip file)" in capsys.readouterr().err
    assert not (tmp_path / "tries.md").exists()


# ---- the tree ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [("1.0.0garbage\n", "holds '1.0.0garbage', which is not a version"), ("", "is empty"),
                                              ("\n\n", "is empty")])  # fmt: skip
def test_a_version_file_that_is_not_a_version(text: str, message: str, tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "VERSION").write_text(text, encoding="utf-8")
    err = refused(["plan", "--source", str(tree), "--format", "json"], capsys)
    assert f"{tree}/VERSION {message}: write a version such as 0.1.0" in err
    assert version_step.main(["--source", str(tree)]) == 2
    assert f"{tree}/VERSION {message}" in capsys.readouterr().err


def test_a_pyproject_that_is_not_utf8_is_refused(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "pyproject.toml").write_bytes((tree / "pyproject.toml").read_bytes() + b"\n# caf\xe9\n")
    err = refused(["plan", "--source", str(tree), "--format", "json"], capsys)
    assert f"{tree}/pyproject.toml is not UTF-8 text (byte" in err


def test_a_symlink_loop_in_the_sources_is_named_before_any_job(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "csrc" / "cpu" / "loop_a").symlink_to("loop_b")
    (tree / "csrc" / "cpu" / "loop_b").symlink_to("loop_a")
    out = tmp_path / "out"
    err = refused(["build-cpu", "--source", str(tree), "--out", str(out), "--cache-dir", str(tmp_path / "c")], capsys)
    assert "csrc/cpu/loop_a (a symbolic link that cannot be followed: Too many levels of symbolic links)" in err
    assert not out.exists() and not (tmp_path / "c").exists(), "no job started"
    err = refused(["plan", "--backend", "cpu", "--format", "json", "--source", str(tree)], capsys)
    assert "csrc/cpu/loop_b (a symbolic link" in err


# ---- the matrix file and --source-date-epoch ---------------------------------------------------------------------


def test_an_unreadable_matrix_file_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["--matrix", str(tmp_path), "plan"], capsys, code=3)
    assert f"matrix file {tmp_path} cannot be read: Is a directory" in err
    latin1 = tmp_path / "matrix.toml"
    latin1.write_bytes(b"# caf\xe9\n")
    err = refused(["--matrix", str(latin1), "plan"], capsys, code=3)
    assert f"matrix file {latin1} is not UTF-8 text (byte 5: invalid continuation byte)" in err


@pytest.mark.parametrize("value", [str(LATEST_SOURCE_DATE_EPOCH + 1), "99999999999999999999", "-1", "1e9"])
def test_source_date_epoch_out_of_range(value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["build-wheels", "--source-date-epoch", value, "--out", str(tmp_path / "out")], env={})
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --source-date-epoch: {value!r}" in err
    if value.isdigit():
        assert f"the last time a wheel (zip) entry can hold; allowed: 0 to {LATEST_SOURCE_DATE_EPOCH}" in err


def test_the_latest_zip_time_is_accepted() -> None:
    assert cli.source_date_epoch_arg(f" {LATEST_SOURCE_DATE_EPOCH} ") == str(LATEST_SOURCE_DATE_EPOCH)
