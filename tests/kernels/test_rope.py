"""rope_table + apply_rope_table against NumPy references (exact float32 recipe, and float64 math)."""

from __future__ import annotations

import numpy as np
import pytest

from pagedserve.kernels.rope import apply_rope_table, rope_table


def apply_rope(x, positions, inv_freq, neox):
    """Rotate x [T, H, Dh] in place as the model does: the step's table, then the rotation."""
    cos = np.empty((x.shape[0], inv_freq.shape[0]), np.float32)
    sin = np.empty((x.shape[0], inv_freq.shape[0]), np.float32)
    rope_table(positions, inv_freq, cos, sin)
    apply_rope_table(x, cos, sin, neox)


def inv_freq_of(rot_dim, base=10000.0):
    return (1.0 / base ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim)).astype(np.float32)


def ref_rope(x, positions, inv_freq, neox):
    """The transformers recipe: float32 angle, cos/sin rounded to float32, float32 rotation."""
    x = x.copy()
    half = inv_freq.shape[0]
    ang = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # [T, R/2] float32
    c = np.cos(ang.astype(np.float64)).astype(np.float32)[:, None, :]
    s = np.sin(ang.astype(np.float64)).astype(np.float32)[:, None, :]
    if neox:
        ia, ib = np.arange(half), np.arange(half) + half
    else:
        ia, ib = 2 * np.arange(half), 2 * np.arange(half) + 1
    a, b = x[:, :, ia].copy(), x[:, :, ib].copy()
    x[:, :, ia] = a * c - b * s
    x[:, :, ib] = b * c + a * s
    return x


def ref_rope_f64(x, positions, inv_freq, neox):
    """Straightforward float64 rotation (complex multiply) for a loose sanity check."""
    x = x.astype(np.float64)
    half = inv_freq.shape[0]
    ang = positions.astype(np.float64)[:, None] * inv_freq.astype(np.float64)[None, :]
    rot = np.exp(1j * ang)[:, None, :]
    if neox:
        z = x[:, :, :half] + 1j * x[:, :, half : 2 * half]
    else:
        z = x[:, :, 0 : 2 * half : 2] + 1j * x[:, :, 1 : 2 * half : 2]
    z = z * rot
    out = x.copy()
    if neox:
        out[:, :, :half], out[:, :, half : 2 * half] = z.real, z.imag
    else:
        out[:, :, 0 : 2 * half : 2], out[:, :, 1 : 2 * half : 2] = z.real, z.imag
    return out


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_tok,n_head,head_dim,rot_dim", [(1, 1, 8, 8), (5, 3, 64, 64), (40, 4, 64, 32), (3, 2, 256, 256)])
@pytest.mark.parametrize("pos_dtype", [np.int32, np.int64])
def test_rope(neox, n_tok, n_head, head_dim, rot_dim, pos_dtype):
    rng = np.random.default_rng(n_tok * 31 + head_dim)
    x = rng.standard_normal((n_tok, n_head, head_dim)).astype(np.float32)
    positions = rng.integers(0, 40000, n_tok).astype(pos_dtype)
    positions[0] = 0
    inv_freq = inv_freq_of(rot_dim)
    y = x.copy()
    apply_rope(y, positions, inv_freq, neox)
    np.testing.assert_array_equal(y, ref_rope(x, positions, inv_freq, neox))
    np.testing.assert_array_equal(y[:, :, rot_dim:], x[:, :, rot_dim:])  # partial rotary
    np.testing.assert_allclose(y, ref_rope_f64(x, positions, inv_freq, neox), rtol=0, atol=1e-2)
    np.testing.assert_array_equal(y[0], x[0])  # position 0 is the identity
    for t in range(n_tok):  # batch invariance
        one = x[t : t + 1].copy()
        apply_rope(one, positions[t : t + 1], inv_freq, neox)
        np.testing.assert_array_equal(one[0], y[t])


def test_rope_small_positions_precise():
    # Positions small enough that the float32 angle is near exact: agree with float64 math tightly.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2, 64)).astype(np.float32)
    positions = np.arange(64, dtype=np.int64)
    inv_freq = inv_freq_of(64)
    y = x.copy()
    apply_rope(y, positions, inv_freq, True)
    np.testing.assert_allclose(y, ref_rope_f64(x, positions, inv_freq, True), rtol=0, atol=2e-5)
