"""rms_norm / rms_norm_heads against a float64 NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from pagedserve.kernels.rms_norm import rms_norm, rms_norm_heads


def ref_rms(x, w, eps):
    x64 = x.astype(np.float64)
    return x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + eps) * w.astype(np.float64)


@pytest.mark.parametrize("n_tok,d_model", [(1, 8), (5, 64), (37, 300), (3, 2048)])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_rms_norm(n_tok, d_model, eps):
    rng = np.random.default_rng(n_tok * d_model)
    x = (rng.standard_normal((n_tok, d_model)) * 3).astype(np.float32)
    w = rng.standard_normal(d_model).astype(np.float32)
    out = np.empty_like(x)
    rms_norm(x, w, eps, out)
    np.testing.assert_allclose(out, ref_rms(x, w, eps), rtol=1e-6, atol=1e-6)
    # Batch invariance: each row alone is bit-identical; in-place (out aliases x) works too.
    for t in range(n_tok):
        one = np.empty((1, d_model), np.float32)
        rms_norm(x[t : t + 1], w, eps, one)
        np.testing.assert_array_equal(one[0], out[t])
    y = x.copy()
    rms_norm(y, w, eps, y)
    np.testing.assert_array_equal(y, out)


def test_rms_norm_zero_row():
    x = np.zeros((2, 16), np.float32)
    out = np.full_like(x, np.nan)
    rms_norm(x, np.ones(16, np.float32), 1e-6, out)
    assert np.all(out == 0)


@pytest.mark.parametrize("n_tok,n_head,head_dim", [(1, 1, 8), (7, 3, 64), (40, 8, 256)])
def test_rms_norm_heads(n_tok, n_head, head_dim):
    rng = np.random.default_rng(n_tok + n_head + head_dim)
    x = rng.standard_normal((n_tok, n_head, head_dim)).astype(np.float32)
    w = rng.standard_normal(head_dim).astype(np.float32)
    ref = ref_rms(x, w, 1e-6)
    y = x.copy()
    rms_norm_heads(y, w, 1e-6)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    # Same arithmetic as rms_norm on the flattened (token, head) rows.
    flat = np.empty((n_tok * n_head, head_dim), np.float32)
    rms_norm(x.reshape(-1, head_dim), w, 1e-6, flat)
    np.testing.assert_array_equal(y.reshape(-1, head_dim), flat)
