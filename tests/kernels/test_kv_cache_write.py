"""write_kv / write_kv_int8: slot addressing, padding skip, exact quantisation recipe, half (uint16)
rounding, cache layout (K transposed per block [num_blocks, Hkv, Dh, block_size], V
[num_blocks, Hkv, block_size, Dh])."""

from __future__ import annotations

import numpy as np
import pytest

from pagedserve.kernels.kv_cache_write import kv_cache_shapes, write_kv, write_kv_int8


def _case(seed, n_tok, n_kv, head_dim, n_blocks, block_size):
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((n_tok, n_kv, head_dim)).astype(np.float32)
    v = (rng.standard_normal((n_tok, n_kv, head_dim)) * 5).astype(np.float32)
    slots = rng.permutation(n_blocks * block_size)[:n_tok].astype(np.int64)
    slots[::4] = -1  # padding tokens
    return k, v, slots


def by_slot(k_cache, v_cache):
    """Caches in their kernel layout -> per-slot views [num_blocks * block_size, Hkv, Dh] (copies)."""
    n_kv, head_dim = k_cache.shape[1], k_cache.shape[2]
    return (
        k_cache.transpose(0, 3, 1, 2).reshape(-1, n_kv, head_dim),
        v_cache.transpose(0, 2, 1, 3).reshape(-1, n_kv, head_dim),
    )


def test_layout():
    assert kv_cache_shapes(10, 16, 3, 64) == ((10, 3, 64, 16), (10, 3, 16, 64), (10, 3, 16))
    k = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # [T=2, Hkv=3, Dh=4]
    k_shape, v_shape, _ = kv_cache_shapes(3, 5, 3, 4)
    k_cache, v_cache = np.zeros(k_shape, np.float32), np.zeros(v_shape, np.float32)
    write_kv(k, -k, np.array([7, 14], np.int64), k_cache, v_cache)  # block 1 offset 2, block 2 offset 4
    np.testing.assert_array_equal(k_cache[1, :, :, 2], k[0])
    np.testing.assert_array_equal(k_cache[2, :, :, 4], k[1])
    np.testing.assert_array_equal(v_cache[1, :, 2, :], -k[0])
    np.testing.assert_array_equal(v_cache[2, :, 4, :], -k[1])
    assert np.count_nonzero(k_cache) == k.size - 1  # k[0, 0, 0] == 0


@pytest.mark.parametrize("block_size,n_kv,head_dim", [(1, 1, 8), (3, 2, 64), (16, 3, 64)])
def test_write_kv_f32(block_size, n_kv, head_dim):
    n_blocks = 12
    k, v, slots = _case(block_size, 10, n_kv, head_dim, n_blocks, block_size)
    k_shape, v_shape, _ = kv_cache_shapes(n_blocks, block_size, n_kv, head_dim)
    k_cache = np.full(k_shape, 7.0, np.float32)
    v_cache = np.full(v_shape, 7.0, np.float32)
    write_kv(k, v, slots, k_cache, v_cache)
    ref_k = np.full((n_blocks * block_size, n_kv, head_dim), 7.0, np.float32)
    ref_v = ref_k.copy()
    keep = slots >= 0
    ref_k[slots[keep]] = k[keep]
    ref_v[slots[keep]] = v[keep]
    got_k, got_v = by_slot(k_cache, v_cache)
    np.testing.assert_array_equal(got_k, ref_k)
    np.testing.assert_array_equal(got_v, ref_v)


def ref_quant(x):
    """x [T, Hkv, Dh] f32 -> (int8 values, f32 scales [T, Hkv]) with the documented recipe."""
    amax = np.abs(x).max(-1)
    scale = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x / scale[..., None])
    q = np.where(scale[..., None] == 0, 0, np.clip(q, -127, 127)).astype(np.int8)
    return q, scale


@pytest.mark.parametrize("block_size,n_kv,head_dim", [(1, 1, 8), (3, 2, 64), (16, 3, 64)])
def test_write_kv_int8(block_size, n_kv, head_dim):
    n_blocks = 12
    k, v, slots = _case(100 + block_size, 10, n_kv, head_dim, n_blocks, block_size)
    k[1, 0] = 0.0  # all-zero row: scale 0, values 0
    k_shape, v_shape, s_shape = kv_cache_shapes(n_blocks, block_size, n_kv, head_dim)
    k_cache, v_cache = np.full(k_shape, 5, np.int8), np.full(v_shape, 5, np.int8)
    k_scale, v_scale = np.full(s_shape, -1, np.float32), np.full(s_shape, -1, np.float32)
    write_kv_int8(k, v, slots, k_cache, v_cache, k_scale, v_scale)
    keep = slots >= 0
    flat_k, flat_v = by_slot(k_cache, v_cache)
    for x, flat_c, scales in ((k, flat_k, k_scale), (v, flat_v, v_scale)):
        q_ref, s_ref = ref_quant(x)
        flat_s = scales.transpose(0, 2, 1).reshape(-1, n_kv)
        np.testing.assert_array_equal(flat_c[slots[keep]], q_ref[keep])
        np.testing.assert_array_equal(flat_s[slots[keep]], s_ref[keep])
        untouched = np.setdiff1d(np.arange(flat_c.shape[0]), slots[keep])
        assert np.all(flat_c[untouched] == 5) and np.all(flat_s[untouched] == -1)
        deq = flat_c[slots[keep]].astype(np.float32) * flat_s[slots[keep]][..., None]
        err = np.abs(deq - x[keep])
        assert np.all(err <= 0.5001 * flat_s[slots[keep]][..., None] + 1e-12)
        assert np.abs(flat_c).max() <= 127
    assert k_scale.transpose(0, 2, 1).reshape(-1, n_kv)[slots[1], 0] == 0 or slots[1] < 0


@pytest.mark.parametrize("block_size,n_kv,head_dim", [(1, 1, 8), (3, 2, 64), (16, 3, 64)])
def test_write_kv_f16_stores_numpy_half_bits(block_size, n_kv, head_dim):
    # A float16 cache is uint16 words holding half bits (Numba has no CPU float16).
    n_blocks = 12
    k, v, slots = _case(200 + block_size, 10, n_kv, head_dim, n_blocks, block_size)
    k[2, 0, :4] = [0.0, -0.0, 1e-7, 7e4]  # zero signs, a subnormal, overflow to inf
    k_shape, v_shape, _ = kv_cache_shapes(n_blocks, block_size, n_kv, head_dim)
    k_cache = np.full(k_shape, 0x1234, np.uint16)
    v_cache = np.full(v_shape, 0x1234, np.uint16)
    write_kv(k, v, slots, k_cache, v_cache)
    keep = slots >= 0
    with np.errstate(over="ignore"):
        want_k, want_v = (x.astype(np.float16).view(np.uint16) for x in (k, v))
    got_k, got_v = by_slot(k_cache, v_cache)
    np.testing.assert_array_equal(got_k[slots[keep]], want_k[keep])
    np.testing.assert_array_equal(got_v[slots[keep]], want_v[keep])
    untouched = np.setdiff1d(np.arange(n_blocks * block_size), slots[keep])
    assert np.all(got_k[untouched] == 0x1234) and np.all(got_v[untouched] == 0x1234)


def test_numpy_float16_arrays_are_not_accepted():
    # Numba's CPU target has no float16 type: f16 caches must be uint16 arrays of half bits.
    k = np.zeros((1, 1, 8), np.float32)
    cache = np.zeros((1, 1, 1, 8), np.float16)
    with pytest.raises(Exception):
        write_kv(k, k, np.zeros(1, np.int64), cache, cache)
