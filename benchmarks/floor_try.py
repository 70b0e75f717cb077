"""Benchmark: what trying a wheel at its CPU floor (under user-mode QEMU) costs, against the plain try.

    python benchmarks/floor_try.py [WHEELS] [--script SCRIPT]

WHEELS: a folder of wheels (default bnb-out/wheels, the output of `bnb-ci build-all`); SCRIPT: the
try-script (default: this tree's `try-script`). One run of the try step with the floors the plan
gives (`plan.try_checks`) tries every wheel this machine can run plain and at its floor in the same
virtualenv; per wheel, the seconds its script took in each mode (tries.json) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from _common import PIPELINE_SRC, REPO, emit, env_with, machine

sys.path.insert(0, str(PIPELINE_SRC))

from bitsandbytes_ci.core.matrix import load_matrix  # noqa: E402
from bitsandbytes_ci.core.plan import try_checks  # noqa: E402
from bnb_build.try_wheels import wheel_platform  # noqa: E402


def default_script() -> Path | None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("bitsandbytes-ci", {})
    return REPO / config["try-script"] if config.get("try-script") else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", nargs="?", default="bnb-out/wheels", type=Path)
    parser.add_argument("--script", type=Path, default=default_script())
    ns = parser.parse_args()
    wheels = sorted(ns.wheels.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"{ns.wheels} holds no wheels: run `bnb-ci build-all --out {ns.wheels.parent}` first")
    with tempfile.TemporaryDirectory(prefix="bnb-floor-bench-") as tmp:
        work = Path(tmp)
        (work / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy(wheel, work / "wheels" / wheel.name)
        checks = try_checks(load_matrix(), sorted({wheel_platform(w.name) for w in wheels}))
        argv = [sys.executable, "-m", "bnb_build", "try-wheels", "--wheels", "wheels", "--report", "tries.md", *checks]
        if ns.script is not None:
            argv += ["--script", str(ns.script.resolve())]
        start = time.monotonic()
        done = subprocess.run(argv, cwd=work, env=env_with(PYTHONPATH=str(PIPELINE_SRC)), capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        if not (work / "tries.json").is_file():
            raise SystemExit(f"the try step wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
        rows = json.loads((work / "tries.json").read_text())["tries"]
    result: dict[str, object] = {"machine": machine(), "wall_s": round(wall, 1), "exit_code": done.returncode, "wheels": []}
    lines = [f"floor_try ({ns.wheels}, script {ns.script or 'import check'}): one try step, {wall:.1f} s in all"]
    for name in dict.fromkeys(r["wheel"] for r in rows):
        modes = {r["mode"]: r for r in rows if r["wheel"] == name}
        plain = modes.get("plain", {})
        floor = next((r for mode, r in modes.items() if mode.startswith("floor ")), {})
        entry = {"wheel": name, "plain_s": plain.get("seconds"), "plain": plain.get("status"), "floor": floor.get("mode"),
                 "floor_s": floor.get("seconds"), "floor_status": floor.get("status"), "floor_how": floor.get("how")}  # fmt: skip
        result["wheels"].append(entry)  # type: ignore[union-attr]
        if plain.get("seconds") is None or floor.get("seconds") is None:
            lines.append(f"  {name}: plain {plain.get('status', '-')}, {floor.get('mode', 'no floor')} {floor.get('status', '-')}: {floor.get('detail', '')}")
            continue
        ratio = floor["seconds"] / plain["seconds"] if plain["seconds"] else float("inf")
        lines.append(f"  {name}: plain {plain['seconds']:.1f} s ({plain['status']}), {floor['mode']} under {floor['how']} "
                     f"{floor['seconds']:.1f} s ({floor['status']}): +{floor['seconds'] - plain['seconds']:.1f} s, x{ratio:.1f}")  # fmt: skip
    emit("floor_try", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
