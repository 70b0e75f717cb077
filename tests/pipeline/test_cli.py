"""bitsandbytes_ci.host.cli: the `bnb-ci` verbs, their options and their errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitsandbytes_ci.host import cli
from bitsandbytes_ci.core.matrix import default_matrix_path



def run(*argv: str, env: dict[str, str] | None = None, handlers=None) -> str:
    out = io.StringIO()
    assert cli.main_inner(list(argv), env=env or {}, stdout=out, handlers=handlers) == 0
    return out.getvalue()


def test_plan_json_lists_every_job() -> None:
    jobs = json.loads(run("plan", "--format", "json"))
    assert len(jobs) == 38
    for job in jobs:
        assert {"id", "backend", "version", "platform", "image", "archs", "library", "runner", "cmake_args", "sources"} <= set(job)
    linux = {j["id"] for j in jobs if j["os"] == "linux"}
    expected_linux = {f"cpu-linux-{a}" for a in ("x86_64", "aarch64")}
    expected_linux |= {f"cuda{v}-linux-{a}" for v in ("118", "121", "124", "126", "128", "130", "132") for a in ("x86_64", "aarch64")}
    expected_linux |= {f"rocm{v}-linux-x86_64" for v in ("64", "70", "71", "72", "714")}
    expected_linux |= {"xpu2025-linux-x86_64", "xpu2026-linux-x86_64"}
    assert linux == expected_linux
    assert all(j["runner"] == "container" and j["image"] for j in jobs if j["os"] == "linux" and j["backend"] != "cpu")
    assert all(j["runner"] == "cross" and j["toolchain"] == "zig" and j["image"] for j in jobs if j["backend"] == "cpu")
    others = [j for j in jobs if j["os"] != "linux"]
    assert len(others) == 38 - len(expected_linux)
    assert all(j["runner"] == "native-runner" and j["image"] is None for j in others if j["backend"] != "cpu")
    assert {j["id"] for j in others} >= {"cpu-macos-arm64", "cpu-windows-arm64", "cuda134-windows-arm64", "rocm714-windows-x64", "xpu2026-windows-x64"}


def test_plan_json_selection() -> None:
    jobs = json.loads(run("plan", "--format", "json", "--backend", "cuda", "--version", "12.8", "--platform", "linux-aarch64", "--archs", "90"))
    assert [(j["id"], j["archs"]) for j in jobs] == [("cuda128-linux-aarch64", ["90"])]


def test_plan_table_marks_tag_only_images() -> None:
    table = run("plan", "--platform", "linux-x86_64")
    header = table.splitlines()[0].split()
    assert header == ["id", "backend", "version", "platform", "runner", "toolchain", "image", "archs", "library"]
    assert "nvidia/cuda:13.2.0-devel-rockylinux8 (tag only)" in table
    assert "rocm714-linux-x86_64" in table and "libbitsandbytes_rocm714.so" in table
    assert "wheel-linux-x86_64" in table
    assert "used by tag only" in table


def test_plan_table_shows_pinned_images(tmp_path: Path) -> None:
    (tmp_path / "matrix.toml").write_text(default_matrix_path().read_text(encoding="utf-8"), encoding="utf-8")
    digest = "sha256:" + "cd" * 32
    (tmp_path / "images.lock.toml").write_text(f'[images]\n"nvidia/cuda:12.8.1-devel-rockylinux8" = "{digest}"\n', encoding="utf-8")
    table = run("plan", "--backend", "cuda", "--version", "12.8", "--platform", "linux-x86_64", env={cli.MATRIX_ENV: str(tmp_path / "matrix.toml")})
    assert f"nvidia/cuda:12.8.1-devel-rockylinux8@{digest}" in table
    [row] = [line for line in table.splitlines() if line.startswith("cuda128-linux-x86_64")]
    assert "tag only" not in row


def test_every_verb_has_a_handler() -> None:
    assert set(cli.HANDLERS) == set(cli.VERBS)


def test_dispatch_hands_the_planned_jobs_to_the_handler() -> None:
    seen = []
    handlers = dict(cli.HANDLERS, **{"build-cuda": lambda inv: seen.append(inv) or 0})
    run("build-cuda", "--cuda-version", "13.0", "--platform", "linux-x86_64", "--platform", "linux-aarch64", "--archs", "75;90", "--out", "o", handlers=handlers)
    [invocation] = seen
    assert invocation.verb == "build-cuda"
    assert [job.id for job in invocation.jobs] == ["cuda130-linux-x86_64", "cuda130-linux-aarch64"]
    assert all(job.archs == ["75", "90"] for job in invocation.jobs)
    assert invocation.options["out"] == Path("o")
    assert [w.id for w in invocation.wheels] == ["wheel-linux-x86_64", "wheel-linux-aarch64"]


@pytest.mark.parametrize(
    ("verb", "option", "version", "family"),
    [("build-rocm", "--rocm-version", "7.14", "rocm"), ("build-xpu", "--oneapi-version", "2026", "xpu")],
)
def test_version_options(verb: str, option: str, version: str, family: str) -> None:
    seen = []
    run(verb, option, version, handlers={verb: lambda inv: seen.append(inv) or 0})
    assert {job.family for job in seen[0].jobs} == {family}
    assert all(job.version.startswith(version) for job in seen[0].jobs)


def test_build_all_takes_out_and_platforms() -> None:
    seen = []
    run("build-all", "--out", "dist-x", "--platform", "macos-arm64", handlers={"build-all": lambda inv: seen.append(inv) or 0})
    assert [job.id for job in seen[0].jobs] == ["cpu-macos-arm64"]
    assert seen[0].options["out"] == Path("dist-x")


def test_bad_version_exits_2_naming_value_and_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build-cuda", "--cuda-version", "12.9"]) == 2
    err = capsys.readouterr().err
    assert "'12.9'" in err and "12.8.1" in err and "13.4.1" in err


def test_bad_archs_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--backend", "cuda", "--version", "13", "--archs", "70"]) == 2
    assert "cannot build 70" in capsys.readouterr().err


def test_invalid_matrix_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "matrix.toml"
    bad.write_text(default_matrix_path().read_text(encoding="utf-8").replace("schema_version = 1", "schema_versio = 1"), encoding="utf-8")
    assert cli.main(["--matrix", str(bad), "plan"]) == 3
    assert "did you mean 'schema_version'?" in capsys.readouterr().err


def test_console_script_runs_plan_json() -> None:
    result = subprocess.run([sys.executable, "-m", "bitsandbytes_ci.host.cli", "plan", "--format", "json", "--backend", "cpu"], capture_output=True, text=True, check=True)
    assert [j["id"] for j in json.loads(result.stdout)] == [
        "cpu-linux-x86_64", "cpu-linux-aarch64", "cpu-windows-x64", "cpu-windows-arm64", "cpu-macos-arm64",
    ]  # fmt: skip
    script = Path(sys.executable).parent / "bnb-ci"
    if script.exists():  # installed with `pip install -e pipeline`
        assert subprocess.run([str(script), "plan", "--platform", "macos-arm64"], capture_output=True, text=True, check=True).stdout
