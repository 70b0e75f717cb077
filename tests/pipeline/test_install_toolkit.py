"""bitsandbytes_ci.host.install_toolkit: how a native runner installs its toolkit (`bnb-ci install-toolkit`).

The installers are Windows programs, which cannot run here: these tests check the plans the matrix
yields (URLs, sub-packages, commands) and the environment handed to the next step. `execute` runs
with a recording stand-in for the process runner and the download (named FakeRunner below), since
no Windows installer or cmd.exe exists on this machine.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bitsandbytes_ci.host import cli
from bitsandbytes_ci.host.install_toolkit import (
    InstallError,
    execute,
    export,
    github_env_lines,
    parse_set_output,
    path_additions,
    plan_install,
    setvars_changes,
)
from bitsandbytes_ci.core.matrix import load_matrix
from bitsandbytes_ci.core.plan import Selection, plan_jobs


def job(backend: str, version: str, platform: str = "windows-x64"):
    [found] = plan_jobs(load_matrix(), Selection(backends=(backend,), versions=(version,), platforms=(platform,)))
    return found


def test_every_native_runner_job_has_an_install_plan() -> None:
    matrix = load_matrix()
    native = [j for j in plan_jobs(matrix) if j.runner == "native-runner"]
    assert len(native) == 12
    for j in native:
        plan = plan_install(matrix, j)
        assert plan.downloads or plan.commands or plan.redist, j.id


def test_cuda_13_on_windows_uses_nvidias_installer_with_the_split_packages() -> None:
    plan = plan_install(load_matrix(), job("cuda", "13.0.2"))
    assert plan.downloads == [("https://developer.download.nvidia.com/compute/cuda/13.0.2/network_installers/cuda_13.0.2_windows_network.exe",
                               "cuda_13.0.2_windows_network.exe")]  # fmt: skip
    [command] = plan.commands
    assert command[0] == "{download:cuda_13.0.2_windows_network.exe}" and command[1] == "-s" and command[-1] == "-n"
    assert {"nvcc_13.0", "crt_13.0", "nvvm_13.0", "cudart_13.0", "cublas_dev_13.0"} <= set(command)
    assert plan.prefix == "C:\\Program Files\\NVIDIA GPU Computing Toolkit\\CUDA\\v13.0"
    older = plan_install(load_matrix(), job("cuda", "12.8"))
    assert "crt_12.8" not in older.commands[0] and "nvcc_12.8" in older.commands[0]



def test_windows_arm64_cuda_is_a_ga_release_from_the_redistributable_archives() -> None:
    """13.4.0 was a developer preview that NVIDIA's 13.4.1 GA supersedes: the arm64 job installs the GA
    release's archives (its redistrib manifest), never a pre-release installer."""
    arm_job = job("cuda", "13.4", "windows-arm64")
    assert arm_job.version == "13.4.1" and arm_job.id == "cuda134-windows-arm64"
    arm = plan_install(load_matrix(), arm_job)
    assert arm.method == "nvidia-redist" and arm.downloads == [] and arm.commands == []
    assert arm.redist is not None
    assert arm.redist.manifest_url == "https://developer.download.nvidia.com/compute/cuda/redist/redistrib_13.4.1.json"
    assert {"cuda_nvcc", "cuda_crt", "libnvvm", "cuda_cudart", "libcublas", "cuda_cccl"} <= set(arm.redist.components)
    assert arm.prefix == "C:\\Program Files\\NVIDIA GPU Computing Toolkit\\CUDA\\v13.4"
    cuda = load_matrix().family("cuda")
    assert not any("prerelease" in (rule.url or "") for rule in cuda.native_installs), "no developer preview installer"
    assert "13.4.0" not in [t.version for t in cuda.toolkits], "no developer preview toolkit"


def test_rocm_on_windows_uses_the_sdk_wheels() -> None:
    plan = plan_install(load_matrix(), job("rocm", "7.2.1"))
    pip, init = plan.commands
    assert pip[1:4] == ["-m", "pip", "install"]
    assert "https://repo.radeon.com/rocm/windows/rocm-rel-7.2.1/rocm_sdk_devel-7.2.1-py3-none-win_amd64.whl" in pip
    assert init == ["rocm-sdk", "init"] and plan.prefix_command == ["rocm-sdk", "path", "--root"]
    newer = plan_install(load_matrix(), job("rocm", "7.14"))
    assert newer.commands[0][-3:] == ["--index-url", "https://repo.amd.com/rocm/whl-multi-arch/", "rocm[libraries,devel]==7.14.0"]


def test_container_jobs_have_nothing_to_install() -> None:
    with pytest.raises(InstallError, match="cuda130-linux-x86_64 has no toolkit to install"):
        plan_install(load_matrix(), job("cuda", "13.0.2", "linux-x86_64"))
    with pytest.raises(InstallError, match="no native-runner job"):
        cli.main_inner(["install-toolkit", "--platform", "linux-x86_64", "--backend", "cuda"], env={}, stdout=io.StringIO())


class FakeRunner:
    """A recording stand-in for running Windows programs (none can run here): answers `rocm-sdk path`
    and cmd.exe's `set` as those programs would."""

    def __init__(self) -> None:
        self.ran: list[list[str] | str] = []
        self.quiet: list[bool] = []

    def __call__(self, argv, *, quiet: bool = False) -> str:
        self.ran.append(argv if isinstance(argv, str) else list(argv))
        self.quiet.append(quiet)
        if argv[:3] == ["rocm-sdk", "path", "--root"]:
            return "C:\\hostedtoolcache\\Python\\Lib\\site-packages\\_rocm_sdk_devel\n"
        if argv == 'cmd /d /s /c "set"':
            return "PATH=C:\\Windows\nTEMP=C:\\t\n"
        if isinstance(argv, str) and argv.endswith('&& set"'):
            return "PATH=C:\\oneAPI\\compiler\\bin;C:\\Windows\nTEMP=C:\\t\nONEAPI_ROOT=C:\\oneAPI\nSETVARS_COMPLETED=1\n"
        return ""


def test_execute_runs_the_plan_and_reports_what_to_export(tmp_path: Path) -> None:
    runner, fetched = FakeRunner(), []
    plan = plan_install(load_matrix(), job("cuda", "13.2"))
    variables, path = execute(plan, run=runner, download=lambda url, dest: fetched.append((url, dest.name)))
    assert fetched == [(plan.downloads[0][0], plan.downloads[0][1])]
    assert runner.ran[0][0].endswith("cuda_13.2.0_windows_network.exe") and "{download:" not in runner.ran[0][0]
    assert variables == {"CUDA_PATH": "C:\\Program Files\\NVIDIA GPU Computing Toolkit\\CUDA\\v13.2"}
    assert path == ["C:\\Program Files\\NVIDIA GPU Computing Toolkit\\CUDA\\v13.2\\bin"]
    runner = FakeRunner()
    variables, path = execute(plan_install(load_matrix(), job("rocm", "7.14")), run=runner, download=lambda url, dest: None)
    assert variables["ROCM_PATH"] == variables["HIP_PATH"] == "C:\\hostedtoolcache\\Python\\Lib\\site-packages\\_rocm_sdk_devel"
    runner = FakeRunner()
    variables, path = execute(plan_install(load_matrix(), job("xpu", "2026")), run=runner, download=lambda url, dest: None)
    assert variables == {"ONEAPI_ROOT": "C:\\oneAPI", "SETVARS_COMPLETED": "1"} and path == ["C:\\oneAPI\\compiler\\bin"]
    assert runner.ran[-1] == 'cmd /d /s /c "call "C:\\Program Files (x86)\\Intel\\oneAPI\\setvars.bat" >nul && set"'
    assert runner.quiet[-2:] == [True, True], "the environment listings are not echoed into the log"


def test_a_quiet_command_keeps_its_output_out_of_the_log(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The real runner, on a command that prints the environment's token as `set` does: returned to
    the caller, never echoed, not even when the command fails."""
    from bitsandbytes_ci.host.install_toolkit import _run

    monkeypatch.setenv("BNB_TEST_TOKEN", "s3cr3t-sentinel")
    assert _run(["sh", "-c", "echo TOKEN=$BNB_TEST_TOKEN"], quiet=True) == "TOKEN=s3cr3t-sentinel\n"
    with pytest.raises(InstallError) as failed:
        _run(["sh", "-c", "echo TOKEN=$BNB_TEST_TOKEN; exit 3"], quiet=True)
    assert "exited with 3" in str(failed.value) and "s3cr3t-sentinel" not in str(failed.value)
    assert "s3cr3t-sentinel" not in capsys.readouterr().out
    assert "TOKEN=s3cr3t-sentinel" in _run(["sh", "-c", "echo TOKEN=$BNB_TEST_TOKEN"])
    assert "TOKEN=s3cr3t-sentinel" in capsys.readouterr().out, "without quiet the output is echoed"


def test_a_failed_download_is_a_clear_error() -> None:
    def offline(url: str, dest: Path) -> None:
        raise OSError("network is unreachable")

    with pytest.raises(InstallError, match=r"cannot download https://developer\.download\.nvidia\.com/.*cuda_12\.8\.1_windows_network\.exe: network is unreachable"):
        execute(plan_install(load_matrix(), job("cuda", "12.8")), run=FakeRunner(), download=offline)


def test_the_environment_goes_to_the_next_steps(tmp_path: Path) -> None:
    env_file, path_file = tmp_path / "env", tmp_path / "path"
    export({"CUDA_PATH": "C:\\cuda", "NOTE": "a\nb"}, ["C:\\cuda\\bin"], {"GITHUB_ENV": str(env_file), "GITHUB_PATH": str(path_file)})
    assert env_file.read_text() == "CUDA_PATH=C:\\cuda\nNOTE<<BNB_EOF\na\nb\nBNB_EOF\n"
    assert path_file.read_text() == "C:\\cuda\\bin\n"
    printed: list[str] = []
    export({"CUDA_PATH": "C:\\cuda"}, ["C:\\cuda\\bin"], {}, out=printed.append)
    assert printed == ["set CUDA_PATH=C:\\cuda", "set PATH=C:\\cuda\\bin;%PATH%"]


def test_setvars_differences() -> None:
    before = parse_set_output("Path=C:\\a;C:\\b\nX=1\n=C:=C:\\\n")
    after = parse_set_output("Path=C:\\new;C:\\a;C:\\b\nX=1\nY=2\n")
    assert "=C:" not in before
    assert setvars_changes(before, after) == {"Path": "C:\\new;C:\\a;C:\\b", "Y": "2"}
    assert path_additions("C:\\a;C:\\B", "C:\\new;c:\\a;C:\\b;C:\\new") == ["C:\\new"]
    assert github_env_lines({}) == ""


def _redist_archive(folder: Path, component: str, files: dict[str, bytes]) -> tuple[str, str]:
    """A zip laid out as NVIDIA's redistributable archives are (one top folder); returns (relative path, sha256)."""
    import hashlib
    import zipfile

    top = f"{component}-windows-arm64-13.4.99-archive"
    relative = f"{component}/windows-arm64/{top}.zip"
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", b"")
        for name, data in files.items():
            zf.writestr(f"{top}/{name}", data)
    return relative, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def redist_server(tmp_path: Path):
    """NVIDIA's redist layout (redistrib_<version>.json beside per-component folders) served over real
    HTTP on 127.0.0.1 by the standard library's file server."""
    import functools
    import json
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "redist"
    root.mkdir()
    manifest: dict[str, object] = {"release_label": "13.4.1", "release_product": "cuda"}
    for component, files in {"cuda_nvcc": {"bin/nvcc.exe": b"nvcc"}, "cuda_cudart": {"include/cuda_runtime.h": b"// runtime", "lib/x64/cudart.lib": b"lib"}}.items():
        relative, sha = _redist_archive(root, component, files)
        manifest[component] = {"name": component, "version": "13.4.99", "windows-arm64": {"relative_path": relative, "sha256": sha},
                               "windows-x86_64": {"relative_path": "elsewhere.zip", "sha256": "0" * 64}}  # fmt: skip
    (root / "redistrib_13.4.1.json").write_text(json.dumps(manifest))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/redistrib_13.4.1.json"
    finally:
        server.shutdown()
        server.server_close()


def _redist_plan(url: str, prefix: Path, components=("cuda_nvcc", "cuda_cudart"), platform: str = "windows-arm64"):
    from dataclasses import replace

    from bitsandbytes_ci.host.install_toolkit import Redist

    plan = plan_install(load_matrix(), job("cuda", "13.4", "windows-arm64"))
    return replace(plan, prefix=str(prefix), redist=Redist(url, tuple(components), platform))


@pytest.mark.timeout(60)
def test_redistributable_archives_are_checked_and_unpacked_into_the_prefix(tmp_path: Path, redist_server) -> None:
    _, url = redist_server
    prefix = tmp_path / "CUDA" / "v13.4"
    variables, path = execute(_redist_plan(url, prefix), run=FakeRunner(), env={"BNB_NETWORK_TIMEOUT_S": "5", "BNB_NETWORK_RETRIES": "0"})
    assert (prefix / "bin" / "nvcc.exe").read_bytes() == b"nvcc"
    assert (prefix / "include" / "cuda_runtime.h").read_bytes() == b"// runtime" and (prefix / "lib" / "x64" / "cudart.lib").exists()
    assert not list(prefix.glob("*-archive")), "the archives' top folders are stripped"
    assert variables == {"CUDA_PATH": str(prefix)} and path == [f"{prefix}\\bin"]


@pytest.mark.timeout(60)
def test_a_redistributable_archive_with_another_digest_is_refused(tmp_path: Path, redist_server) -> None:
    root, url = redist_server
    archive = next(root.glob("cuda_nvcc/windows-arm64/*.zip"))
    archive.write_bytes(archive.read_bytes() + b"tampered")
    with pytest.raises(InstallError, match=r"cuda_nvcc-windows-arm64-13\.4\.99-archive\.zip has sha256 [0-9a-f]{64}, the manifest .*redistrib_13\.4\.1\.json says"):
        execute(_redist_plan(url, tmp_path / "prefix"), run=FakeRunner(), env={"BNB_NETWORK_RETRIES": "0"})
    assert not (tmp_path / "prefix" / "bin").exists()


@pytest.mark.timeout(60)
def test_a_component_or_platform_the_manifest_lacks_is_named(tmp_path: Path, redist_server) -> None:
    _, url = redist_server
    with pytest.raises(InstallError, match=r"redistrib_13\.4\.1\.json \(CUDA 13\.4\.1\) has no component 'libcublas'; it has cuda_cudart, cuda_nvcc"):
        execute(_redist_plan(url, tmp_path / "p", components=("cuda_nvcc", "libcublas")), run=FakeRunner(), env={"BNB_NETWORK_RETRIES": "0"})
    with pytest.raises(InstallError, match=r"has no cuda_nvcc archive for 'windows-sbsa'; it has one for windows-arm64, windows-x86_64"):
        execute(_redist_plan(url, tmp_path / "p", platform="windows-sbsa"), run=FakeRunner(), env={"BNB_NETWORK_RETRIES": "0"})


def test_an_archive_member_outside_the_prefix_is_refused(tmp_path: Path) -> None:
    import zipfile

    from bitsandbytes_ci.host.install_toolkit import unpack_archive

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("top/../../escape.txt", b"x")
    with pytest.raises(InstallError, match=r"bad\.zip: member 'top/\.\./\.\./escape\.txt' would land outside"):
        unpack_archive(bad, tmp_path / "prefix")
    assert not (tmp_path / "escape.txt").exists()
