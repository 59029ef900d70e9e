"""paged_attention / paged_attention_int8 against a plain NumPy float64 reference, over float32,
float16 (uint16 half bits) and int8 caches.

Layouts are deliberately awkward: physical blocks shuffled, blocks wholly outside the sliding
window mapped to the null block 0, and the null block plus every unwritten slot filled with NaN,
so any read the kernel must not do poisons the output.

Cache layout (kernels.kv_cache_write.kv_cache_shapes): K transposed per block
[num_blocks, Hkv, Dh, block_size], V [num_blocks, Hkv, block_size, Dh], int8 scales
[num_blocks, Hkv, block_size].
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from pagedserve.kernels.kv_cache_write import kv_cache_shapes, write_kv, write_kv_int8
from pagedserve.kernels.paged_attention import paged_attention, paged_attention_int8

DTYPES = ["f32", "f16", "int8"]
HALF_NAN = 0x7E00  # a quiet NaN in half bits: poisons any read of an unwritten slot


def make_batch(rng, seqs, block_size, n_kv, group, head_dim, window, dtype, pad_rows=0):
    """seqs: list of (context length after this step, query length); dtype "f32", "f16" or "int8".

    Returns kernel args + K/V as written + K/V as the cache holds them (float64 for int8)."""
    n_seq = len(seqs)
    nb = [(ctx + block_size - 1) // block_size for ctx, _ in seqs]
    n_blocks = sum(nb) + 1
    phys = rng.permutation(np.arange(1, n_blocks)).astype(np.int32)
    block_tables = np.zeros((n_seq, max(nb) + 2), np.int32)  # extra zero columns on purpose
    kv = []  # per sequence: (k [ctx, Hkv, Dh], v [ctx, Hkv, Dh]) float32 as written
    slots = []
    used = 0
    for s, (ctx, q_len) in enumerate(seqs):
        block_tables[s, : nb[s]] = phys[used : used + nb[s]]
        used += nb[s]
        k = rng.standard_normal((ctx, n_kv, head_dim), dtype=np.float32)
        v = rng.standard_normal((ctx, n_kv, head_dim), dtype=np.float32)
        kv.append((k, v))
        pos = np.arange(ctx)
        slots.append(block_tables[s, pos // block_size].astype(np.int64) * block_size + pos % block_size)
    k_shape, v_shape, s_shape = kv_cache_shapes(n_blocks, block_size, n_kv, head_dim)
    if dtype == "int8":
        k_cache = np.full(k_shape, 99, np.int8)  # unwritten slots: garbage, scale NaN below
        v_cache = np.full(v_shape, 99, np.int8)
        k_scale = np.full(s_shape, np.nan, np.float32)
        v_scale = np.full(s_shape, np.nan, np.float32)
        for (k, v), sl in zip(kv, slots):
            write_kv_int8(k, v, sl, k_cache, v_cache, k_scale, v_scale)
        deq = []  # reference sees exactly what the cache holds
        for sl in slots:
            b, o = sl // block_size, sl % block_size
            deq.append(
                (
                    k_cache[b, :, :, o].astype(np.float64) * k_scale[b, :, o][..., None],  # [ctx, Hkv, Dh]
                    v_cache[b, :, o, :].astype(np.float64) * v_scale[b, :, o][..., None],
                )
            )
    elif dtype == "f16":
        k_cache = np.full(k_shape, HALF_NAN, np.uint16)
        v_cache = np.full(v_shape, HALF_NAN, np.uint16)
        for (k, v), sl in zip(kv, slots):
            write_kv(k, v, sl, k_cache, v_cache)
        deq = [(k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)) for k, v in kv]
    else:
        k_cache = np.full(k_shape, np.nan, np.float32)
        v_cache = np.full(v_shape, np.nan, np.float32)
        for (k, v), sl in zip(kv, slots):
            write_kv(k, v, sl, k_cache, v_cache)
        deq = kv
    # Blocks no query of the sequence can see become the null block (which holds NaN).
    if window > 0:
        for s, (ctx, q_len) in enumerate(seqs):
            first_visible = max(0, ctx - q_len - window + 1)
            block_tables[s, : first_visible // block_size] = 0
    qsl = np.zeros(n_seq + 1, np.int32)
    qsl[1:] = np.cumsum([ql for _, ql in seqs])
    seq_lens = np.array([ctx for ctx, _ in seqs], np.int32)
    q = rng.standard_normal((int(qsl[-1]) + pad_rows, n_kv * group, head_dim), dtype=np.float32)
    caches = (k_cache, v_cache, k_scale, v_scale) if dtype == "int8" else (k_cache, v_cache)
    return q, caches, block_tables, qsl, seq_lens, kv, deq


def reference(q, seqs, qsl, kv, scale, window, group):
    """Plain float64 attention per sequence: gather K/V, causal(+window) mask, softmax."""
    out = np.zeros(q.shape, np.float64)
    for s, (ctx, q_len) in enumerate(seqs):
        k, v = (np.asarray(a, np.float64) for a in kv[s])  # [ctx, Hkv, Dh]
        k = np.repeat(k, group, axis=1)  # [ctx, H, Dh]
        v = np.repeat(v, group, axis=1)
        qs = q[qsl[s] : qsl[s + 1]].astype(np.float64)  # [q_len, H, Dh]
        scores = np.einsum("qhd,khd->hqk", qs, k) * scale  # [H, q_len, ctx]
        p = ctx - q_len + np.arange(q_len)[:, None]
        j = np.arange(ctx)[None, :]
        visible = j <= p
        if window > 0:
            visible &= p - j < window
        scores = np.where(visible[None], scores, -np.inf)
        scores -= scores.max(-1, keepdims=True)
        w = np.exp(scores)
        w /= w.sum(-1, keepdims=True)
        out[qsl[s] : qsl[s + 1]] = np.einsum("hqk,khd->qhd", w, v)
    return out


def run(q, caches, block_tables, qsl, seq_lens, scale, window):
    out = np.full(q.shape, np.nan, np.float32)
    if len(caches) == 4:
        paged_attention_int8(q, *caches, block_tables, qsl, seq_lens, scale, window, out)
    else:
        paged_attention(q, *caches, block_tables, qsl, seq_lens, scale, window, out)
    return out


def mixed_seqs(block_size):
    # A 40-token chunk continuing a 300-token prefix, a fresh 37-token prefill, then decodes at
    # context 1, block_size, block_size + 1, 37 and 300.
    ctxs = [1, block_size, block_size + 1, 37, 300]
    return [(340, 40), (37, 37)] + [(c, 1) for c in ctxs]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [0, 5, 17])
@pytest.mark.parametrize("group", [1, 3, 5])
# (16, 64) and (16, 128) take the vector path of kernels/attention_simd.py (5 heads: calls of 4 + 1
# rows; 128: two chunks of the V accumulation); the others the Numba loops.
@pytest.mark.parametrize("block_size,head_dim", [(1, 8), (3, 64), (16, 8), (16, 64), (16, 128)])
def test_matches_reference_and_is_batch_invariant(block_size, head_dim, group, window, dtype):
    rng = np.random.default_rng(1000 * block_size + 10 * head_dim + group + window)
    n_kv = 2
    seqs = mixed_seqs(block_size)
    q, caches, bt, qsl, seq_lens, kv, deq = make_batch(rng, seqs, block_size, n_kv, group, head_dim, window, dtype)
    scale = 1.0 / np.sqrt(head_dim)
    out = run(q, caches, bt, qsl, seq_lens, scale, window)
    assert np.all(np.isfinite(out))
    ref = reference(q, seqs, qsl, deq, scale, window, group)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-6)
    if dtype != "f32":  # against the unrounded K/V: only rounding error (int8 ~1% of |x|, f16 ~0.05%)
        ref32 = reference(q, seqs, qsl, kv, scale, window, group)
        np.testing.assert_allclose(out, ref32, rtol=0, atol=0.05 if dtype == "int8" else 5e-3)
    # Batch invariance: each sequence alone gives bit-identical rows.
    for s, (ctx, q_len) in enumerate(seqs):
        alone = run(
            np.ascontiguousarray(q[qsl[s] : qsl[s + 1]]), caches, bt[s : s + 1].copy(),
            np.array([0, q_len], np.int32), seq_lens[s : s + 1].copy(), scale, window,
        )
        np.testing.assert_array_equal(alone, out[qsl[s] : qsl[s + 1]])
    # Tiling invariance: every row computed as a one-row sequence of its own (context cut at its
    # position) is bit-identical to the row computed inside its multi-row tile.
    rows_seq = np.concatenate([np.full(q_len, s) for s, (_, q_len) in enumerate(seqs)])
    rows_ctx = np.concatenate([np.arange(ctx - q_len, ctx) + 1 for ctx, q_len in seqs]).astype(np.int32)
    single = run(q, caches, bt[rows_seq].copy(), np.arange(q.shape[0] + 1, dtype=np.int32), rows_ctx, scale, window)
    np.testing.assert_array_equal(single, out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_and_padding_rows(dtype):
    rng = np.random.default_rng(7)
    seqs = mixed_seqs(16)
    q, caches, bt, qsl, seq_lens, kv, deq = make_batch(rng, seqs, 16, 3, 3, 64, 0, dtype, pad_rows=3)
    ref_out = run(q, caches, bt, qsl, seq_lens, 0.125, 0)
    assert np.all(ref_out[qsl[-1] :] == 0.0)  # rows owned by no sequence are zeroed
    np.testing.assert_allclose(ref_out[: qsl[-1]], reference(q, seqs, qsl, deq, 0.125, 0, 3)[: qsl[-1]], rtol=1e-5, atol=2e-6)
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run(q, caches, bt, qsl, seq_lens, 0.125, 0)
    finally:
        numba.set_num_threads(n)
    np.testing.assert_array_equal(one, ref_out)


def test_large_scores_are_stable():
    # Scores in the thousands: a naive exp overflows, the online softmax must not.
    rng = np.random.default_rng(3)
    seqs = [(300, 40), (37, 1)]
    q, caches, bt, qsl, seq_lens, kv, _ = make_batch(rng, seqs, 16, 1, 3, 64, 0, "f32")
    q *= 30.0
    out = run(q, caches, bt, qsl, seq_lens, 1.0, 0)
    assert np.all(np.isfinite(out))
    # Scores ~ +-1000 carry float32 dot-product error ~1e-4 absolute, hence the looser tolerance.
    np.testing.assert_allclose(out, reference(q, seqs, qsl, kv, 1.0, 0, 3), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_nopython_and_nogil(dtype):
    rng = np.random.default_rng(5)
    seqs = [(5, 2)]
    q, caches, bt, qsl, seq_lens, _, _ = make_batch(rng, seqs, 4, 1, 1, 8, 0, dtype)
    run(q, caches, bt, qsl, seq_lens, 1.0, 0)
    fn = paged_attention_int8 if dtype == "int8" else paged_attention
    assert fn.targetoptions["nogil"] and fn.targetoptions["parallel"]
    assert fn.nopython_signatures  # njit: compiled in nopython mode (no object-mode fallback)


@pytest.mark.parametrize("window", [0, 7])
@pytest.mark.parametrize("block_size,head_dim", [(1, 5), (3, 13), (5, 24), (16, 64)])
def test_half_cache_equals_float32_cache_of_the_same_values(block_size, head_dim, window):
    # The same kernel over uint16 half bits and over float32 holding those halves: both decode to
    # identical float32 values, so the outputs must agree bit for bit (odd Dh / block sizes exercise
    # every unrolled and tail loop of the scores and V accumulation).
    rng = np.random.default_rng(100 * block_size + head_dim + window)
    seqs = [(45, 11), (23, 23), (9, 1), (block_size + 1, 1)]
    q, (k16, v16), bt, qsl, seq_lens, kv, deq = make_batch(rng, seqs, block_size, 3, 2, head_dim, window, "f16")
    k32, v32 = (c.view(np.float16).astype(np.float32) for c in (k16, v16))  # unwritten slots stay NaN
    scale = 1.0 / np.sqrt(head_dim)
    out16 = run(q, (k16, v16), bt, qsl, seq_lens, scale, window)
    out32 = run(q, (k32, v32), bt, qsl, seq_lens, scale, window)
    assert np.all(np.isfinite(out16))
    np.testing.assert_array_equal(out16, out32)
    np.testing.assert_allclose(out16, reference(q, seqs, qsl, deq, scale, window, 2), rtol=1e-5, atol=2e-6)
