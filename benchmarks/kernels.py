"""Benchmark: our CPU kernels against the CPU library of the published bitsandbytes 0.50.2 wheel.

    python benchmarks/kernels.py [--n 16777216] [--repeats 15] [--blocksizes 64,128,...,4096]
                                 [--library LIB] [--upstream-wheel WHEEL | --cache DIR] [--isa auto|avx512|avx2|scalar]

Builds the CPU library of this checkout (or takes --library), downloads bitsandbytes==0.50.2 with
`pip download --no-deps` (no torch) and loads its libbitsandbytes_cpu through ctypes; the C names
come from `nm -D` (cquantize_blockwise_cpu_fp32, cdequantize_blockwise_cpu_fp32,
cdequantize_blockwise_cpu_nf4_fp32, ..., fp16 variants). Both run in this one process on the
same arrays of n float32 values (standard normal), the calls interleaved (ours, upstream, ours,
...), each timed `--repeats` times after a warm-up: the medians count, and the ratio is the median
of each round's upstream / ours. Threads: one (upstream: omp_set_num_threads(1) through its
libgomp; ours: bnb_cpu_set_threads(1)) and all (nproc). Run it on a quiet machine: the summary
shows the load average before and after.
OMP_WAIT_POLICY=PASSIVE (unless set): by default OpenMP's idle threads spin for milliseconds
after each call and take a core from the next call, which is ours when the calls alternate;
upstream's own times are the same with and without it.
Upstream's 4-bit dequantization takes rows: it gets n / 4096 rows of 4096 values (a weight
matrix), the layout its AVX-512 path needs.

Prints, per operation, blocksize and thread setting, both times and upstream / ours (>= 1 means
ours is at least as fast; target >= 1 everywhere); how many of each library's 8-bit codes differ
from bitsandbytes.reference (ours must be exact); 4-bit quantization against the straightforward
numpy implementation bitsandbytes.reference (target >= 5x); and the Python wrapper
(bitsandbytes.functional) against the raw C call on the same arrays (target <= 5% more).
Without the wheel (no network, or no CPU library for this platform) it says so and measures ours.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from _common import REPO, build_cpu_library, emit, machine

sys.path.insert(0, str(REPO))
from bitsandbytes import _native, functional, reference  # noqa: E402

UPSTREAM = "bitsandbytes==0.50.2"
BLOCKSIZES = [64, 128, 256, 512, 1024, 2048, 4096]
UPSTREAM_ROW = 4096  # values per row in upstream's 4-bit dequantization
TARGETS = {"speed_ratio": 1.0, "quantize_4bit_over_numpy": 5.0, "wrapper_overhead": 0.05}
FP4, NF4 = 1, 2

_P, _I, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong


def pointer(array: np.ndarray) -> int:
    return array.ctypes.data


# --------------------------------------------------------------------------------- the libraries


class Ours:
    """The C ABI of csrc/bitsandbytes.h."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        for name in ("quantize_blockwise", "dequantize_blockwise"):
            for suffix in ("fp32", "fp16"):
                getattr(self.lib, f"bnb_{name}_{suffix}").argtypes = [_P, _P, _P, _P, _I, _L]
        for name in ("quantize_4bit", "dequantize_4bit"):
            for suffix in ("fp32", "fp16"):
                getattr(self.lib, f"bnb_{name}_{suffix}").argtypes = [_P, _P, _P, _I, _L, _I]
        self.lib.bnb_cpu_isa.restype = ctypes.c_char_p
        self.lib.bnb_last_error.restype = ctypes.c_char_p
        self.lib.bnb_cpu_set_isa.argtypes = [ctypes.c_char_p]
        self.lib.bnb_cpu_set_threads.argtypes = [_I]

    def isa(self) -> str:
        return self.lib.bnb_cpu_isa().decode()

    def set_isa(self, isa: str) -> None:
        if self.lib.bnb_cpu_set_isa(isa.encode()) != 0:
            raise SystemExit(f"--isa {isa}: {self.lib.bnb_last_error().decode()}")

    def set_threads(self, threads: int) -> None:
        self.lib.bnb_cpu_set_threads(threads)

    def runnable(self) -> List[str]:
        """The kernel sets this CPU runs (the current choice is kept)."""
        current, found = self.isa(), []
        for isa in ("avx512", "avx2", "neon", "scalar"):
            if self.lib.bnb_cpu_set_isa(isa.encode()) == 0:
                found.append(isa)
        self.set_isa(current)
        return found

    def checked(self, status: int) -> None:
        if status != 0:
            raise SystemExit(f"our library failed ({status}): {self.lib.bnb_last_error().decode()}")


class Upstream:
    """The CPU library of the bitsandbytes 0.50.2 wheel (OpenMP inside: threads via omp_set_num_threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        for suffix in ("fp32", "fp16"):
            getattr(self.lib, f"cquantize_blockwise_cpu_{suffix}").argtypes = [_P, _P, _P, _P, _L, _L]
            getattr(self.lib, f"cdequantize_blockwise_cpu_{suffix}").argtypes = [_P, _P, _P, _P, _L, _L]
            for kind in ("nf4", "fp4"):
                getattr(self.lib, f"cdequantize_blockwise_cpu_{kind}_{suffix}").argtypes = [_P, _P, _P, _L, _L, _L]
        gomp = ctypes.util.find_library("gomp") or "libgomp.so.1"
        try:
            self.omp: Optional[ctypes.CDLL] = ctypes.CDLL(gomp)  # the libgomp the library linked: one per process
        except OSError:
            self.omp = None

    def set_threads(self, threads: int) -> None:
        if self.omp is not None:
            self.omp.omp_set_num_threads(threads)


def fetch_upstream(folder: Path, wheel: Optional[Path]) -> Tuple[Optional[Path], str]:
    """(path of upstream's CPU library, how it was found) or (None, why not)."""
    if wheel is not None and not wheel.is_file():
        return None, f"--upstream-wheel {wheel} does not exist"
    if wheel is None:
        folder.mkdir(parents=True, exist_ok=True)
        found = sorted(folder.glob("bitsandbytes-0.50.2-*.whl"))
        if not found:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                   "-d", str(folder), UPSTREAM], capture_output=True, text=True, check=False)  # fmt: skip
            found = sorted(folder.glob("bitsandbytes-0.50.2-*.whl"))
            if done.returncode != 0 or not found:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                return None, f"`pip download --no-deps {UPSTREAM}` failed: {tail[0]}"
        wheel = found[0]
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if Path(n).name.startswith("libbitsandbytes_cpu.")]
        if not names:
            return None, f"{wheel.name} holds no CPU library"
        target = folder / "upstream-lib" / Path(names[0]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(names[0]))
    return target, f"{wheel.name}: {names[0]}"


# ------------------------------------------------------------------------------------- the timing


def timed(call: Callable[[], None]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleaved(calls: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, float]:
    """Median seconds of each call, the calls taking turns; two warm-up rounds first. With both
    "ours" and "upstream", also "ratio": the median over rounds of upstream / ours within a round,
    which a burst of other work on the machine during a few rounds does not move."""
    for _ in range(2):
        for call in calls.values():
            call()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(timed(call))
    result = {name: statistics.median(values) for name, values in times.items()}
    if "ours" in times and "upstream" in times:
        result["ratio"] = statistics.median(u / o for u, o in zip(times["upstream"], times["ours"]))
    return result


class Arrays:
    """Inputs and outputs shared by both libraries (allocated and touched once)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.x = rng.standard_normal(n).astype(np.float32)
        self.x16 = self.x.astype(np.float16)
        self.code = reference.create_dynamic_map()
        self.upstream_code = self.code.copy()  # upstream writes code[0] = -1 (it is -1 already)
        self.codes = np.zeros(n, np.uint8)
        self.packed = np.zeros(n // 2, np.uint8)
        self.out = np.zeros(n, np.float32)
        self.out16 = np.zeros(n, np.float16)
        self.absmax = np.zeros(n // 32, np.float32)


def operations(ours: Ours, up: Optional[Upstream], a: Arrays, blocksize: int) -> Dict[str, Dict[str, Callable[[], None]]]:
    """name -> {"ours": call, "upstream": call}: every CPU operation upstream has."""
    n, rows = a.n, a.n // UPSTREAM_ROW
    c, lib = ours.checked, ours.lib
    ops: Dict[str, Dict[str, Callable[[], None]]] = {
        "quantize_blockwise fp32": {"ours": lambda: c(lib.bnb_quantize_blockwise_fp32(pointer(a.code), pointer(a.x), pointer(a.absmax), pointer(a.codes), blocksize, n))},
        "quantize_blockwise fp16": {"ours": lambda: c(lib.bnb_quantize_blockwise_fp16(pointer(a.code), pointer(a.x16), pointer(a.absmax), pointer(a.codes), blocksize, n))},
        "dequantize_blockwise fp32": {"ours": lambda: c(lib.bnb_dequantize_blockwise_fp32(pointer(a.code), pointer(a.codes), pointer(a.absmax), pointer(a.out), blocksize, n))},
        "dequantize_blockwise fp16": {"ours": lambda: c(lib.bnb_dequantize_blockwise_fp16(pointer(a.code), pointer(a.codes), pointer(a.absmax), pointer(a.out16), blocksize, n))},
    }  # fmt: skip
    for kind, quant_type in (("nf4", NF4), ("fp4", FP4)):
        for suffix, out in (("fp32", a.out), ("fp16", a.out16)):
            function = getattr(lib, f"bnb_dequantize_4bit_{suffix}")
            ops[f"dequantize_4bit {kind} {suffix}"] = {
                "ours": lambda f=function, o=out, q=quant_type: c(f(pointer(a.packed), pointer(a.absmax), pointer(o), blocksize, n, q))
            }
    if up is not None:
        u = up.lib
        ops["quantize_blockwise fp32"]["upstream"] = lambda: u.cquantize_blockwise_cpu_fp32(pointer(a.upstream_code), pointer(a.x), pointer(a.absmax), pointer(a.codes), blocksize, n)
        ops["quantize_blockwise fp16"]["upstream"] = lambda: u.cquantize_blockwise_cpu_fp16(pointer(a.upstream_code), pointer(a.x16), pointer(a.absmax), pointer(a.codes), blocksize, n)
        ops["dequantize_blockwise fp32"]["upstream"] = lambda: u.cdequantize_blockwise_cpu_fp32(pointer(a.code), pointer(a.codes), pointer(a.absmax), pointer(a.out), blocksize, n)
        ops["dequantize_blockwise fp16"]["upstream"] = lambda: u.cdequantize_blockwise_cpu_fp16(pointer(a.code), pointer(a.codes), pointer(a.absmax), pointer(a.out16), blocksize, n)
        for kind in ("nf4", "fp4"):
            for suffix, out in (("fp32", a.out), ("fp16", a.out16)):
                function = getattr(u, f"cdequantize_blockwise_cpu_{kind}_{suffix}")
                ops[f"dequantize_4bit {kind} {suffix}"]["upstream"] = (
                    lambda f=function, o=out: f(pointer(a.packed), pointer(a.absmax), pointer(o), blocksize, rows, UPSTREAM_ROW)
                )  # fmt: skip
    return ops


def prepare_codes(ours: Ours, a: Arrays, blocksize: int, kind: str) -> None:
    """Codes and absmax for the dequantization calls (made by our quantizer, read by both)."""
    if kind == "8bit":
        ours.checked(ours.lib.bnb_quantize_blockwise_fp32(pointer(a.code), pointer(a.x), pointer(a.absmax), pointer(a.codes), blocksize, a.n))
    else:
        quant_type = NF4 if kind == "nf4" else FP4
        ours.checked(ours.lib.bnb_quantize_4bit_fp32(pointer(a.x), pointer(a.absmax), pointer(a.packed), blocksize, a.n, quant_type))


def speed(ours: Ours, up: Optional[Upstream], a: Arrays, blocksizes: List[int], repeats: int) -> List[Dict[str, Any]]:
    rows = []
    for threads, label in ((1, "1 thread"), (0, f"{os.cpu_count()} threads")):
        ours.set_threads(threads)
        if up is not None:
            up.set_threads(threads or os.cpu_count() or 1)
        for blocksize in blocksizes:
            for name, calls in operations(ours, up, a, blocksize).items():
                kind = "8bit" if "blockwise" in name else name.split()[1]
                if name.startswith("dequantize"):
                    prepare_codes(ours, a, blocksize, kind)
                t = interleaved(calls, repeats)
                row = {"operation": name, "blocksize": blocksize, "threads": label, "ours_ms": round(t["ours"] * 1e3, 3)}
                if "upstream" in t:
                    row["upstream_ms"] = round(t["upstream"] * 1e3, 3)
                    row["ratio"] = round(t["ratio"], 2)
                rows.append(row)
                print(f"  {label:10} {name:28} {blocksize:5}: ours {row['ours_ms']:8.2f} ms"
                      + (f", upstream {row['upstream_ms']:8.2f} ms, ratio {row['ratio']:5.2f}" if "ratio" in row else ""),
                      file=sys.stderr, flush=True)  # fmt: skip
    ours.set_threads(0)
    return rows


def without_avx512(ours: Ours, up: Upstream, a: Arrays, repeats: int) -> List[Dict[str, Any]]:
    """4-bit dequantization as on a CPU without AVX-512: our AVX2 kernels against upstream's other
    path (its AVX-512 loop needs rows of a multiple of 16 values; rows of 8 take the portable loop,
    which treats the data as one flat array like ours)."""
    rows = []
    previous = ours.isa()
    ours.set_isa("avx2")
    for threads, label in ((1, "1 thread"), (0, f"{os.cpu_count()} threads")):
        ours.set_threads(threads)
        up.set_threads(threads or os.cpu_count() or 1)
        for blocksize in (64, 4096):
            for kind, quant_type in (("nf4", NF4), ("fp4", FP4)):
                prepare_codes(ours, a, blocksize, kind)
                for suffix, out in (("fp32", a.out), ("fp16", a.out16)):
                    ours_f = getattr(ours.lib, f"bnb_dequantize_4bit_{suffix}")
                    up_f = getattr(up.lib, f"cdequantize_blockwise_cpu_{kind}_{suffix}")
                    t = interleaved({
                        "ours": lambda f=ours_f, o=out, q=quant_type, b=blocksize: ours.checked(f(pointer(a.packed), pointer(a.absmax), pointer(o), b, a.n, q)),
                        "upstream": lambda f=up_f, o=out, b=blocksize: f(pointer(a.packed), pointer(a.absmax), pointer(o), b, a.n // 8, 8),
                    }, repeats)  # fmt: skip
                    rows.append({"operation": f"dequantize_4bit {kind} {suffix}", "blocksize": blocksize, "threads": label,
                                 "ours_avx2_ms": round(t["ours"] * 1e3, 3), "upstream_portable_ms": round(t["upstream"] * 1e3, 3),
                                 "ratio": round(t["ratio"], 2)})  # fmt: skip
    ours.set_isa(previous)
    ours.set_threads(0)
    return rows


# ------------------------------------------------------------------------------------- exactness


def exactness(ours: Ours, up: Optional[Upstream], blocksizes: List[int], sample: int) -> List[Dict[str, Any]]:
    """Share of 8-bit codes that are not bitsandbytes.reference's (the nearest code), per library."""
    a = Arrays(sample, seed=1)
    a.x[::7] = 0.0  # zeros inside non-zero blocks
    results = []
    for blocksize in blocksizes:
        expected, _ = reference.quantize_blockwise(a.x, a.code, blocksize)
        ours.checked(ours.lib.bnb_quantize_blockwise_fp32(pointer(a.code), pointer(a.x), pointer(a.absmax), pointer(a.codes), blocksize, a.n))
        row: Dict[str, Any] = {"blocksize": blocksize, "ours_wrong": int((a.codes != expected).sum())}
        if up is not None:
            up.lib.cquantize_blockwise_cpu_fp32(pointer(a.upstream_code), pointer(a.x), pointer(a.absmax), pointer(a.codes), blocksize, a.n)
            row["upstream_wrong"] = int((a.codes != expected).sum())
            zeros = a.x == 0
            row["upstream_zero_codes"] = sorted({int(q) for q in a.codes[zeros]})
        row["of"] = sample
        results.append(row)
    return results


# ------------------------------------------------------------------- 4-bit quantize against numpy


def quantize_4bit_against_numpy(ours: Ours, a: Arrays, repeats: int) -> List[Dict[str, Any]]:
    rows = []
    for kind, quant_type in (("nf4", NF4), ("fp4", FP4)):
        for blocksize in (64, 4096):
            def native(q=quant_type, b=blocksize) -> None:
                ours.checked(ours.lib.bnb_quantize_4bit_fp32(pointer(a.x), pointer(a.absmax), pointer(a.packed), b, a.n, q))

            t_numpy = statistics.median(timed(lambda k=kind, b=blocksize: reference.quantize_4bit(a.x, b, k)) for _ in range(repeats))
            t_ours = interleaved({"ours": native}, max(repeats, 5))["ours"]
            rows.append({"quant_type": kind, "blocksize": blocksize, "numpy_ms": round(t_numpy * 1e3, 1),
                         "ours_ms": round(t_ours * 1e3, 2), "speedup": round(t_numpy / t_ours, 1)})  # fmt: skip
    return rows


# -------------------------------------------------------------------------- the Python wrapper


def wrapper_overhead(ours: Ours, a: Arrays, repeats: int) -> List[Dict[str, Any]]:
    """bitsandbytes.functional against the raw C call: on given arrays (out=), and allocating its
    results (against the C call with numpy.empty outputs); blocksize 64, the most absmax values."""
    library = _native.NativeLibrary(ours.path)
    _native._choice = _native._loader.LibraryChoice(ours.path, "cpu", "benchmark")  # the library just built
    _native._loaded = library
    b, n, lib, c = 64, a.n, ours.lib, ours.checked
    absmax = np.zeros(n // b, np.float32)  # of the 8-bit codes
    absmax4 = np.zeros(n // b, np.float32)  # of the 4-bit codes
    c(lib.bnb_quantize_blockwise_fp32(pointer(a.code), pointer(a.x), pointer(absmax), pointer(a.codes), b, n))
    c(lib.bnb_quantize_4bit_fp32(pointer(a.x), pointer(absmax4), pointer(a.packed), b, n, NF4))

    def raw_q8(codes: np.ndarray, scales: np.ndarray) -> None:
        c(lib.bnb_quantize_blockwise_fp32(pointer(a.code), pointer(a.x), pointer(scales), pointer(codes), b, n))

    def raw_d8(out: np.ndarray) -> None:
        c(lib.bnb_dequantize_blockwise_fp32(pointer(a.code), pointer(a.codes), pointer(absmax), pointer(out), b, n))

    def raw_q4(packed: np.ndarray, scales: np.ndarray) -> None:
        c(lib.bnb_quantize_4bit_fp32(pointer(a.x), pointer(scales), pointer(packed), b, n, NF4))

    def raw_d4(out: np.ndarray) -> None:
        c(lib.bnb_dequantize_4bit_fp32(pointer(a.packed), pointer(absmax4), pointer(out), b, n, NF4))

    scales = np.zeros(n // b, np.float32)
    cases = {
        "quantize_blockwise": {
            "raw": lambda: raw_q8(a.codes, scales),
            "wrapper": lambda: functional.quantize_blockwise(a.x, b, out=a.codes, absmax=scales),
            "raw, new outputs": lambda: raw_q8(np.empty(n, np.uint8), np.empty(n // b, np.float32)),
            "wrapper, new outputs": lambda: functional.quantize_blockwise(a.x, b),
        },
        "dequantize_blockwise": {
            "raw": lambda: raw_d8(a.out),
            "wrapper": lambda: functional.dequantize_blockwise(a.codes, absmax, b, out=a.out),
            "raw, new outputs": lambda: raw_d8(np.empty(n, np.float32)),
            "wrapper, new outputs": lambda: functional.dequantize_blockwise(a.codes, absmax, b),
        },
        "quantize_4bit nf4": {
            "raw": lambda: raw_q4(a.packed, scales),
            "wrapper": lambda: functional.quantize_4bit(a.x, b, out=a.packed, absmax=scales),
            "raw, new outputs": lambda: raw_q4(np.empty(n // 2, np.uint8), np.empty(n // b, np.float32)),
            "wrapper, new outputs": lambda: functional.quantize_4bit(a.x, b),
        },
        "dequantize_4bit nf4": {
            "raw": lambda: raw_d4(a.out),
            "wrapper": lambda: functional.dequantize_4bit(a.packed, absmax4, (n,), b, out=a.out),
            "raw, new outputs": lambda: raw_d4(np.empty(n, np.float32)),
            "wrapper, new outputs": lambda: functional.dequantize_4bit(a.packed, absmax4, (n,), b),
        },
    }
    rows = []
    for name, calls in cases.items():
        t = interleaved(calls, repeats)
        rows.append({"operation": name, "raw_ms": round(t["raw"] * 1e3, 3), "wrapper_ms": round(t["wrapper"] * 1e3, 3),
                     "overhead": round(t["wrapper"] / t["raw"] - 1, 4),
                     "raw_new_outputs_ms": round(t["raw, new outputs"] * 1e3, 3),
                     "wrapper_new_outputs_ms": round(t["wrapper, new outputs"] * 1e3, 3),
                     "overhead_new_outputs": round(t["wrapper, new outputs"] / t["raw, new outputs"] - 1, 4)})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------ main


def summary_lines(result: Dict[str, Any]) -> List[str]:
    lines = [f"kernels: ours ({result['ours_isa']}) against {result['upstream']}, n = {result['n']}, "
             f"median of {result['repeats']}, {result['machine']['cpu']}, {result['machine']['nproc']} cores, "
             f"load average {result.get('load_average_before_after')}"]  # fmt: skip
    speed_rows = result["speed"]
    if any("ratio" in r for r in speed_rows):
        lines.append("  upstream / ours (>= 1: ours at least as fast), per blocksize:")
        names = sorted({r["operation"] for r in speed_rows}, key=[r["operation"] for r in speed_rows].index)
        threads = sorted({r["threads"] for r in speed_rows}, key=[r["threads"] for r in speed_rows].index)
        blocksizes = sorted({r["blocksize"] for r in speed_rows})
        lines.append(f"    {'operation':28} {'threads':10} " + " ".join(f"{b:>6}" for b in blocksizes))
        for label in threads:
            for name in names:
                ratios = {r["blocksize"]: r["ratio"] for r in speed_rows if r["operation"] == name and r["threads"] == label}
                lines.append(f"    {name:28} {label:10} " + " ".join(f"{ratios[b]:6.2f}" for b in blocksizes))
        worst = min(speed_rows, key=lambda r: r["ratio"])
        lines.append(f"  slowest against upstream: {worst['operation']} blocksize {worst['blocksize']} {worst['threads']}: "
                     f"{worst['ratio']:.2f} ({'met' if worst['ratio'] >= TARGETS['speed_ratio'] else 'NOT met'})")  # fmt: skip
    else:
        lines.append("  ours alone:")
        for r in speed_rows:
            lines.append(f"    {r['operation']:28} {r['threads']:10} {r['blocksize']:5}: {r['ours_ms']:8.2f} ms")
    if result.get("without_avx512"):
        lines.append("  4-bit dequantization as on a CPU without AVX-512 (ours: AVX2; upstream: its portable loop), upstream / ours:")
        for r in result["without_avx512"]:
            lines.append(f"    {r['operation']:28} {r['threads']:10} {r['blocksize']:5}: {r['ratio']:6.2f} "
                         f"({r['upstream_portable_ms']} vs {r['ours_avx2_ms']} ms)")  # fmt: skip
    for r in result["exactness"]:
        text = f"  8-bit codes not the nearest (blocksize {r['blocksize']:4}): ours {r['ours_wrong']} of {r['of']}"
        if "upstream_wrong" in r:
            text += f", upstream {r['upstream_wrong']} ({r['upstream_wrong'] / r['of']:.1%}; its codes for 0.0: {r['upstream_zero_codes']})"
        lines.append(text)
    for r in result["quantize_4bit_vs_numpy"]:
        lines.append(f"  quantize_4bit {r['quant_type']} blocksize {r['blocksize']}: numpy {r['numpy_ms']} ms, ours {r['ours_ms']} ms = "
                     f"{r['speedup']}x (target >= 5x: {'met' if r['speedup'] >= TARGETS['quantize_4bit_over_numpy'] else 'NOT met'})")  # fmt: skip
    for r in result["wrapper"]:
        lines.append(f"  Python wrapper {r['operation']:22}: {r['overhead']:+.1%} on given arrays ({r['wrapper_ms']} vs {r['raw_ms']} ms), "
                     f"{r['overhead_new_outputs']:+.1%} allocating ({r['wrapper_new_outputs_ms']} vs {r['raw_new_outputs_ms']} ms)")  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 24, help="values per call (a multiple of 4096; default 16M)")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per library and case (default 15)")
    parser.add_argument("--blocksizes", default=",".join(map(str, BLOCKSIZES)), help="comma-separated (default 64 ... 4096)")
    parser.add_argument("--library", type=Path, help="our CPU library (default: build this checkout)")
    parser.add_argument("--upstream-wheel", type=Path, help="a bitsandbytes 0.50.2 wheel (default: pip download it)")
    parser.add_argument("--cache", type=Path, default=REPO / ".bnb-cache" / "upstream",
                        help="folder for the downloaded wheel (default .bnb-cache/upstream)")
    parser.add_argument("--isa", default="auto", help="our CPU kernels: auto, avx512, avx2, neon or scalar")
    parser.add_argument("--sample", type=int, default=1 << 20, help="values checked against the reference (default 1M)")
    args = parser.parse_args()
    blocksizes = [int(b) for b in args.blocksizes.split(",")]
    if args.n % UPSTREAM_ROW or args.n < UPSTREAM_ROW:
        raise SystemExit(f"--n {args.n}: use a multiple of {UPSTREAM_ROW} (upstream's 4-bit dequantization takes rows of it)")
    with tempfile.TemporaryDirectory(prefix="bnb-bench-kernels-") as tmp:
        library = args.library or build_cpu_library(Path(tmp))
        ours = Ours(library)
        ours.set_isa(args.isa)
        upstream_path, found = fetch_upstream(args.cache, args.upstream_wheel)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by libgomp when it loads (below)
        up = Upstream(upstream_path) if upstream_path is not None else None
        if up is None:
            print(f"kernels: upstream's library is not available ({found}); measuring ours only", file=sys.stderr)
        elif up.omp is None:
            print("kernels: libgomp not found: upstream runs with its default thread count", file=sys.stderr)
        a = Arrays(args.n)
        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        result: Dict[str, Any] = {
            "n": args.n, "repeats": args.repeats, "ours_isa": ours.isa(), "upstream": found if up else f"upstream (not measured: {found})",
            "machine": machine(), "targets": TARGETS, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        }  # fmt: skip
        result["exactness"] = exactness(ours, up, blocksizes, args.sample)
        result["speed"] = speed(ours, up, a, blocksizes, args.repeats)
        if up is not None and "avx2" in ours.runnable():
            result["without_avx512"] = without_avx512(ours, up, a, args.repeats)
        result["quantize_4bit_vs_numpy"] = quantize_4bit_against_numpy(ours, a, 3)
        result["wrapper"] = wrapper_overhead(ours, a, args.repeats)
        if load_before is not None:  # other work on the machine shows here: measure on a quiet one
            result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    ratios = [r["ratio"] for r in result["speed"] if "ratio" in r]
    result["met"] = {
        "speed_ratio": bool(ratios) and min(ratios) >= TARGETS["speed_ratio"],
        "exact": all(r["ours_wrong"] == 0 for r in result["exactness"]),
        "quantize_4bit_over_numpy": all(r["speedup"] >= TARGETS["quantize_4bit_over_numpy"] for r in result["quantize_4bit_vs_numpy"]),
        "wrapper_overhead": all(max(r["overhead"], r["overhead_new_outputs"]) <= TARGETS["wrapper_overhead"] for r in result["wrapper"]),
    }
    emit("kernels", result, "\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
