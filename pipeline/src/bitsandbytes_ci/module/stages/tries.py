"""Stage `try-wheels`: every wheel installed into a clean environment of its platform, the tree's
script run with it (`plan.try_argv`, the command `bnb-ci test-wheels` runs on the host).

Containers, by wheel platform (the wheel image, i.e. the matrix's pinned Python image):
- linux/amd64: the linux-x86_64 wheel in a venv; the win_amd64 wheel under Wine (wine_setup, and the
  matrix's Windows CPython unpacked to /work/wine-python); Windows arm64 and macOS wheels are
  reported as not tried, with the reason;
- linux/arm64 (the engine's emulation where it runs on amd64): the linux-aarch64 wheel in a venv.
Every container gets Debian's qemu-user-static and gdb (TRY_SETUP): the step tries each Linux wheel
again at its CPU floor under `qemu-<arch>-static -cpu <model>` and reads a crash's place with gdb
(`plan.try_checks` gives the floors).
Each runs the try step with expect=ANY; the reports are merged into one tries.md (bnb_build.try_wheels
renders it) and the exit codes into one. A container whose setup fails, or whose step is killed (exit
codes 128-191 raise even with expect=ANY), reports its wheels as failed rows instead of raising.

The engine caches an exec that returned (expect=ANY) whatever its exit code, and a function's `cache=`
policy does not reach its execs: a try that failed by a flake would be answered from the cache in every
later session. So a container that reports a failure runs once more with a variable never used
before (`rerun_env`), and that run's result is the one reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
import dagger

from bnb_build.try_wheels import Try, render_report, try_from_json, wheel_platform

from ...core.matrix import Matrix
from ...core.plan import TRY_SCRIPT_DIR, WINE_PYTHON_DIR, try_argv, try_checks
from ...core.tree import DEFAULT_TREE, TreeFacts
from .common import WORK, base, describe, filtered, rerun_env, with_env, with_setup, with_steps

TRY_PLATFORMS = {"linux-aarch64": "linux/arm64"}
"""Wheel platforms tried in a container of another Dagger platform than linux/amd64."""

WINE_ZIP = "/tmp/wine-python.zip"
TRY_SETUP = ("apt-get update", "apt-get install -y --no-install-recommends qemu-user-static gdb")
"""What the floor tries need in the wheel image (Debian): user-mode QEMU, and gdb to read its cores."""


@dataclass(frozen=True)
class TryRun:
    """What the try containers reported: the merged tries.md, the rows, and the worst exit code."""

    report: str
    tries: list[Try]
    exit_code: int


def groups(wheel_names: Sequence[str]) -> dict[str, list[str]]:
    """Dagger platform -> the wheel files tried in a container of it."""
    found: dict[str, list[str]] = {}
    for name in sorted(wheel_names):
        found.setdefault(TRY_PLATFORMS.get(wheel_platform(name), "linux/amd64"), []).append(name)
    return found


def container(matrix: Matrix, source: dagger.Directory, wheels: dagger.Directory, names: Sequence[str], *, dagger_platform: str,
              script: str | None, fresh: Mapping[str, str] | None = None, tree: TreeFacts = DEFAULT_TREE) -> dagger.Container:  # fmt: skip
    """One try container: the wheel image of `dagger_platform` with `names` from `wheels`."""
    image = matrix.pinned(matrix.wheel.image)[0]
    wine = dagger_platform == "linux/amd64" and any(name.endswith("-win_amd64.whl") for name in names)
    ctr = with_setup(base(image, dagger_platform), TRY_SETUP, image, dagger_platform)
    if wine:
        ctr = with_setup(ctr, matrix.wheel.wine_setup, image, dagger_platform)
        fetch = f"import urllib.request; urllib.request.urlretrieve({matrix.wheel.wine_python!r}, {WINE_ZIP!r})"
        ctr = ctr.with_exec(["python3", "-c", fetch]).with_exec(["unzip", "-q", WINE_ZIP, "-d", f"{WORK}/{WINE_PYTHON_DIR}"])
    ctr = with_steps(ctr).with_directory(f"{WORK}/wheels", filtered(wheels, list(names)))
    if script:
        ctr = ctr.with_directory(f"{WORK}/{TRY_SCRIPT_DIR}", filtered(source, [script]))
    checks = try_checks(matrix, [wheel_platform(name) for name in names], tree)
    return with_env(ctr, fresh or {}).with_exec(try_argv(script=script, wine_python=wine, checks=checks), expect=dagger.ReturnType.ANY)


async def run(matrix: Matrix, source: dagger.Directory, wheels: dagger.Directory, wheel_names: Sequence[str], *, script: str | None,
              fresh: Mapping[str, str] | None = None, tree: TreeFacts = DEFAULT_TREE) -> TryRun:  # fmt: skip
    """Every try container at once; their reports merged."""
    results: dict[str, tuple[list[Try], int]] = {}

    async def attempt(dagger_platform: str, names: list[str], variables: Mapping[str, str] | None) -> tuple[list[Try], int]:
        try:
            ctr = await container(matrix, source, wheels, names, dagger_platform=dagger_platform, script=script, fresh=variables, tree=tree).sync()
            code = await ctr.exit_code()
        except dagger.QueryError as e:  # the setup failed, or the step was killed (exit 128-191 raise even with expect=ANY)
            code = e.exit_code if isinstance(e, dagger.ExecError) else 1
            text = describe(e).splitlines()
            return [Try(name, "-", "-", "failed", f"the try container failed: {text[0]}", text[1:]) for name in names], code or 1
        try:
            rows = json.loads(await ctr.file(f"{WORK}/tries.json").contents())["tries"]
            tries = [try_from_json(r) for r in rows]
        except (dagger.QueryError, ValueError, KeyError):
            tail = (await ctr.stdout()).strip().splitlines()[-20:] + (await ctr.stderr()).strip().splitlines()[-20:]
            tries = [Try(name, "-", "-", "failed", f"the try step exited with {code} before writing its report", tail) for name in names]
        return tries, code

    async def one(dagger_platform: str, names: list[str]) -> None:
        tries, code = await attempt(dagger_platform, names, fresh)
        if code != 0 and not fresh:  # maybe a failure replayed from the engine's cache: run it once more, fresh
            tries, code = await attempt(dagger_platform, names, rerun_env())
        results[dagger_platform] = (tries, code)

    async with anyio.create_task_group() as tg:
        for dagger_platform, names in groups(wheel_names).items():
            tg.start_soon(one, dagger_platform, names)
    tries = sorted((t for rows, _ in results.values() for t in rows), key=lambda t: (t.wheel, t.mode != "plain", t.mode))
    return TryRun(render_report(tries), tries, max((code for _, code in results.values()), default=0))
