"""Bad input on bnb-ci's command line and environment, and README.md's table of every bad-input case.

Most cases are tested next to the module that checks them (test_plan.py, test_matrix.py,
test_publish.py, ...); this file holds the command-line cases that had no test elsewhere, and checks
that the README's table lists every case with a test that exists.
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest

from bitsandbytes_ci.host import cli
from bitsandbytes_ci.core.errors import MatrixError, SelectionError
from bitsandbytes_ci.host.local import SourceError
from bitsandbytes_ci.core.tree import TreeError
from bitsandbytes_ci.host.verbs import WheelsMissingError

REPO = Path(__file__).resolve().parents[2]


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    cli.main_inner(argv, env=env or {}, stdout=io.StringIO())


def test_unknown_rocm_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build-rocm", "--rocm-version", "6.9"]) == SelectionError.exit_code
    assert "version '6.9' is not in the support matrix for rocm; allowed: 6.4.4, 7.0.2, 7.1.1, 7.2.1, 7.2.4, 7.14.0" in capsys.readouterr().err


def test_unknown_oneapi_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build-xpu", "--oneapi-version", "2024"]) == SelectionError.exit_code
    assert "version '2024' is not in the support matrix for xpu; allowed: 2025, 2026" in capsys.readouterr().err


def test_malformed_arch_list_on_the_command_line() -> None:
    with pytest.raises(SelectionError) as caught:
        run(["plan", "--backend", "cuda", "--version", "13.0", "--archs", "75,80"])
    assert "arch list '75,80': '75,80' not understood; expected compute capabilities such as \"75;80;90\" (no \"sm_\" prefix)" in str(caught.value)


def test_unknown_platform_on_the_command_line() -> None:
    with pytest.raises(SelectionError, match=r"unknown platform 'linux-riscv64' \(did you mean 'linux-aarch64'\?\); allowed: linux-x86_64, linux-aarch64, windows-x64"):
        run(["build-all", "--platform", "linux-riscv64"])


def test_matrix_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "matrix.toml"
    with pytest.raises(MatrixError) as caught:
        run(["plan"], env={cli.MATRIX_ENV: str(missing)})
    assert str(caught.value).startswith(f"BNB_CI_MATRIX={missing} (from the environment): matrix file {missing} does not exist")
    with pytest.raises(MatrixError) as caught:  # --matrix wins, and is named as given
        run(["--matrix", str(missing), "plan"], env={cli.MATRIX_ENV: "/elsewhere.toml"})
    assert str(caught.value).startswith(f"matrix file {missing} does not exist")


def test_build_from_a_folder_that_is_not_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text("0.1.0\n")
    with pytest.raises(TreeError, match=r"--source .* is not a tree the pipeline can build: it has no CMakeLists.txt .*; run bnb-ci from the repository root"):
        run(["build-cpu", "--source", str(tmp_path), "--out", str(tmp_path / "out")])
    assert cli.main(["build-cpu", "--source", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    (tmp_path / "CMakeLists.txt").write_text("project(x)\n")
    with pytest.raises(TreeError, match=r"no Python package 'bitsandbytes'"):
        run(["plan", "--source", str(tmp_path)])
    assert not (tmp_path / "out").exists()


def test_audit_wheels_with_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    with pytest.raises(WheelsMissingError, match=r"--wheels .*wheels holds no wheel \(\*\.whl\); build them first: bnb-ci build-wheels --out DIR writes DIR/wheels"):
        run(["audit-wheels", "--wheels", str(tmp_path / "wheels"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_jobs_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["build-all", "--jobs", "0"])
    assert caught.value.code == 2
    assert "argument --jobs: '0' is not a positive whole number" in capsys.readouterr().err


# ---- README.md: every case, each with a test ------------------------------------------------------

ISSUE_CASES = (
    "unknown CUDA version", "unknown ROCm version", "unknown oneAPI version", "arch the toolkit cannot build", "malformed arch list",
    "unknown platform", "blocksize", "quant type", "BNB_CUDA_VERSION not digits", "duplicate version", "missing image", "unknown key",
    "source tree without CMakeLists.txt", "empty wheels directory", "tag does not match its libraries", "two wheels for one platform",
    "output directory that is a file", "missing token", "unreachable index",
)  # fmt: skip


def table_rows() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- bad-input:start -->\n(.*?)<!-- bad-input:end -->", text, re.S)
    assert match, "README.md has no <!-- bad-input:start/end --> section"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    assert lines[0] == "| case | where it enters | message (excerpt) | test |"
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}


def test_readme_lists_every_bad_input_case() -> None:
    cases = [row[0] for row in table_rows()]
    missing = [case for case in ISSUE_CASES if not any(case in row for row in cases)]
    assert missing == [], f"README.md's bad-input table has no row for: {missing}"


def test_every_row_names_a_message_and_tests_that_exist() -> None:
    for case, where, message, tests in table_rows():
        assert where and message.startswith("`"), case
        ids = re.findall(r"`([^`]+::[^`]+)`", tests)
        assert ids, f"{case}: no test named"
        for node_id in ids:
            file, name = node_id.split("::")
            path = REPO / file
            assert path.is_file(), f"{case}: {file} does not exist"
            assert name in defined_tests(path), f"{case}: {node_id} does not exist"


def test_an_explicit_selection_this_host_cannot_build_fails_with_the_doctors_hint(tmp_path: Path) -> None:
    """Asked for a Windows CUDA library on Linux: nothing of it can be built here, so the run fails
    (build-all without a selection builds what the host can and stays green)."""
    from host_helpers import run_bnb_ci

    out = tmp_path / "out"
    run = run_bnb_ci(["build-cuda", "--platform", "windows-x64", "--cuda-version", "13.0", "--out", str(out), "--cache-dir", str(tmp_path / "c")],
                     cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert run.returncode == 1, run.stdout[-2000:]
    assert "summary: 0 built, 1 skipped, 0 failed" in run.stdout
    assert "nothing of the selection can be built on this host (1 job(s) skipped, reasons above); `bnb-ci doctor` lists" in run.stdout
    assert "native-runner job for windows-x64" in run.stdout
