"""The CPU kernels of each instruction set, forced one after the other, against the scalar kernels.

The library picks AVX-512, AVX2 or scalar kernels on x86_64 (NEON or scalar on aarch64) at run
time; `bnb_cpu_set_isa` / BNB_CPU_ISA force one. Which of them this machine can run is read from
the CPU flags in /proc/cpuinfo, and the library's own detection must agree with it. Every runnable
set must give the scalar kernels' outputs bit for bit (and so the reference's). The NEON kernels
run under qemu in tests/cross.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from bitsandbytes import _native, functional
from bitsandbytes.errors import NativeError, NativeValueError

from ._support import INPUTS, KINDS, assert_same_bits, code_maps, native_outputs, reference_outputs

pytestmark = pytest.mark.usefixtures("native")

# What each instruction set needs, as /proc/cpuinfo names the flags.
ISA_FLAGS = {
    "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "f16c"},
    "avx2": {"avx2", "f16c"},
    "neon": {"asimd"},
}
X86 = platform.machine().lower() in ("x86_64", "amd64")
ARM64 = platform.machine().lower() in ("aarch64", "arm64")


def cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            return set(line.split(":", 1)[1].split())
    return set()


def runnable_isas() -> List[str]:
    """Instruction sets the library should run here, best first."""
    flags = cpu_flags()
    candidates = ["avx512", "avx2"] if X86 else ["neon"] if ARM64 else []
    return [isa for isa in candidates if ISA_FLAGS[isa] <= flags] + ["scalar"]


@pytest.fixture
def force(native: _native.NativeLibrary):
    """force(isa): run the kernels of isa until the test ends (then the automatic choice again)."""
    yield native.set_cpu_isa
    native.set_cpu_isa(None)
    native.set_cpu_threads(0)


def test_runnable_isas_are_reported() -> None:
    print(f"CPU kernels runnable here: {', '.join(runnable_isas())}; automatic choice: {_native.cpu_isa()}")


def test_automatic_choice_is_the_best_the_cpu_flags_allow(native: _native.NativeLibrary) -> None:
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo to compare the library's detection with")
    assert native.cpu_isa() == runnable_isas()[0]
    assert _native.cpu_isa() == runnable_isas()[0]


@pytest.mark.parametrize("isa", ["avx512", "avx2", "neon"])
def test_detection_agrees_with_the_cpu_flags(force, native: _native.NativeLibrary, isa: str) -> None:
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo to compare the library's detection with")
    if isa in runnable_isas():
        force(isa)
        assert native.cpu_isa() == isa
        return
    with pytest.raises(NativeError) as caught:
        force(isa)
    assert caught.value.status_name == "BNB_ERROR_NOT_AVAILABLE"
    wrong_architecture = (isa == "neon") == X86
    expected = f"this library has no {isa} kernels" if wrong_architecture else f"this CPU cannot run the {isa} kernels"
    assert f"instruction set '{isa}': {expected}" in caught.value.detail
    assert "use one of auto, " in caught.value.detail and "scalar" in caught.value.detail
    assert native.cpu_isa() == runnable_isas()[0], "a refused choice leaves the kernels as they were"


def test_unknown_isa_is_refused_naming_the_allowed_ones(force) -> None:
    with pytest.raises(NativeValueError, match="instruction set 'sse9' is not a CPU instruction set: use one of auto, scalar, avx2, avx512, neon"):
        force("sse9")


def inputs_for(kind: str) -> Dict[str, np.ndarray]:  # noqa: ARG001 - the same inputs for every kind
    """Every adversarial input, in sizes that end in a partial block and partial vectors."""
    return {f"{name}-{n}": INPUTS[name](n) for name in sorted(INPUTS) for n in (1, 17, 31, 33, 65, 1000, 4096 + 77)}


@pytest.mark.parametrize("isa", [isa for isa in runnable_isas() if isa != "scalar"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_vector_kernels_equal_the_scalar_kernels_bit_for_bit(force, isa: str, kind: str, dtype: type) -> None:
    blocksizes = (64, 256, 4096) if kind == "8bit" else (32, 64, 4096)
    inputs = inputs_for(kind)
    compared = 0
    for name, x in inputs.items():
        if dtype == np.float16:
            with np.errstate(over="ignore"):
                x = x.astype(np.float16)
            x[~np.isfinite(x)] = np.float16(65504)
        for blocksize in blocksizes:
            force("scalar")
            scalar = native_outputs(x, kind, blocksize)
            force(isa)
            vector = native_outputs(x, kind, blocksize)
            expected = reference_outputs(x, kind, blocksize)
            for what, a, b, r in zip(("codes", "absmax", "float32 values", "float16 values"), vector, scalar, expected):
                try:
                    assert_same_bits(a, b)
                    assert_same_bits(b, r)  # and the scalar kernels give the reference's outputs
                except AssertionError as error:
                    raise AssertionError(f"{isa} vs scalar vs reference, {name}, blocksize {blocksize}, {what}: {error}") from None
            compared += 1
    assert compared == len(inputs) * len(blocksizes)


@pytest.mark.parametrize("isa", runnable_isas())
def test_every_kernel_set_with_any_code_map(force, isa: str) -> None:
    force(isa)
    for name, code in code_maps().items():
        x = np.concatenate([INPUTS["normal"](900), INPUTS["on-thresholds"](300), np.resize(code, 500) / np.float32(max(1.0, float(np.abs(code).max())))])
        x[::64] = 1
        for blocksize in (64, 4096):
            for a, b in zip(native_outputs(x, "8bit", blocksize, code), reference_outputs(x, "8bit", blocksize, code)):
                assert_same_bits(a, b)


@pytest.mark.parametrize("isa", runnable_isas())
def test_results_do_not_depend_on_the_thread_count(force, native: _native.NativeLibrary, isa: str) -> None:
    force(isa)
    x = INPUTS["wide-range"](300_007)  # enough elements for several threads
    expected = {kind: native_outputs(x, kind, 64) for kind in KINDS}
    for threads in (1, 2, 3, 8):
        native.set_cpu_threads(threads)
        assert native.cpu_threads() == threads
        for kind in KINDS:
            for a, b in zip(native_outputs(x, kind, 64), expected[kind]):
                assert_same_bits(a, b)


def test_thread_setting(force, native: _native.NativeLibrary) -> None:
    native.set_cpu_threads(0)
    assert native.cpu_threads() >= 1  # one per CPU the process may use
    with pytest.raises(NativeValueError, match=r"invalid threads -2: must be >= 0 \(0: one per CPU the process may use\)"):
        native.set_cpu_threads(-2)


def test_contiguous_float32_input_reaches_the_library_without_a_copy(native: _native.NativeLibrary, monkeypatch) -> None:
    seen: List[object] = []
    status = native.status

    def recording(name: str, *args: object) -> int:
        seen.extend(args)
        return status(name, *args)

    monkeypatch.setattr(native, "status", recording)
    x = INPUTS["normal"](5000)
    codes, absmax = functional.quantize_blockwise(x, 256)
    assert any(a is x for a in seen), "quantize_blockwise passed a copy of A"
    seen.clear()
    packed, absmax4 = functional.quantize_4bit(x, 64)
    assert any(a is x for a in seen), "quantize_4bit passed a copy of A"
    half = x.astype(np.float16)
    seen.clear()
    functional.quantize_4bit(half, 64)
    assert any(isinstance(a, np.ndarray) and a.base is half for a in seen), "float16 input is passed as a view"
    # Results can go into given arrays: the very arrays come back, filled.
    out, scales = np.empty_like(codes), np.empty_like(absmax)
    assert functional.quantize_blockwise(x, 256, out=out, absmax=scales)[0] is out
    assert np.array_equal(out, codes) and np.array_equal(scales, absmax)
    values = np.empty(x.shape, np.float16)
    assert functional.dequantize_4bit(packed, absmax4, x.shape, 64, out=values) is values
    assert np.array_equal(values, functional.dequantize_4bit(packed, absmax4, x.shape, 64, out_dtype=np.float16))


ENVIRONMENT_PROBE = """
import json, sys
import numpy as np
from bitsandbytes import _native
from bitsandbytes.errors import NativeError
library = _native.NativeLibrary(sys.argv[1])
result = {"isa": library.cpu_isa()}
try:
    library.call("bnb_quantize_4bit_fp32", np.ones(64, np.float32), np.empty(1, np.float32), np.empty(32, np.uint8), 64, 64, 2)
except NativeError as error:
    result["error"] = [error.status_name, error.detail]
library.set_cpu_isa("scalar")
result["after_set"] = library.cpu_isa()
print(json.dumps(result))
"""


def probe(cpu_library: Path, repo_root: Path, value: str) -> dict:
    done = subprocess.run([sys.executable, "-c", ENVIRONMENT_PROBE, str(cpu_library)], capture_output=True, text=True,
                          env={"BNB_CPU_ISA": value, "PYTHONPATH": str(repo_root)}, check=False, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("isa", runnable_isas())
def test_environment_variable_forces_the_kernels(cpu_library: Path, repo_root: Path, isa: str) -> None:
    assert probe(cpu_library, repo_root, isa) == {"isa": isa, "after_set": "scalar"}


def test_environment_variable_auto_and_empty_mean_the_automatic_choice(cpu_library: Path, repo_root: Path) -> None:
    for value in ("auto", ""):
        assert probe(cpu_library, repo_root, value)["isa"] == runnable_isas()[0]


def test_bad_environment_variable_makes_every_call_fail_saying_why(cpu_library: Path, repo_root: Path) -> None:
    result = probe(cpu_library, repo_root, "avx9")
    assert result["isa"] == ""
    assert result["error"] == ["BNB_ERROR_INVALID_ARGUMENT",
                               "BNB_CPU_ISA='avx9' is not a CPU instruction set: use one of auto, scalar, avx2, avx512, neon"]
    assert result["after_set"] == "scalar", "bnb_cpu_set_isa chooses again"
    other = "neon" if X86 else "avx2"
    result = probe(cpu_library, repo_root, other)
    assert result["error"][0] == "BNB_ERROR_NOT_AVAILABLE"
    assert result["error"][1].startswith(f"BNB_CPU_ISA='{other}': this library has no {other} kernels")


def test_calls_from_several_threads_at_once(native: _native.NativeLibrary) -> None:
    """The helper threads serve one call at a time; a concurrent call runs on its own thread."""
    from concurrent.futures import ThreadPoolExecutor

    x = INPUTS["normal"](400_000)
    expected = native_outputs(x, "nf4", 64)
    with ThreadPoolExecutor(4) as pool:
        for outputs in pool.map(lambda _: native_outputs(x, "nf4", 64), range(8)):
            for a, b in zip(outputs, expected):
                assert_same_bits(a, b)


FORK_PROBE = """
import os, sys
import numpy as np
from bitsandbytes import _native
library = _native.NativeLibrary(sys.argv[1])
x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
def quantize():
    absmax, packed = np.empty(x.size // 64, np.float32), np.empty(x.size // 2, np.uint8)
    library.call("bnb_quantize_4bit_fp32", x, absmax, packed, 64, x.size, 2)
    return packed
library.set_cpu_threads(3)
before = quantize()  # starts the helper threads
pid = os.fork()
if pid == 0:  # the child has none of them: its calls must not wait for them
    os._exit(0 if np.array_equal(quantize(), before) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), np.array_equal(quantize(), before))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork() on this platform")
def test_a_forked_child_runs_threaded_calls(cpu_library: Path, repo_root: Path) -> None:
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", FORK_PROBE, str(cpu_library)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(repo_root)}, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True"]


@pytest.mark.parametrize("isa", runnable_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_outputs_at_every_alignment(force, isa: str, dtype: type) -> None:
    """Dequantized values go to aligned stores whatever the output's address: every offset in a
    64-byte line, and addresses that are not even a multiple of the element size."""
    force(isa)
    x = INPUTS["normal"](3 * 1024 + 77)
    q8, a8 = functional.quantize_blockwise(x, 64)
    q4, a4 = functional.quantize_4bit(x, 32)
    expected8 = functional.dequantize_blockwise(q8, a8, 64, out_dtype=dtype)
    expected4 = functional.dequantize_4bit(q4, a4, x.shape, 32, out_dtype=dtype)
    size = np.dtype(dtype).itemsize
    for offset in range(64 + 1):  # bytes
        buffer = np.zeros(x.size * size + 128, np.uint8)
        start = (-buffer.ctypes.data) % 64 + offset
        for dequantize, expected in ((lambda out: functional.dequantize_blockwise(q8, a8, 64, out=out), expected8),
                                     (lambda out: functional.dequantize_4bit(q4, a4, x.shape, 32, out=out), expected4)):  # fmt: skip
            buffer[:] = 0xAB
            out = buffer[start:start + x.size * size].view(dtype)
            dequantize(out)
            assert_same_bits(out, expected)
            assert (buffer[:start] == 0xAB).all() and (buffer[start + x.size * size:] == 0xAB).all(), f"wrote outside at offset {offset}"
