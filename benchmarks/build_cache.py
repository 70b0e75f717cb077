"""Benchmark: what a rebuild costs with the host executor's caches.

    python benchmarks/build_cache.py [--keep DIR] [-- <bnb-ci build-all selection options>]

Three runs of `bnb-ci build-all` on a fresh copy of the checkout (default selection: the CPU and the
CUDA 13.0 libraries of linux-x86_64 with the matrix's archs, their wheel and the audit):

1. first build: empty artifact cache, empty ccache, empty zig cache (zig then builds the C/C++
   runtime for the CPU job's target once, minutes, kept in its cache);
2. cold: empty artifact cache and ccache again, the zig runtime cache of run 1 kept (what a machine
   or CI cache that ever built once has); the ratios below are taken against this one;
3. no-op: the same command again, nothing touched;
4. one file: after appending a comment to one csrc/cuda/*.cu file.

Then the cost of trusting no kept build folder blindly: the time to hash every file of each build
job's kept CMake folder (`local.build_folder_hashes`, what a run does before it builds on one),
`verify_build_folders_s`, and its share of the one-file rebuild, `verify_over_one_file`.

Prints a JSON line with the wall times and `noop_over_cold`, `one_file_over_cold`, then a summary.
Targets: no-op <= 2% of cold, one-file change <= 30% of cold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import BNB_CI, copy_checkout, emit, env_with, machine, timed

DEFAULT_SELECTION = ["--backend", "cpu", "--backend", "cuda", "--platform", "linux-x86_64"]
TARGETS = {"noop_over_cold": 0.02, "one_file_over_cold": 0.30}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the work folder here (default: a temporary folder, removed)")
    parser.add_argument("selection", nargs="*", help="bnb-ci selection options (after --)")
    args = parser.parse_args()
    selection = args.selection or DEFAULT_SELECTION
    with tempfile.TemporaryDirectory(prefix="bnb-bench-cache-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        repo = copy_checkout(root / "checkout")
        env = env_with(CCACHE_DIR=str(root / "ccache"), ZIG_GLOBAL_CACHE_DIR=str(root / "zig-cache"))
        def argv(cache: str) -> list[str]:
            return [str(BNB_CI), "build-all", "--out", str(root / "out"), "--cache-dir", str(root / cache), *selection]

        times = {}
        times["first_s"] = timed(argv("cache-first"), cwd=repo, env=env, log=root / "first.log")
        cold_env = {**env, "CCACHE_DIR": str(root / "ccache-cold")}
        times["cold_s"] = timed(argv("cache"), cwd=repo, env=cold_env, log=root / "cold.log")
        env = cold_env
        command = argv("cache")
        times["noop_s"] = timed(command, cwd=repo, env=env, log=root / "noop.log")
        cu = sorted((repo / "csrc" / "cuda").glob("*.cu"))[0]
        cu.write_text(cu.read_text() + "\n// benchmark: one edited file\n")
        times["one_file_s"] = timed(command, cwd=repo, env=env, log=root / "one-file.log")
        noop_log = (root / "noop.log").read_text()
        one_log = (root / "one-file.log").read_text()
        rerun = [line.split("]")[0].lstrip("[") for line in one_log.splitlines() if line.startswith("[") and "] built " in line]
        jobs = [line.split("]")[0].lstrip("[") for line in (root / "cold.log").read_text().splitlines() if "] built " in line or "] passed " in line]
        from bitsandbytes_ci.host.local import BUILD_SUBDIR, build_folder_hashes

        folders = sorted(p for p in (root / "cache" / "jobs").glob(f"*/{BUILD_SUBDIR}") if p.is_dir())
        start = time.perf_counter()
        hashed = sum(len(build_folder_hashes(p)) for p in folders)
        times["verify_build_folders_s"] = time.perf_counter() - start
        folder_bytes = sum(f.stat().st_size for p in folders for f in p.rglob("*") if f.is_file())
    ratios = {"noop_over_cold": times["noop_s"] / times["cold_s"], "one_file_over_cold": times["one_file_s"] / times["cold_s"],
              "verify_over_one_file": times["verify_build_folders_s"] / times["one_file_s"]}  # fmt: skip
    met = {k: ratios[k] <= TARGETS[k] for k in TARGETS}
    verified = {"build_folders": len(folders), "files": hashed, "bytes": folder_bytes}
    result = {**{k: round(v, 2) for k, v in times.items()}, **{k: round(v, 4) for k, v in ratios.items()},
              "targets": TARGETS, "met": met, "selection": selection, "jobs_run_cold": jobs,
              "jobs_rerun_after_edit": rerun, "noop_all_cached": "cached" in noop_log and "] start" not in noop_log,
              "edited": cu.relative_to(repo).as_posix(), "verified": verified, "machine": machine()}  # fmt: skip
    summary = "\n".join([
        f"build_cache ({' '.join(selection)}):",
        f"  first     {times['first_s']:8.1f} s   (every cache empty, the zig runtime of the CPU target included)",
        f"  cold      {times['cold_s']:8.1f} s   (empty artifact cache and ccache; zig runtime cached)",
        f"  no-op     {times['noop_s']:8.1f} s   = {ratios['noop_over_cold']:.2%} of cold (target <= 2%: {'met' if met['noop_over_cold'] else 'NOT met'})",
        f"  one file  {times['one_file_s']:8.1f} s   = {ratios['one_file_over_cold']:.2%} of cold (target <= 30%: "
        f"{'met' if met['one_file_over_cold'] else 'NOT met'}); rebuilt: {', '.join(rerun) or 'nothing'}",
        f"  verify    {times['verify_build_folders_s']:8.2f} s   = {ratios['verify_over_one_file']:.2%} of the one-file rebuild "
        f"(hashing {hashed} files, {folder_bytes / 2**20:.1f} MiB, in {len(folders)} kept build folder(s))",
    ])  # fmt: skip
    emit("build_cache", result, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
