"""Try environments kept between runs: one virtualenv per platform and dependency set.

A wheel's try needs its run-time dependencies (upstream's: torch and, from PyPI, about 20 CUDA wheels,
about 3 GB). Installing them into a new virtualenv for every try is slow, so the try step keeps, below a
folder it is given (``--env-cache DIR``; the host executor's ``<cache>/try-envs``), one environment per

- platform: the interpreter creating it (implementation, version, ``sysconfig.get_platform()``, its
  real path), and
- dependency set: the wheel's run-time requirements (its ``Requires-Dist`` entries that no extra
  conditions; pip evaluates their markers) and the pip arguments saying where they come from
  (``--index-url``, ``--find-links`` ...),

in ``<DIR>/<key>/``, where ``key`` is the sha256 of those facts. The environment is made once: a
virtualenv, ``pip install <requirements>``, then the stamp ``bnb-try-env.json`` (written last: an
environment without it is incomplete and made again) with the facts and the distributions pip
resolved (name -> version). Before each reuse it is verified: the stamp holds the same facts, the
installed distributions are still exactly the resolved ones (the wheels tried in it aside), and
``pip check`` passes; otherwise it is made again. The wheel under try is installed fresh into it each
time (``pip install --no-deps --force-reinstall``), then ``pip check`` must pass with it. A try holds
``<DIR>/<key>.lock`` while it uses the environment, so two runs never share one at the same time.

The host executor reads the stamp (``environment_state``) to key a try by its wheel *and* its
environment, so an unchanged wheel in an unchanged environment that passed is not tried again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

CACHE_ENV = "BNB_TRY_ENV_CACHE"
"""Set by the try step (from ``--env-cache DIR``) for its own functions: where environments are kept."""
STAMP = "bnb-try-env.json"
SCHEMA = 1
KEY_LENGTH = 24
"""Hex digits of the key naming an environment's folder."""

Runner = Callable[[Sequence[object]], Tuple[int, List[str]]]
"""Runs a command; (exit code, output lines)."""

_EXTRA_MARKER = re.compile(r"""\bextra\s*==""")


class TryEnvError(Exception):
    """An environment could not be made or used; the message says which command failed."""

    def __init__(self, message: str, output: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.output = list(output)


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def run_time_requirements(wheel: Path) -> List[str]:
    """The wheel's Requires-Dist entries that no extra conditions, as written (markers kept for pip)."""
    with zipfile.ZipFile(wheel) as z:
        [metadata] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        text = z.read(metadata).decode("utf-8")
    requirements = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    return sorted(r for r in requirements if not (";" in r and _EXTRA_MARKER.search(r.split(";", 1)[1])))


def wheel_distribution(wheel: Path) -> str:
    """The normalized distribution name of a wheel file."""
    return normalize(wheel.name.split("-", 1)[0])


def index_arguments(index_url: Optional[str]) -> List[str]:
    """pip's arguments for the index a tree's run-time dependencies come from (``try-index-url``)."""
    return ["--index-url", index_url] if index_url else []


def interpreter() -> Dict[str, str]:
    """The platform of the environments this interpreter makes."""
    return {
        "implementation": sys.implementation.name,
        "version": ".".join(map(str, sys.version_info[:3])),
        "platform": sysconfig.get_platform(),
        "executable": os.path.realpath(sys.executable),
    }


def facts(requirements: Sequence[str], pip_args: Sequence[str]) -> Dict[str, object]:
    """What an environment is made from (its stamp holds them; its key is their digest)."""
    return {"schema": SCHEMA, "interpreter": interpreter(), "requirements": sorted(requirements), "pip_args": list(pip_args)}


def key_of(env_facts: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(env_facts, sort_keys=True).encode("utf-8")).hexdigest()[:KEY_LENGTH]


def env_dir(root: Path, requirements: Sequence[str], pip_args: Sequence[str]) -> Path:
    return Path(root) / key_of(facts(requirements, pip_args))


def python_of(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def read_stamp(env: Path) -> Optional[Dict[str, object]]:
    try:
        stamp = json.loads((env / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def environment_state(root: Path, wheel: Path, pip_args: Sequence[str]) -> Optional[Dict[str, object]]:
    """What the try of ``wheel`` would reuse: the facts and resolved distributions of its environment
    below ``root``, or None when there is none yet (for the host executor's key of a try)."""
    requirements = run_time_requirements(wheel)
    stamp = read_stamp(env_dir(root, requirements, pip_args))
    if stamp is None or stamp.get("facts") != facts(requirements, pip_args):
        return None
    return {"facts": stamp["facts"], "resolved": stamp.get("resolved")}


def installed(python: Path, run: Runner) -> Dict[str, str]:
    """normalized name -> version of every distribution in the environment of ``python``."""
    code, out = run([python, "-m", "pip", "list", "--disable-pip-version-check", "--format=json"])
    if code != 0:
        raise TryEnvError(f"pip list exited with {code}", out)
    text = next((line for line in out if line.lstrip().startswith("[")), "[]")
    return {normalize(d["name"]): d["version"] for d in json.loads(text)}


def _check(python: Path, run: Runner) -> Tuple[int, List[str]]:
    return run([python, "-m", "pip", "check", "--disable-pip-version-check"])


def verified(env: Path, env_facts: Mapping[str, object], run: Runner) -> Optional[str]:
    """None when the environment at ``env`` is complete, of these facts, unchanged and consistent;
    else why not."""
    stamp = read_stamp(env)
    if stamp is None:
        return "no stamp (new or incomplete)"
    if stamp.get("facts") != dict(env_facts):
        return "made from other facts"
    python = python_of(env)
    if not python.exists():
        return f"{python} is missing"
    tried = set(stamp.get("tried") or [])
    try:
        now = {k: v for k, v in installed(python, run).items() if k not in tried}
    except TryEnvError as e:
        return str(e)
    if now != stamp.get("resolved"):
        return "its distributions changed since it was made"
    code, out = _check(python, run)
    if code != 0:
        return "pip check failed: " + " ".join(out[-3:])
    return None


def _write_stamp(env: Path, stamp: Mapping[str, object]) -> None:
    tmp = env / (STAMP + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, env / STAMP)


_HELD: List[object] = []
"""The open lock file of the environment this process uses (one at a time)."""


def hold(env: Path) -> None:
    """Take ``<env>.lock`` for the rest of this process (until the next environment is held): another
    try of the same environment waits, so none reinstalls a wheel under a running one (POSIX only)."""
    while _HELD:
        _HELD.pop().close()  # type: ignore[attr-defined]
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    env.parent.mkdir(parents=True, exist_ok=True)
    handle = open(env.parent / (env.name + ".lock"), "a")  # noqa: SIM115 (held until the process ends)
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    _HELD.append(handle)


def prepare(root: Path, requirements: Sequence[str], pip_args: Sequence[str], run: Runner) -> Tuple[Path, str]:
    """The environment for ``requirements`` from ``pip_args`` below ``root``, verified and reused, or
    made; (its python, "reused" or "made (<why>)"). This process holds the environment's lock from
    here on (``hold``)."""
    env_facts = facts(requirements, pip_args)
    env = Path(root) / key_of(env_facts)
    hold(env)
    why = verified(env, env_facts, run)
    if why is None:
        return python_of(env), "reused"
    shutil.rmtree(env, ignore_errors=True)
    env.parent.mkdir(parents=True, exist_ok=True)
    code, out = run([sys.executable, "-m", "venv", env])
    if code != 0:
        raise TryEnvError("creating the virtualenv failed", out)
    python = python_of(env)
    if requirements:
        code, out = run([python, "-m", "pip", "install", "--disable-pip-version-check", *pip_args, *requirements])
        if code != 0:
            raise TryEnvError(f"pip install of the run-time dependencies exited with {code}", out)
    _write_stamp(env, {"facts": env_facts, "resolved": installed(python, run), "tried": []})
    return python, f"made ({why})"


def install_wheel(python: Path, wheel: Path, pip_args: Sequence[str], run: Runner) -> None:
    """The wheel, fresh and alone, into the environment of ``python``; then ``pip check``."""
    env = python.parent.parent
    stamp = read_stamp(env)
    if stamp is not None:  # recorded first: a try that stops half-way leaves an environment that still verifies
        tried = sorted(set(stamp.get("tried") or []) | {wheel_distribution(wheel)})
        _write_stamp(env, {**stamp, "tried": tried})
    code, out = run([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--force-reinstall", *pip_args, wheel.resolve()])
    if code != 0:
        raise TryEnvError(f"pip install --no-deps of the wheel exited with {code}", out)
    code, out = _check(python, run)
    if code != 0:
        raise TryEnvError("pip check failed: the environment does not satisfy the wheel's requirements", out)


def default_runner(env: Mapping[str, str], cwd: Path, timeout: float) -> Runner:
    def run(argv: Sequence[object]) -> Tuple[int, List[str]]:
        try:
            done = subprocess.run([str(a) for a in argv], cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return 124, [f"timed out after {timeout} s"]
        return done.returncode, done.stdout.decode("utf-8", errors="replace").splitlines()

    return run
