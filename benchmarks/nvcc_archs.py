"""Benchmark: wall time of the CUDA job for 1, 3 and 7 archs, with and without `nvcc --threads`.

    python benchmarks/nvcc_archs.py [--nvcc-root /usr/local/cuda]

Runs the native step (`python3 -m bnb_build native`, CUDA, no ccache) on the CUDA source subset:
first once per arch of the 7-arch list alone (the per-arch times), then for 1, 3 and 7 archs with
`-DBNB_NVCC_THREADS=1` (nvcc's own default: one arch after the other) and `-DBNB_NVCC_THREADS=0`
(one thread per CPU). Two times per build: the nvcc compile of csrc/cuda/backend.cu (from Ninja's
log) and the whole job (configure, all compiles, link). Compares the compile's wall time with the
sum of the per-arch compile times divided by the number of cores; target: <= 1.2x. Also checks that
--threads does not change the library's bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import PIPELINE_SRC, REPO, emit, env_with, machine, timed

sys.path.insert(0, str(PIPELINE_SRC))
from bnb_build import inputs  # noqa: E402

ARCHS7 = ["75", "80", "86", "89", "90", "100", "120"]
LISTS = {1: ["90"], 3: ["75", "90", "120"], 7: ARCHS7}
SOURCES = ["CMakeLists.txt", "VERSION", "cmake/**", "csrc/bitsandbytes.h", "csrc/common/**", "csrc/cuda/**"]
TARGET = 1.2


def cu_compile_s(build: Path) -> float:
    """Seconds Ninja spent on backend.cu's object (.ninja_log: start, end in ms, mtime, output, hash)."""
    for line in (build / ".ninja_log").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[3].endswith("backend.cu.o"):
            return (int(parts[1]) - int(parts[0])) / 1000
    raise SystemExit(f"no backend.cu.o in {build / '.ninja_log'}")


def run(root: Path, name: str, archs: list[str], threads: int, env: dict[str, str]) -> dict[str, object]:
    work = root / name
    inputs.copy_subset(REPO, SOURCES, work / "src")
    library = "libbitsandbytes_cuda130.so"
    argv = [sys.executable, "-m", "bnb_build", "native", "--job-id", name, "--backend", "cuda", "--platform", "linux-x86_64",
            "--library", library, "--archs", ";".join(archs), "--source", "src", "--out", "out", "--",
            "-DCMAKE_BUILD_TYPE=Release", f"-DBNB_NVCC_THREADS={threads}"]  # fmt: skip
    job_s = timed(argv, cwd=work, env=env, log=work / "log.txt")
    out = work / "out" / "linux" / "x86_64" / library
    result = {"archs": archs, "threads": threads, "job_s": round(job_s, 2), "compile_s": round(cu_compile_s(work / "build"), 2),
              "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}  # fmt: skip
    shutil.rmtree(work / "build", ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvcc-root", default="/usr/local/cuda", help="CUDA 13 root holding bin/nvcc")
    args = parser.parse_args()
    root_dir = Path(args.nvcc_root)
    env = env_with(BNB_NO_CCACHE="1", PYTHONPATH=str(PIPELINE_SRC), CUDACXX=str(root_dir / "bin" / "nvcc"), CUDAToolkit_ROOT=str(root_dir))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bnb-bench-nvcc-") as tmp:
        root = Path(tmp)
        per_arch = {a: run(root, f"one-{a}", [a], 1, env) for a in ARCHS7}
        runs = [run(root, f"n{n}-t{t}", archs, t, env) for n, archs in LISTS.items() for t in (1, 0)]
    rows = []
    for r in runs:
        ideal = sum(float(per_arch[a]["compile_s"]) for a in r["archs"]) / cores  # type: ignore[union-attr]
        r["ideal_s"] = round(ideal, 2)
        r["over_ideal"] = round(float(r["compile_s"]) / ideal, 3) if ideal else None
        r["met"] = r["over_ideal"] is not None and r["over_ideal"] <= TARGET
        rows.append(r)
    same_bytes = {n: len({r["sha256"] for r in rows if len(r["archs"]) == n}) == 1 for n in LISTS}  # type: ignore[arg-type]
    result = {"cores": cores, "per_arch_compile_s": {a: per_arch[a]["compile_s"] for a in ARCHS7},
              "per_arch_job_s": {a: per_arch[a]["job_s"] for a in ARCHS7}, "runs": rows, "target": TARGET,
              "threads_do_not_change_bytes": same_bytes, "machine": machine()}  # fmt: skip
    lines = [f"nvcc_archs ({cores} cores; compile = nvcc on backend.cu, job = configure + compile + link):"]
    lines.append("  per-arch compile s: " + ", ".join(f"sm_{a} {per_arch[a]['compile_s']}" for a in ARCHS7))
    for r in rows:
        lines.append(
            f"  {len(r['archs'])} arch(s) {'--threads 0' if r['threads'] == 0 else 'no --threads'}: compile {r['compile_s']:6.1f} s, "
            f"job {r['job_s']:6.1f} s; sum(per-arch)/cores {r['ideal_s']:6.1f} s -> {r['over_ideal']}x "
            f"(target <= {TARGET}x: {'met' if r['met'] else 'NOT met'})"
        )
    lines.append(f"  --threads leaves the bytes unchanged: {same_bytes}")
    emit("nvcc_archs", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
