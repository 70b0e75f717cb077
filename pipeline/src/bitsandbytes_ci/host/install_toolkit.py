"""`bnb-ci install-toolkit`: install the toolkit of native-runner jobs (Windows CUDA, ROCm, oneAPI).

The matrix says how (`native_installs` of each family, matrix.toml); this module turns one rule into
an `InstallPlan` (pure: downloads, commands, the variables and PATH entries to export) and runs it on
the runner. Afterwards the variables go to $GITHUB_ENV and the PATH entries to $GITHUB_PATH when those
are set (GitHub Actions), so the next step (`bnb-ci build-<family>`) finds the toolkit; elsewhere they
are printed as `set NAME=value` lines.

    bnb-ci install-toolkit --backend cuda --version 13.0.2 --platform windows-x64

`bnb-ci install-cuda-wheels [--with-cublas] [--prefix DIR]` assembles a CUDA 13 toolkit on any Linux
machine from NVIDIA's PyPI wheels (nvcc, and with --with-cublas cuBLAS); tools/install-cuda-wheels.sh
of a checkout runs it.

Methods
- nvidia-installer: download `url`, run it with `-s <packages> -n` (silent, only those sub-packages, no
  reboot); CUDA_PATH is the rule's `prefix`, PATH gains `<prefix>\\bin`;
- nvidia-redist: download NVIDIA's redistributable manifest `url` (redistrib_<version>.json), then
  the archive of each component of `packages` for `archive_platform`, check its sha256 against the
  manifest and unpack it (without its top folder) into `prefix`; CUDA_PATH and PATH as above;
- pip: `python -m pip install <args> <packages>`, then the `after` commands; `prefix` is a command
  whose output is the toolkit's root (ROCm: `rocm-sdk path --root`): ROCM_PATH and HIP_PATH, PATH
  gains `<root>\\bin`;
- intel-installer: download `url`, run it with `args`; then the variables `setvars` sets (the
  difference of `set` before and after `call setvars`) are exported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.parse
import zipfile
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bnb_build import net
from bnb_build.errors import StepError

from ..core.errors import PipelineError
from ..core.matrix import Matrix, NativeInstall
from ..core.plan import Job

if TYPE_CHECKING:
    from .invocation import Invocation

DEFAULT_ENV = {
    "nvidia-installer": {"CUDA_PATH": "{prefix}"},
    "nvidia-redist": {"CUDA_PATH": "{prefix}"},
    "pip": {"ROCM_PATH": "{prefix}", "HIP_PATH": "{prefix}"},
    "intel-installer": {},
}
"""The variables each method exports besides the rule's own `env`."""


class InstallError(PipelineError):
    """A toolkit could not be installed (no rule for the job, a failed download or installer)."""

    exit_code = 2


@dataclass(frozen=True)
class InstallPlan:
    """What installing one toolkit takes. `prefix_command` (pip) prints the root once installed."""

    job_id: str
    method: str
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (url, file name in the scratch folder)
    commands: list[list[str]] = field(default_factory=list)  # {download:<name>} is replaced by the file's path
    prefix: str | None = None
    prefix_command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)  # values may hold {prefix}
    path: list[str] = field(default_factory=list)  # entries may hold {prefix}
    setvars: str | None = None
    redist: Redist | None = None


@dataclass(frozen=True)
class Redist:
    """NVIDIA redistributable archives: the manifest to read, the components and their platform key."""

    manifest_url: str
    components: tuple[str, ...]
    platform: str


def _fill(text: str, version: str) -> str:
    major_minor = ".".join(version.split(".")[:2])
    return text.replace("{version}", version).replace("{major_minor}", major_minor)


def plan_install(matrix: Matrix, job: Job) -> InstallPlan:
    """The install plan of a native-runner job, from its family's `native_installs` rule. Pure."""
    family = matrix.family(job.family)
    rule: NativeInstall | None = family.native_install_for(job.platform, job.version)
    if job.runner != "native-runner" or rule is None or job.version is None:
        msg = f"{job.id} has no toolkit to install: only native-runner jobs with a `native_installs` rule in matrix.toml have one"
        raise InstallError(msg)
    version = job.version
    env = {**DEFAULT_ENV[rule.method], **rule.env}
    if rule.method == "nvidia-installer":
        assert rule.url is not None and rule.prefix is not None
        url = _fill(rule.url, version)
        name = url.rsplit("/", 1)[-1]
        packages = [_fill(p, version) for p in rule.packages]
        return InstallPlan(job.id, rule.method, downloads=[(url, name)], commands=[[f"{{download:{name}}}", "-s", *packages, "-n"]],
                           prefix=_fill(rule.prefix, version), env=env, path=["{prefix}\\bin"])  # fmt: skip
    if rule.method == "nvidia-redist":
        assert rule.url is not None and rule.prefix is not None and rule.archive_platform is not None
        redist = Redist(_fill(rule.url, version), tuple(_fill(p, version) for p in rule.packages), rule.archive_platform)
        return InstallPlan(job.id, rule.method, prefix=_fill(rule.prefix, version), env=env, path=["{prefix}\\bin"], redist=redist)
    if rule.method == "pip":
        packages = [_fill(p, version) for p in rule.packages]
        commands = [[sys.executable, "-m", "pip", "install", *rule.args, *packages], *(_words(_fill(c, version)) for c in rule.after)]
        prefix_command = _words(rule.prefix) if rule.prefix else None
        return InstallPlan(job.id, rule.method, commands=commands, prefix_command=prefix_command, env=env, path=["{prefix}\\bin"])
    assert rule.url is not None
    url = _fill(rule.url, version)
    name = url.rsplit("/", 1)[-1]
    return InstallPlan(job.id, rule.method, downloads=[(url, name)], commands=[[f"{{download:{name}}}", *rule.args]], env=env, setvars=rule.setvars)


def _words(command: str) -> list[str]:
    return command.split()


def resolved(plan: InstallPlan, prefix: str | None) -> tuple[dict[str, str], list[str]]:
    """The variables and PATH entries to export once the toolkit is in `prefix`. Pure."""
    if prefix is None:
        return {k: v for k, v in plan.env.items() if "{prefix}" not in v}, [p for p in plan.path if "{prefix}" not in p]
    return {k: v.replace("{prefix}", prefix) for k, v in plan.env.items()}, [p.replace("{prefix}", prefix) for p in plan.path]


def setvars_changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str]:
    """The variables a setvars script set or changed (Windows names compare without case). Pure."""
    upper = {k.upper(): v for k, v in before.items()}
    return {k: v for k, v in sorted(after.items()) if upper.get(k.upper()) != v}


def parse_set_output(text: str) -> dict[str, str]:
    """`set` output of cmd.exe (NAME=value per line) as a mapping. Pure."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name and not name.startswith("="):
            found[name] = value
    return found


def github_env_lines(env: Mapping[str, str]) -> str:
    """$GITHUB_ENV text for `env`; a value with a newline uses the delimiter form. Pure."""
    lines = []
    for name, value in env.items():
        if "\n" in value:
            lines += [f"{name}<<BNB_EOF", value, "BNB_EOF"]
        else:
            lines.append(f"{name}={value}")
    return "\n".join(lines) + ("\n" if lines else "")


class Runner(Protocol):
    def __call__(self, argv: Sequence[str] | str, *, quiet: bool = False) -> str: ...


def windows_command(command: str) -> str:
    """A cmd.exe command line that runs `command` as written: /s keeps the quotes inside it (a list
    argv would be quoted for the C runtime, whose \\" cmd.exe does not read). Pure."""
    return f'cmd /d /s /c "{command}"'


def _run(argv: Sequence[str] | str, *, quiet: bool = False) -> str:
    """Run a command (a str: a Windows command line, passed as is); echo the command, and its output
    unless `quiet` (an environment listing holds the runner's secrets)."""
    shown = argv if isinstance(argv, str) else " ".join(argv)
    print(f"+ {shown}", flush=True)
    proc = subprocess.run(argv if isinstance(argv, str) else list(argv), capture_output=True, text=True, check=False)
    if not quiet:
        sys.stdout.write(proc.stdout[-4000:])
    if proc.returncode != 0:
        detail = "" if quiet else f": {(proc.stderr or proc.stdout).strip()[-2000:]}"
        msg = f"`{shown}` exited with {proc.returncode}{detail}"
        raise InstallError(msg)
    return proc.stdout


def execute(plan: InstallPlan, *, run: Runner = _run, download: Callable[[str, Path], None] | None = None,
            env: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:  # fmt: skip
    """Download, install, and return (variables, PATH entries) to export. Downloads have the timeout
    and retries of `env` (BNB_NETWORK_TIMEOUT_S, BNB_NETWORK_RETRIES; bnb_build.net)."""
    try:
        limits = net.limits_from_env(env or {})
    except StepError as e:
        raise InstallError(str(e)) from None
    fetch = download or (lambda url, dest: net.download(url, dest, limits, what="toolkit download"))
    with tempfile.TemporaryDirectory(prefix="bnb-toolkit-") as tmp:
        files = {}
        for url, name in plan.downloads:
            dest = Path(tmp) / name
            print(f"downloading {url}", flush=True)
            try:
                fetch(url, dest)
            except (OSError, StepError) as e:
                msg = f"cannot download {url}: {e}"
                raise InstallError(msg) from None
            files[name] = str(dest)
        if plan.redist is not None:
            assert plan.prefix is not None
            install_redist(plan.redist, Path(plan.prefix), Path(tmp), fetch)
        for argv in plan.commands:
            run([files.get(a[len("{download:") : -1], a) if a.startswith("{download:") else a for a in argv])
    prefix = plan.prefix
    if plan.prefix_command:
        prefix = run(plan.prefix_command).strip().splitlines()[-1].strip()
    variables, path = resolved(plan, prefix)
    if plan.setvars:
        before = parse_set_output(run(windows_command("set"), quiet=True))
        after = parse_set_output(run(windows_command(f'call "{plan.setvars}" >nul && set'), quiet=True))
        changed = setvars_changes(before, after)
        path += path_additions(_get(before, "PATH"), _get(changed, "PATH"))
        variables.update({k: v for k, v in changed.items() if k.upper() != "PATH"})
    return variables, path


def redist_archives(manifest: Mapping[str, object], redist: Redist) -> list[tuple[str, str, str]]:
    """(URL, file name, sha256) of each component's archive for the platform, from a redistrib
    manifest; a component or platform the manifest lacks is an error naming what it has. Pure."""
    base = redist.manifest_url.rsplit("/", 1)[0] + "/"
    label = manifest.get("release_label", "?")
    found = []
    for component in redist.components:
        entry = manifest.get(component)
        if not isinstance(entry, Mapping):
            have = sorted(k for k, v in manifest.items() if isinstance(v, Mapping))
            msg = f"{redist.manifest_url} (CUDA {label}) has no component {component!r}; it has {', '.join(have)}"
            raise InstallError(msg)
        archive = entry.get(redist.platform)
        if not isinstance(archive, Mapping) or not archive.get("relative_path") or not archive.get("sha256"):
            have = sorted(k for k, v in entry.items() if isinstance(v, Mapping))
            msg = f"{redist.manifest_url} (CUDA {label}) has no {component} archive for {redist.platform!r}; it has one for {', '.join(have) or 'no platform'}"
            raise InstallError(msg)
        path = str(archive["relative_path"])
        found.append((urllib.parse.urljoin(base, path), path.rsplit("/", 1)[-1], str(archive["sha256"]).lower()))
    return found


def unpack_archive(archive: Path, prefix: Path) -> list[str]:
    """Unpack a redistributable zip into `prefix` without its top folder (`<component>-<platform>-<version>-archive/`);
    returns the paths written. A member that would land outside `prefix` is refused."""
    written = []
    root = prefix.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = [p for p in info.filename.replace("\\", "/").split("/") if p]
            if len(parts) < 2 or info.is_dir():
                continue
            target = root.joinpath(*parts[1:]).resolve()
            if root not in target.parents:
                msg = f"{archive.name}: member {info.filename!r} would land outside {prefix}; the archive is not NVIDIA's"
                raise InstallError(msg)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append("/".join(parts[1:]))
    return written


def install_redist(redist: Redist, prefix: Path, scratch: Path, fetch: Callable[[str, Path], None]) -> None:
    """Read the manifest, download each archive (sha256 checked), unpack it into `prefix`."""
    manifest_path = scratch / "redistrib.json"
    print(f"downloading {redist.manifest_url}", flush=True)
    try:
        fetch(redist.manifest_url, manifest_path)
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, StepError) as e:
        msg = f"cannot download {redist.manifest_url}: {e}"
        raise InstallError(msg) from None
    except ValueError as e:
        msg = f"{redist.manifest_url} is not a JSON manifest: {e}"
        raise InstallError(msg) from None
    if not isinstance(manifest, dict):
        msg = f"{redist.manifest_url} is not a redistrib manifest (a JSON object of components)"
        raise InstallError(msg)
    for url, name, sha256 in redist_archives(manifest, redist):
        dest = scratch / name
        print(f"downloading {url}", flush=True)
        try:
            fetch(url, dest)
        except (OSError, StepError) as e:
            msg = f"cannot download {url}: {e}"
            raise InstallError(msg) from None
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        if digest != sha256:
            msg = f"{url} has sha256 {digest}, the manifest {redist.manifest_url} says {sha256}: a damaged or replaced download"
            raise InstallError(msg)
        count = len(unpack_archive(dest, prefix))
        print(f"unpacked {name} into {prefix} ({count} files)", flush=True)
        dest.unlink()


def _get(env: Mapping[str, str], name: str) -> str:
    return next((v for k, v in env.items() if k.upper() == name), "")


def path_additions(before: str, after: str) -> list[str]:
    """The PATH entries `after` has and `before` lacks, in order (cmd.exe's `;`). Pure."""
    old = {e.lower() for e in before.split(";") if e}
    return [e for e in dict.fromkeys(after.split(";")) if e and e.lower() not in old]


def run_install_toolkit(invocation: Invocation) -> int:
    """The verb: install the toolkit of every selected native-runner job, then export its environment."""
    jobs = [job for job in invocation.jobs if job.runner == "native-runner"]
    if not jobs:
        msg = "the selection has no native-runner job (container and cross jobs bring their toolkits in their images); `bnb-ci plan` lists the runners"
        raise InstallError(msg)
    for job in jobs:
        plan = plan_install(invocation.matrix, job)
        print(f"{job.id}: installing with {plan.method}", flush=True)
        variables, path = execute(plan, env=invocation.env)
        export(variables, path, invocation.env, out=lambda line: print(line, file=invocation.stdout))
    return 0


def export(variables: Mapping[str, str], path: Sequence[str], env: Mapping[str, str], out: Callable[[str], None] = print) -> None:
    """Hand the results to the next steps: $GITHUB_ENV / $GITHUB_PATH, else printed `set` lines."""
    if env.get("GITHUB_ENV"):
        with open(env["GITHUB_ENV"], "a", encoding="utf-8") as f:
            f.write(github_env_lines(variables))
    else:
        for name, value in variables.items():
            out(f"set {name}={value}")
    if env.get("GITHUB_PATH"):
        with open(env["GITHUB_PATH"], "a", encoding="utf-8") as f:
            f.write("".join(f"{p}\n" for p in path))
    else:
        for entry in path:
            out(f"set PATH={entry};%PATH%")


# ---- CUDA 13 from NVIDIA's PyPI wheels (`bnb-ci install-cuda-wheels`) ----------------------------

CUDA_WHEELS = ("nvidia-cuda-nvcc==13.0.88", "nvidia-cuda-crt==13.0.88", "nvidia-nvvm==13.0.88", "nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cccl==13.0.85")
"""A CUDA 13.0 compiler from PyPI (only CUDA 13 ships nvcc there; 11.x and 12.x wheels carry ptxas alone)."""
CUBLAS_WHEELS = ("nvidia-cublas==13.0.2.14",)
"""cuBLAS and cuBLASLt (about 420 MB), which a tree whose CUDA library links CUDA::cublas needs."""
CUDA_WHEELS_ROOT = Path("nvidia") / "cu13"
"""The CUDA root inside a prefix (bin/nvcc, include/, lib/): what BNB_CUDA_ROOTS names."""
CUDA_WHEELS_STAMP = ".bnb-wheels"
"""Inside a prefix: the wheels it holds (space-separated), written last."""
CUDA_WHEELS_DEFAULT_PREFIX = ".cuda-wheels"
"""The prefix when none is named (below the current folder)."""


def cuda_wheels(*, with_cublas: bool) -> tuple[str, ...]:
    return CUDA_WHEELS + (CUBLAS_WHEELS if with_cublas else ())


def install_cuda_wheels(prefix: Path, *, with_cublas: bool, python: str = sys.executable, run: Runner = _run) -> Path:
    """CUDA 13.0 from NVIDIA's PyPI wheels into `prefix`; returns its CUDA root (`prefix`/nvidia/cu13).

    A prefix that already holds exactly these wheels is kept; any other is replaced, all at once: the
    wheels go into `prefix`.partial-<pid> first (one pip call: the wheels share the folder nvidia/,
    which a later --target call would skip), which becomes `prefix` when complete."""
    prefix = Path(prefix).absolute()
    wheels = cuda_wheels(with_cublas=with_cublas)
    try:
        held = (prefix / CUDA_WHEELS_STAMP).read_text(encoding="utf-8").strip()
    except OSError:
        held = None
    if held == " ".join(wheels):
        print(f"{prefix} already holds {' '.join(wheels)}", flush=True)
        return prefix / CUDA_WHEELS_ROOT
    if prefix.exists() and not prefix.is_dir():
        msg = f"install-cuda-wheels: {prefix} is a file; name a folder (new, or one this command filled before)"
        raise InstallError(msg)
    staging = prefix.with_name(f"{prefix.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target", str(staging), *wheels])
        root = staging / CUDA_WHEELS_ROOT
        lib = root / "lib"
        # The wheels have only versioned sonames; CMake's FindCUDAToolkit wants the unversioned names.
        for name in ("libcudart", "libcublas", "libcublasLt"):
            if (lib / f"{name}.so.13").exists():
                (lib / f"{name}.so").unlink(missing_ok=True)
                (lib / f"{name}.so").symlink_to(f"{name}.so.13")
        # nvcc.profile links from lib64 (-lcudadevrt, -lcudart_static).
        if not (root / "lib64").exists():
            (root / "lib64").symlink_to("lib")
        run([str(root / "bin" / "nvcc"), "--version"])
        (staging / CUDA_WHEELS_STAMP).write_text(" ".join(wheels) + "\n", encoding="utf-8")
        shutil.rmtree(prefix, ignore_errors=True)
        os.replace(staging, prefix)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return prefix / CUDA_WHEELS_ROOT


def run_install_cuda_wheels(invocation: Invocation) -> int:
    """The verb: CUDA 13 from PyPI wheels into --prefix; prints the root to hand to BNB_CUDA_ROOTS."""
    root = install_cuda_wheels(Path(invocation.options["prefix"]), with_cublas=bool(invocation.options.get("with_cublas")))
    print(f"export BNB_CUDA_ROOTS={root}   # or: export PATH={root / 'bin'}:$PATH", file=invocation.stdout)
    return 0
