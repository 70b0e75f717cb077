"""bnb_build.release (the pre-release step): stable names with consistent metadata, the release body,
and the refusals. The renamed wheel is installed with real pip and real uv into fresh venvs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from bnb_build import release
from bnb_build.errors import CorruptWheel
from bnb_build_helpers import cpu_wheel, run_step
from release_helpers import (
    COMMIT,
    PLAT_TAGS,
    REPO,
    expect_json,
    fresh_venv,
    installed_report,
    numpy_links,
    pip_install,
    real_version,
    retag,
    rewrite_entries,
    round_trip,
    uv_install,
    wheel_set,
)

ALL = list(PLAT_TAGS)


def pre_release(work: Path, *extra: str, out: str = "out", expect: str = ",".join(ALL)):
    args = ["pre-release", "--wheels", "wheels", "--out", out, "--commit", COMMIT, "--repo", REPO]
    args += ["--expect-platforms", expect] if expect else []
    return run_step([*args, *extra], work)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pre-release folder for all five platforms."""
    work = tmp_path_factory.mktemp("pre")
    wheel_set(work / "wheels", ALL)
    result = pre_release(work)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "out"


def test_release_folder_has_stable_names_and_consistent_metadata(released: Path) -> None:
    names = sorted(p.name for p in released.iterdir())
    wheels = sorted(f"bitsandbytes-1.33.7.preview-py3-none-{tag}.whl" for tag in PLAT_TAGS.values())
    assert names == sorted(wheels + ["body.md", "release.json"])
    for name in wheels:
        info = release.read_wheel(released / name)  # name, METADATA, WHEEL and .dist-info agree
        assert info.version == "1.33.7.preview" and info.dist_info == "bitsandbytes-1.33.7.preview.dist-info"
        with zipfile.ZipFile(released / name) as z:
            build_info = json.loads(z.read("bitsandbytes/_build_info.json"))
            assert z.testzip() is None
            record = z.read("bitsandbytes-1.33.7.preview.dist-info/RECORD").decode()
        assert build_info == {
            "commit": COMMIT, "placeholder_version": "1.33.7.preview", "platform": info.platform,
            "version": real_version(), "wheel": f"bitsandbytes-{real_version()}-py3-none-{info.plat_tag}.whl",
        }  # fmt: skip
        assert "bitsandbytes/_build_info.json,sha256=" in record and "0.1.0.dist-info" not in record
    manifest = json.loads((released / "release.json").read_text())
    assert manifest["commit"] == COMMIT and manifest["repo"] == REPO and manifest["tag"] == "continuous-release_main"
    assert {a["name"]: a["sha256"] for a in manifest["assets"]} == {n: hashlib.sha256((released / n).read_bytes()).hexdigest() for n in wheels}


def test_body_has_one_command_per_platform_under_upstream_headings(released: Path) -> None:
    body = (released / "body.md").read_text()
    headings = re.findall(r"^## (.+)$", body, re.MULTILINE)
    assert headings == ["Linux (x86_64)", "Linux (aarch64)", "Windows (x86_64)", "Windows (arm64)", "macOS 14+ (arm64)", "SHA-256"]
    commands = re.findall(r"^pip install --force-reinstall (\S+)$", body, re.MULTILINE)
    base = f"https://github.com/{REPO}/releases/download/continuous-release_main/"
    assert commands == [f"{base}bitsandbytes-1.33.7.preview-py3-none-{tag}.whl" for tag in PLAT_TAGS.values()]
    assert "--no-deps" in body and "custom build of PyTorch" in body
    for asset in json.loads((released / "release.json").read_text())["assets"]:
        assert f"| `{asset['name']}` | `{asset['sha256']}` |" in body
    assert COMMIT[:12] in body and real_version() in body


def test_output_is_reproducible(tmp_path: Path, released: Path) -> None:
    work = tmp_path / "again"
    wheel_set(work / "wheels", ALL)
    assert pre_release(work).returncode == 0
    for path in released.iterdir():
        assert (work / "out" / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.fixture(scope="module")
def linux_url(released: Path) -> str:
    return (released / f"bitsandbytes-1.33.7.preview-py3-none-{PLAT_TAGS['linux-x86_64']}.whl").as_uri()


def test_pip_installs_the_renamed_wheel_from_a_file_url(tmp_path: Path, linux_url: str) -> None:
    python = fresh_venv(tmp_path / "venv")
    result = pip_install(python, "--no-index", "--find-links", str(numpy_links()), "--force-reinstall", linux_url)
    assert result.returncode == 0, result.stdout + result.stderr
    report = installed_report(python, tmp_path)
    assert report == {"metadata": "1.33.7.preview", "version": real_version(), "info": report["info"]}
    assert report["info"]["commit"] == COMMIT and report["info"]["platform"] == "linux-x86_64"
    assert f"bitsandbytes {real_version()} (commit {COMMIT})" in round_trip(python, tmp_path)


def test_uv_installs_the_renamed_wheel_from_a_file_url(tmp_path: Path, linux_url: str) -> None:
    python = fresh_venv(tmp_path / "venv")
    result = uv_install(python, "--no-index", "--find-links", str(numpy_links()), "--reinstall", linux_url)
    assert result.returncode == 0, result.stdout + result.stderr
    report = installed_report(python, tmp_path)
    assert report["metadata"] == "1.33.7.preview" and report["version"] == real_version() and report["info"]["commit"] == COMMIT
    round_trip(python, tmp_path)


def test_uv_refuses_upstream_style_renamed_wheels(tmp_path: Path) -> None:
    """Why METADATA must change too: a wheel renamed the upstream way (file name only) is refused by uv."""
    upstream_style = tmp_path / cpu_wheel().name.replace(f"-{real_version()}-", "-1.33.7.preview-")
    shutil.copy(cpu_wheel(), upstream_style)
    python = fresh_venv(tmp_path / "venv")
    result = uv_install(python, "--no-index", "--no-deps", upstream_style.as_uri())
    assert result.returncode != 0 and "does not match filename" in result.stderr


# ----------------------------------------------------------------------------------------------
# Refusals: nothing is written


def test_no_wheels(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    result = pre_release(tmp_path)
    assert result.returncode == 3 and "no wheels (*.whl) in wheels" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_platform_the_plan_built_is_missing(tmp_path: Path) -> None:
    wheel_set(tmp_path / "wheels", ["linux-x86_64", "macos-arm64"])
    result = pre_release(tmp_path)
    assert result.returncode == release.ReleaseError.exit_code
    assert "no wheel for linux-aarch64, windows-x64, windows-arm64, which the plan built (--expect-platforms)" in result.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_missing_platform_with_expect_json(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    retag(cpu_wheel(), PLAT_TAGS["macos-arm64"], tmp_path / "wheels")
    expect_json(tmp_path / "expect.json")
    result = pre_release(tmp_path, "--expect", "expect.json", expect="")
    assert result.returncode == release.ReleaseError.exit_code
    assert "no wheel for linux-x86_64, which the plan built (expect.json)" in result.stderr
    assert "no wheel is expected for macos-arm64" in result.stderr


def test_audit_runs_with_expect_json(tmp_path: Path) -> None:
    wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    expect_json(tmp_path / "expect.json")
    assert pre_release(tmp_path, "--expect", "expect.json", expect="").returncode == 0
    spec = json.loads((tmp_path / "expect.json").read_text())
    spec["wheels"]["linux-x86_64"]["libraries"]["libbitsandbytes_cuda128.so"] = {"backend": "cuda", "archs": []}
    (tmp_path / "expect.json").write_text(json.dumps(spec))
    result = pre_release(tmp_path, "--expect", "expect.json", out="out2", expect="")
    assert result.returncode == release.ReleaseError.exit_code and "expected library libbitsandbytes_cuda128.so is missing" in result.stderr
    assert not (tmp_path / "out2").exists()


def test_duplicate_platforms(tmp_path: Path) -> None:
    wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    retag(cpu_wheel(), "manylinux_2_34_x86_64", tmp_path / "wheels")
    result = pre_release(tmp_path, expect="linux-x86_64")
    assert result.returncode == release.ReleaseError.exit_code and "2 wheels for linux-x86_64" in result.stderr


def test_inconsistent_wheel(tmp_path: Path) -> None:
    """The upstream pre-release wheel itself (file renamed, METADATA not) is not a valid input."""
    (tmp_path / "wheels").mkdir()
    shutil.copy(cpu_wheel(), tmp_path / "wheels" / cpu_wheel().name.replace(f"-{real_version()}-", "-0.2.0-"))
    result = pre_release(tmp_path, expect="linux-x86_64")
    assert result.returncode == release.ReleaseError.exit_code
    assert f"METADATA says version '{real_version()}', the file name says '0.2.0'; installers such as uv refuse such a wheel" in result.stderr


def test_mixed_versions(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    shutil.copy(cpu_wheel(), tmp_path / "wheels")
    other = retag(cpu_wheel(), PLAT_TAGS["macos-arm64"], tmp_path / "x")

    def bump(name: str, data: bytes):
        name = name.replace(f"bitsandbytes-{real_version()}.dist-info", "bitsandbytes-9.9.9.dist-info")
        if name.endswith("METADATA"):
            data = data.replace(f"Version: {real_version()}".encode(), b"Version: 9.9.9")
        return name, data

    rewrite_entries(other, tmp_path / "wheels" / other.name.replace(real_version(), "9.9.9"), bump)
    result = pre_release(tmp_path, expect="linux-x86_64,macos-arm64")
    assert result.returncode == release.ReleaseError.exit_code and f"different versions ({real_version()}, 9.9.9)" in result.stderr


def test_out_must_be_a_release_folder_or_empty(tmp_path: Path) -> None:
    wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep")
    result = pre_release(tmp_path, expect="linux-x86_64")
    assert result.returncode == 2 and "holds no release.json" in result.stderr
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep"
    # an earlier release folder is replaced as a whole
    assert pre_release(tmp_path, out="rel", expect="linux-x86_64").returncode == 0
    (tmp_path / "rel" / "stale.whl").write_text("old")
    assert pre_release(tmp_path, out="rel", expect="linux-x86_64").returncode == 0
    assert not (tmp_path / "rel" / "stale.whl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--commit", "abc123"], "commit 'abc123' is not a full commit id"),
        (["--repo", "no-slash"], "repository 'no-slash' is not OWNER/NAME"),
        (["--tag", "bad..tag"], "tag 'bad..tag' is not a usable git tag name"),
        (["--expect-platforms", "linux-x86_64,linux-x86_64"], "names linux-x86_64 more than once"),
        (["--expect-platforms", "linux-arm64"], "unknown platform 'linux-arm64'; allowed: linux-x86_64"),
    ],
)
def test_bad_options(args: list, message: str) -> None:
    base = {"--wheels": "w", "--out": "o", "--commit": COMMIT, "--repo": REPO, "--expect-platforms": "linux-x86_64"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    argv = [x for kv in base.items() for x in kv]
    with pytest.raises(release.UsageError, match=re.escape(message)):
        release.parse_args(argv)


def test_pre_release_wheels_are_not_an_input(tmp_path: Path, released: Path) -> None:
    (tmp_path / "wheels").mkdir()
    shutil.copy(released / f"bitsandbytes-1.33.7.preview-py3-none-{PLAT_TAGS['linux-x86_64']}.whl", tmp_path / "wheels")
    result = pre_release(tmp_path, expect="linux-x86_64")
    assert result.returncode == release.ReleaseError.exit_code and "placeholder version 1.33.7.preview are pre-release wheels" in result.stderr


def test_a_corrupt_wheel_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    wheel_set(tmp_path / "wheels", ["linux-x86_64"])
    truncated = tmp_path / "wheels" / cpu_wheel().name.replace(PLAT_TAGS["linux-x86_64"], PLAT_TAGS["windows-x64"])
    truncated.write_bytes(cpu_wheel().read_bytes()[:4096])
    expect_json(tmp_path / "expect.json")
    for extra in ((), ("--expect", "expect.json")):
        result = pre_release(tmp_path, *extra, expect="" if extra else "linux-x86_64,windows-x64")
        assert result.returncode == CorruptWheel.exit_code == 2, result.stderr
        assert f"wheels/{truncated.name} (" in result.stderr and "not a readable wheel (zip archive)" in result.stderr
        assert "Traceback" not in result.stderr and "BadZipFile" not in result.stderr
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*")), "nothing is written"
    with pytest.raises(CorruptWheel, match=re.escape(truncated.name)):
        release.read_wheel(truncated)
