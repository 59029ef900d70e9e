"""exp_f32 against NumPy's float64 exp over the range softmax uses (x <= 0)."""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from pagedserve.kernels.attention_simd import _VF, vector_exp
from pagedserve.kernels.fast_exp import exp_f32, f32_from_bits


@intrinsic
def exp_lanes(typingctx, src_addr, dst_addr):
    """dst[0:16] = vector_exp(src[0:16]) for float32 arrays at the given addresses."""

    def codegen(context, builder, signature, args):
        src = builder.load(builder.inttoptr(args[0], _VF.as_pointer()), align=4)
        builder.store(vector_exp(builder, src), builder.inttoptr(args[1], _VF.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@numba.njit
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_f32(x[i])


@numba.njit
def _from_bits(bits, out):
    for i in range(bits.shape[0]):
        out[i] = f32_from_bits(bits[i])


def test_exp_f32_within_two_ulp_for_inputs_from_minus_87_to_0():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        -np.minimum(np.abs(rng.standard_normal(200_000) * 20), 87.0),
        -rng.uniform(0, 1e-6, 1000),
        np.array([0.0, -0.0, -1e-30, -0.5 * np.log(2), -86.9]),
    ]).astype(np.float32)
    out = np.empty_like(x)
    _exp_all(x, out)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(out.astype(np.float64) - ref) / ref
    assert rel.max() <= 2 * 2.0 ** -24
    assert out[-5] == 1.0 and out[-4] == 1.0


def test_exp_f32_positive_inputs_within_two_ulp_and_clamped_above_88():
    x = np.random.default_rng(1).uniform(0, 88, 100_000).astype(np.float32)
    out = np.empty_like(x)
    _exp_all(x, out)
    ref = np.exp(x.astype(np.float64))
    assert (np.abs(out - ref) / ref).max() <= 2 * 2.0 ** -24
    big = np.array([88.0, 100.0, np.inf], np.float32)
    out = np.empty_like(big)
    _exp_all(big, out)
    assert np.all(np.isfinite(out)) and np.all(out == out[0]) and out[0] > 1e38


def test_exp_f32_very_negative_inputs_stay_tiny_and_finite():
    x = np.array([-87.3, -100.0, -1e4, -np.inf], np.float32)
    out = np.empty_like(x)
    _exp_all(x, out)
    assert np.all(np.isfinite(out)) and np.all(out >= 0) and np.all(out < 2e-38)


def test_f32_from_bits_reinterprets():
    values = np.array([1.0, -2.5, 0.0, 3.4e38, 1e-40], np.float32)
    out = np.empty_like(values)
    _from_bits(values.view(np.int32).astype(np.int64), out)
    np.testing.assert_array_equal(out.view(np.int32), values.view(np.int32))


@numba.njit
def _exp_vector(x, out):
    for i in range(0, x.shape[0], 16):
        exp_lanes(x[i:].ctypes.data, out[i:].ctypes.data)


def test_vector_exp_of_attention_is_bit_identical_to_exp_f32():
    # kernels/attention_simd.py rebuilds exp_f32 from vector operations: it must be the same function.
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-100, 100, 40_000), rng.standard_normal(40_000) * 5,
                        [0.0, -0.0, -87.3, -87.4, 88.0, 89.0, -np.inf, np.inf, 1e-30, -1e-30]])
    x = np.resize(x, (x.size + 15) // 16 * 16).astype(np.float32)
    scalar = np.empty_like(x)
    vector = np.empty_like(x)
    _exp_all(x, scalar)
    _exp_vector(x, vector)
    np.testing.assert_array_equal(vector.view(np.uint32), scalar.view(np.uint32))
