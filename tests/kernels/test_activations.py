"""Element-wise MLP / residual kernels against float64 NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pagedserve.kernels.activations import add_inplace, gelu_tanh_mul, silu_mul, silu_mul_serial

SHAPES = [(1, 8), (3, 300), (2, 5000), (40, 2049)]  # chunk edges: 2048, 2049, 5000 columns


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 4).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_silu_mul(shape):
    g, u = _inputs(shape, 1)
    out = np.empty_like(g)
    silu_mul(np.concatenate([g, u], axis=1), out)
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(out, g64 / (1 + np.exp(-g64)) * u, rtol=2e-6, atol=1e-6)
    serial = np.empty_like(g)
    silu_mul_serial(np.concatenate([g, u], axis=1), serial)
    np.testing.assert_array_equal(serial, out)


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_tanh_mul(shape):
    g, u = _inputs(shape, 2)
    out = np.empty_like(g)
    gelu_tanh_mul(np.concatenate([g, u], axis=1), out)
    g64 = g.astype(np.float64)
    ref = 0.5 * g64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (g64 + 0.044715 * g64**3))) * u
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-6)


def test_non_contiguous_gate_up_gives_the_same_values():
    # A strided [T, 2F] view (every other row of a bigger array) compiles to the generic-layout loop.
    g, u = _inputs((8, 3000), 3)
    fused = np.concatenate([g, u], axis=1)
    out_a, out_b = np.empty((4, 3000), np.float32), np.empty((4, 3000), np.float32)
    silu_mul(fused[::2], out_a)
    silu_mul(np.ascontiguousarray(fused[::2]), out_b)
    np.testing.assert_array_equal(out_a, out_b)
    gelu_tanh_mul(fused[::2], out_a)
    gelu_tanh_mul(np.ascontiguousarray(fused[::2]), out_b)
    np.testing.assert_array_equal(out_a, out_b)


@pytest.mark.parametrize("shape", SHAPES)
def test_add(shape):
    x, y = _inputs(shape, 4)
    z = x.copy()
    add_inplace(z, y)
    np.testing.assert_array_equal(z, x + y)


def test_batch_invariance():
    g, u = _inputs((9, 4100), 5)
    gate_up = np.concatenate([g, u], axis=1)
    out = np.empty_like(g)
    silu_mul(gate_up, out)
    for t in range(9):
        one = np.empty((1, 4100), np.float32)
        silu_mul(gate_up[t : t + 1], one)
        np.testing.assert_array_equal(one[0], out[t])
