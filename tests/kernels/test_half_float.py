"""kernels.half_float: the half <-> float32 intrinsics agree bit for bit with NumPy's float16.

The intrinsics are called from small jitted loops (the way the kernels use them), over arrays so
LLVM cannot constant-fold the conversions away.
"""

from __future__ import annotations

import numba
import numpy as np

from pagedserve.kernels.half_float import as_f32, f32_to_half, half_to_f32, to_cache_value


@numba.njit
def _encode(x):
    # x [N] float32 -> [N] uint16 half bits
    out = np.empty(x.shape[0], np.uint16)
    for i in range(x.shape[0]):
        out[i] = f32_to_half(x[i])
    return out


@numba.njit
def _decode(bits):
    # bits [N] uint16 -> [N] float32
    out = np.empty(bits.shape[0], np.float32)
    for i in range(bits.shape[0]):
        out[i] = half_to_f32(bits[i])
    return out


@numba.njit
def _as_f32_all(cache):
    # cache [N] (any supported element type) -> [N] float32 through as_f32
    out = np.empty(cache.shape[0], np.float32)
    for i in range(cache.shape[0]):
        out[i] = as_f32(cache[i])
    return out


@numba.njit
def _store_all(x, cache):
    # x [N] float32 -> cache [N] through to_cache_value
    for i in range(x.shape[0]):
        cache[i] = to_cache_value(x[i], cache)


ALL_BITS = np.arange(65536, dtype=np.uint32).astype(np.uint16)  # every half bit pattern


def _numpy_bits(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # overflow to inf is one of the cases under test
        return x.astype(np.float16).view(np.uint16)


def _assert_same_bits(got: np.ndarray, x: np.ndarray) -> None:
    """Half bits `got` equal NumPy's rounding of float32 `x` (NaN inputs: any NaN of the same sign)."""
    want = _numpy_bits(x)
    nan = np.isnan(x)
    bad = np.flatnonzero((got != want) & ~nan)
    assert bad.size == 0, [(float(x[i]), hex(x[i:i + 1].view(np.uint32)[0]), hex(got[i]), hex(want[i]))
                           for i in bad[:5]]
    assert np.all(np.isnan(got[nan].view(np.float16)))
    assert np.array_equal(got[nan] >> 15, want[nan] >> 15)


def test_f32_to_half_special_values():
    tiny = np.float32(2.0**-24)  # smallest half subnormal
    x = np.array([
        0.0, -0.0, 1.0, -1.0, 0.5, 65504.0, -65504.0,  # exact
        65519.99, 65520.0, -65520.0, 1e5, 3.4e38, np.inf, -np.inf,  # largest finite, tie and overflow to inf
        tiny, -tiny, tiny / 2, tiny * 0.5000001, tiny * 1.5, tiny * 2.5, 1e-10, -1e-30,  # subnormals, ties
        2.0**-14, 2.0**-14 * (1 - 2.0**-11), 1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-11 + 2.0**-20,  # ties
        np.nan, -np.nan,
    ], np.float32)
    got = _encode(x)
    _assert_same_bits(got, x)
    assert got[0] == 0x0000 and got[1] == 0x8000  # signed zeros kept
    assert got[8] == 0x7C00 and got[9] == 0xFC00  # 65520 is the tie to inf
    assert got[16] == 0x0000 and got[17] == 0x0001  # tie to even (0), just above it rounds up
    assert got[24] == 0x3C00 and got[25] == 0x3C02  # 1 + half ulp -> 1; 1 + 1.5 ulp -> 1 + 2 ulp


def test_f32_to_half_bit_identical_to_numpy_on_random_values():
    rng = np.random.default_rng(0)
    # Every float32 bit pattern equally likely: all exponents, both signs, NaN and inf included.
    raw = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    # Magnitudes where halves live: 2^-26 (below the smallest subnormal) to 2^17 (past overflow).
    mags = (np.sign(rng.standard_normal(200_000)) * 2.0 ** rng.uniform(-26, 17, 200_000)).astype(np.float32)
    for x in (raw, mags):
        _assert_same_bits(_encode(x), x)


def test_f32_to_half_ties_round_to_even():
    # The exact midpoint between every pair of adjacent finite halves (exact in float32), both signs,
    # and the float32 values one ulp either side of it.
    lo = ALL_BITS[(ALL_BITS & 0x7FFF) < 0x7BFF]  # finite, and the next pattern up is finite too
    a = lo.view(np.float16).astype(np.float64)
    b = (lo + 1).astype(np.uint16).view(np.float16).astype(np.float64)
    mid = ((a + b) / 2).astype(np.float32)
    assert np.array_equal(mid.astype(np.float64), (a + b) / 2)  # the midpoints are exact
    for x in (mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))):
        _assert_same_bits(_encode(x), x)


def test_half_to_f32_exact_over_all_bit_patterns():
    got = _decode(ALL_BITS)
    want = ALL_BITS.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert nan.sum() == 2 * 1023  # exponent 31 with a nonzero mantissa, both signs
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # -0, inf, subnormals
    assert np.all(np.isnan(got[nan]))
    # Round trip: decoding then encoding gives back every non-NaN pattern.
    np.testing.assert_array_equal(_encode(got[~nan]), ALL_BITS[~nan])


def test_as_f32_and_to_cache_value_by_cache_type():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(100).astype(np.float32) * 100
    half = np.zeros(100, np.uint16)
    _store_all(x, half)
    np.testing.assert_array_equal(half, _numpy_bits(x))
    np.testing.assert_array_equal(_as_f32_all(half), x.astype(np.float16).astype(np.float32))
    f32 = np.zeros(100, np.float32)
    _store_all(x, f32)
    np.testing.assert_array_equal(f32, x)
    np.testing.assert_array_equal(_as_f32_all(f32), x)
    codes = np.arange(-127, 128, dtype=np.int8)
    np.testing.assert_array_equal(_as_f32_all(codes), codes.astype(np.float32))
