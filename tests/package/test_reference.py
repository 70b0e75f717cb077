"""bitsandbytes.reference against the text of docs/quantization.md, and its round-trip error bounds."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from bitsandbytes import reference

BLOCKSIZES = [64, 128, 256, 512, 1024, 2048, 4096]
RNG = np.random.default_rng(20240601)


def random_values(n: int, dtype: type = np.float32) -> np.ndarray:
    """Normal values with a wide spread of scales, so blocks differ in absmax."""
    scales = 10.0 ** RNG.uniform(-3, 3, size=n)
    return (RNG.standard_normal(n) * scales).astype(dtype)


def per_element_absmax(absmax: np.ndarray, n: int, blocksize: int) -> np.ndarray:
    return np.repeat(absmax.astype(np.float64), blocksize)[:n]


# --------------------------------------------------------------------------- code books


def test_dynamic_map_follows_the_construction_in_the_spec() -> None:
    code = reference.create_dynamic_map()
    # Rebuilt independently with exact fractions: midpoints of 2**i + 1 evenly spaced
    # boundaries in [0.1, 1] are 1/10 + 9/10 * (2j + 1) / 2**(i + 1).
    exact = [Fraction(0), Fraction(1)]
    for i in range(7):
        for j in range(2**i):
            m = (Fraction(1, 10) + Fraction(9, 10) * Fraction(2 * j + 1, 2 ** (i + 1))) * Fraction(10) ** (i - 6)
            exact += [m, -m]
    expected = np.array(sorted(float(v) for v in exact), dtype=np.float32)
    assert code.dtype == np.float32 and code.shape == (256,)
    np.testing.assert_array_max_ulp(code, expected, maxulp=1)
    assert np.all(np.diff(code) > 0), "the map must be strictly increasing"
    assert code[-1] == 1.0 and 0.0 in code


def test_fp4_magnitudes_are_the_float32_nearest_to_the_fractions() -> None:
    fractions = [Fraction(0), Fraction(1, 192), Fraction(2, 3), Fraction(1), Fraction(1, 3), Fraction(1, 2),
                 Fraction(1, 6), Fraction(1, 4)]
    for value, fraction in zip(reference.FP4_MAGNITUDES, fractions):
        below, above = np.nextafter(value, np.float32(-1)), np.nextafter(value, np.float32(2))
        error = abs(Fraction(float(value)) - fraction)
        assert error <= abs(Fraction(float(below)) - fraction) and error <= abs(Fraction(float(above)) - fraction)


def test_nf4_code_book_is_ascending_from_minus_one_to_one_with_zero_at_7() -> None:
    assert reference.NF4[0] == -1.0 and reference.NF4[7] == 0.0 and reference.NF4[15] == 1.0
    assert np.all(np.diff(reference.NF4) > 0)


# --------------------------------------------------------------------------- nearest-code rule


@pytest.mark.parametrize("code", [reference.create_dynamic_map(), reference.NF4], ids=["dynamic", "nf4"])
def test_nearest_counts_thresholds_strictly_below(code: np.ndarray) -> None:
    t = [np.float32((np.float32(a) + np.float32(b)) * np.float32(0.5)) for a, b in zip(code[:-1], code[1:])]
    values = np.concatenate([RNG.uniform(-1, 1, 2000).astype(np.float32), np.array(t, dtype=np.float32)])
    counted = np.array([sum(1 for threshold in t if threshold < v) for v in values])
    np.testing.assert_array_equal(reference.nearest(code, values), counted)


@pytest.mark.parametrize("code", [reference.create_dynamic_map(), reference.NF4], ids=["dynamic", "nf4"])
def test_value_on_a_threshold_takes_the_lower_code_and_the_next_float_the_upper(code: np.ndarray) -> None:
    t = reference.thresholds(code)
    np.testing.assert_array_equal(reference.nearest(code, t), np.arange(t.size))
    np.testing.assert_array_equal(reference.nearest(code, np.nextafter(t, np.float32(2))), np.arange(t.size) + 1)


# --------------------------------------------------------------------------- 8-bit


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_blockwise_round_trip_error_is_within_half_the_local_code_gap(dtype: type, blocksize: int) -> None:
    x = random_values(3 * blocksize + 17, dtype)
    code = reference.create_dynamic_map().astype(np.float64)
    q, absmax = reference.quantize_blockwise(x, blocksize=blocksize)
    assert q.dtype == np.uint8 and q.shape == x.shape and absmax.dtype == np.float32

    x64 = x.astype(np.float64)
    blocks = np.zeros(absmax.size * blocksize)
    blocks[: x.size] = np.abs(x64)
    np.testing.assert_array_equal(absmax, blocks.reshape(-1, blocksize).max(axis=1))

    scale = per_element_absmax(absmax, x.size, blocksize)
    # Half the gap to either neighbour; below the lowest code (-0.99297) values reach down to -1.
    below = np.diff(code, prepend=code[0])
    below[0] = 2 * (code[0] + 1)
    gap = np.maximum(below[q], np.diff(code, append=code[-1])[q])
    error = np.abs(x64 - reference.dequantize_blockwise(q, absmax, blocksize=blocksize).astype(np.float64))
    assert np.all(error <= (gap / 2 + 2**-22) * scale)

    # float16 output adds at most half a float16 step of the value.
    deq16 = reference.dequantize_blockwise(q, absmax, blocksize=blocksize, out_dtype=np.float16)
    assert deq16.dtype == np.float16
    error16 = np.abs(x64 - deq16.astype(np.float64))
    assert np.all(error16 <= (gap / 2 + 2**-22) * scale + np.abs(code[q] * scale) * 2**-11 + 2**-25)


def test_blockwise_codes_of_fp16_input_equal_those_of_its_exact_float32_values() -> None:
    x = random_values(5000, np.float16)
    q16, a16 = reference.quantize_blockwise(x, blocksize=256)
    q32, a32 = reference.quantize_blockwise(x.astype(np.float32), blocksize=256)
    np.testing.assert_array_equal(q16, q32)
    np.testing.assert_array_equal(a16, a32)


def test_blockwise_positive_absmax_element_and_zeros_are_exact() -> None:
    x = np.array([0.0, 3.5, -1.25, 0.0, -0.0], dtype=np.float32)
    q, absmax = reference.quantize_blockwise(x, blocksize=64)
    out = reference.dequantize_blockwise(q, absmax, blocksize=64)
    assert absmax.tolist() == [3.5]
    assert out[1] == 3.5 and out[0] == 0.0 and out[3] == 0.0 and out[4] == 0.0


def test_all_zero_block_has_zero_absmax_and_dequantizes_to_zero() -> None:
    x = np.zeros(130, dtype=np.float32)
    x[:64] = 2.0  # first block non-zero, the rest zero
    q, absmax = reference.quantize_blockwise(x, blocksize=64)
    assert absmax.tolist() == [2.0, 0.0, 0.0]
    out = reference.dequantize_blockwise(q, absmax, blocksize=64)
    np.testing.assert_array_equal(out, x)


def test_partial_last_block_gets_its_own_absmax() -> None:
    x = np.ones(65, dtype=np.float32)
    x[64] = -7.0
    _, absmax = reference.quantize_blockwise(x, blocksize=64)
    assert absmax.tolist() == [1.0, 7.0]


def test_denormal_inputs_are_not_flushed_to_zero() -> None:
    tiny = np.float32(1e-40)  # a float32 denormal
    x = np.array([tiny, -tiny / 2, 0.0], dtype=np.float32)
    q, absmax = reference.quantize_blockwise(x, blocksize=64)
    assert absmax[0] == tiny
    out = reference.dequantize_blockwise(q, absmax, blocksize=64)
    assert out[0] == tiny, "v = 1 maps to code 1.0, so the absmax element comes back exactly"
    packed, absmax4 = reference.quantize_4bit(x, blocksize=64, quant_type="nf4")
    assert absmax4[0] == tiny and packed[0] >> 4 == 15


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_non_finite_input_is_rejected(bad: float, dtype: type) -> None:
    x = np.array([1.0, bad, 2.0], dtype=dtype)
    with pytest.raises(ValueError, match="non-finite"):
        reference.quantize_blockwise(x)
    with pytest.raises(ValueError, match="non-finite"):
        reference.quantize_4bit(x)


# --------------------------------------------------------------------------- 4-bit


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_4bit_round_trip_error_is_within_half_the_largest_code_gap(dtype: type, quant_type: str, blocksize: int) -> None:
    n = 2 * blocksize + 3
    x = random_values(n, dtype)
    packed, absmax = reference.quantize_4bit(x, blocksize=blocksize, quant_type=quant_type)
    assert packed.dtype == np.uint8 and packed.shape == ((n + 1) // 2,) and absmax.shape == (3,)

    if quant_type == "nf4":
        values = reference.NF4.astype(np.float64)
    else:
        magnitudes = reference.FP4_MAGNITUDES.astype(np.float64)
        values = np.sort(np.concatenate([magnitudes, -magnitudes]))
    largest_gap = np.diff(values).max()

    scale = per_element_absmax(absmax, n, blocksize)
    x64 = x.astype(np.float64)
    for out_dtype, rounding in ((np.float32, 2**-22), (np.float16, 2**-10)):
        out = reference.dequantize_4bit(packed, absmax, x.shape, blocksize, quant_type, out_dtype=out_dtype)
        assert out.dtype == out_dtype and out.shape == x.shape
        assert np.all(np.abs(x64 - out.astype(np.float64)) <= (largest_gap / 2 + rounding) * scale)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_4bit_largest_magnitude_of_each_sign_round_trips_exactly(quant_type: str) -> None:
    x = np.array([0.25, -4.0, 1.0, 0.0, 3.0, -0.5], dtype=np.float32)
    packed, absmax = reference.quantize_4bit(x, blocksize=64, quant_type=quant_type)
    out = reference.dequantize_4bit(packed, absmax, x.shape, 64, quant_type)
    assert absmax.tolist() == [4.0]
    assert out[1] == -4.0 and out[3] == 0.0


def test_nf4_packs_first_element_in_the_high_nibble_and_pads_odd_length_with_zero() -> None:
    # NF4[15] = 1.0 and NF4[0] = -1.0; the missing fourth element leaves a 0 nibble (not code 7 for 0.0).
    packed, _ = reference.quantize_4bit(np.array([1.0, -1.0, 1.0], dtype=np.float32), quant_type="nf4")
    assert packed.tolist() == [0xF0, 0xF0]


def test_fp4_sign_bit_and_magnitude_codes() -> None:
    # 1.0 is magnitude index 3, 0.5 index 5, 1/4 index 7, 0 index 0; bit 3 is the sign; -0.0 counts as positive.
    x = np.array([-1.0, 1.0, 0.5, -0.25, -0.0, 0.0], dtype=np.float32)
    packed, _ = reference.quantize_4bit(x, quant_type="fp4")
    assert packed.tolist() == [0xB3, 0x5F, 0x00]
    out = reference.dequantize_4bit(packed, np.array([1.0], dtype=np.float32), x.shape, quant_type="fp4")
    np.testing.assert_array_equal(out, x)


def test_empty_input_is_a_no_op() -> None:
    q, absmax = reference.quantize_blockwise(np.zeros(0, dtype=np.float32))
    assert q.size == 0 and absmax.size == 0
    packed, absmax = reference.quantize_4bit(np.zeros(0, dtype=np.float16))
    assert packed.size == 0 and absmax.size == 0
