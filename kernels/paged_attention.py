"""Paged attention over a packed variable-length batch (prefill chunks and decodes mixed).

Batch layout: sequence s owns query rows query_start_loc[s] .. query_start_loc[s+1]-1 of q; after
this step its context holds seq_lens[s] tokens (this step's K/V are already in the cache).  Its i-th
query row (of q_len rows) sits at position p = seq_lens[s] - q_len + i and attends to keys
j <= p, and with sliding_window W > 0 only to keys with p - j < W.  Key j is read from block
block_tables[s, j // block_size] at offset j % block_size; blocks before the first visible key are
never read (they may be the null block).  GQA: query head h uses kv head h // (H // Hkv).

Promises:
* out[t, h] = softmax(scale * q[t, h] . K^T) V over the visible keys, accurate to ~1e-6 relative
  (float32 dot products and V accumulation, float64 running max / exp / exp-sum).
* Batch invariance: a row's result depends only on its own query, its sequence's cache, and the
  scalars - never on the other rows, the batch composition or the thread count.  Each (token, kv
  head) item is computed by one thread, keys visited block by block in position order, with a
  fixed summation order.  Rows not owned by any sequence (t >= query_start_loc[S]) get zeros.
* No fastmath; nopython; releases the GIL.  Output is written into ``out``.

Work split: prange over items (token, kv head), visited in a strided order so each thread's share
mixes early and late rows of a prompt (causal prefill stays balanced).  An item handles the whole
GQA group so each K/V row is loaded once per group; its keys are visited block by block: scores of
the block for all heads, one online-softmax rescale per block, then the V rows.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from kernels.jit import jit, parallel_jit


@jit
def _find_seq(query_start_loc, t):
    # query_start_loc [S+1] int32 -> largest s in [0, S-1] with query_start_loc[s] <= t (skips
    # empty sequences).  Caller guarantees t < query_start_loc[S].
    lo = 0
    hi = query_start_loc.shape[0] - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if query_start_loc[mid] <= t:
            lo = mid
        else:
            hi = mid - 1
    return lo


@jit
def _dot(qs, hq, kc, blk, o, g, n):
    # qs [G, Dh] f32 row hq . kc [num_blocks, block_size, Hkv, Dh] row (blk, o, g), float32, in
    # plain sequential order (deterministic, like a naive reference).  Measured faster here than
    # split partial sums: LLVM does not SIMD-vectorise either form without fastmath, and the
    # out-of-order core overlaps the independent dots of consecutive keys/heads anyway.
    acc = np.float32(0.0)
    for d in range(n):
        acc += qs[hq, d] * np.float32(kc[blk, o, g, d])
    return acc


@jit
def _attend_item(t, g, q, k_cache, v_cache, k_scale, v_scale, quant, block_tables,
                 query_start_loc, seq_lens, scale, sliding_window, out):
    """Compute out[t, g*G:(g+1)*G, :] for query row t and kv head g (G = H // Hkv).

    Generic over the cache dtype (float32 or int8).  quant=True multiplies K dot products and V rows
    by k_scale / v_scale [num_blocks, block_size, Hkv]; quant=False never reads the scales.
    """
    n_head, head_dim = q.shape[1], q.shape[2]
    block_size = k_cache.shape[1]
    group = n_head // k_cache.shape[2]
    t_end = query_start_loc[seq_lens.shape[0]]
    scale32 = np.float32(scale)
    h0 = g * group
    s = 0
    p = -1
    if t < t_end:
        s = _find_seq(query_start_loc, t)
        p = seq_lens[s] - (query_start_loc[s + 1] - query_start_loc[s]) + (t - query_start_loc[s])
    if p < 0:  # padding row (or inconsistent metadata): defined output, no cache reads
        for hq in range(group):
            for d in range(head_dim):
                out[t, h0 + hq, d] = 0.0
        return
    # Item-local scratch (~2 KB, two small allocations): the number of threads is not known in
    # cacheable code, so per-thread buffers are not an option; this costs < 1 us per item.
    qs = np.empty((group, head_dim), np.float32)  # [G, Dh] scaled queries of the group
    acc = np.empty((group, head_dim), np.float32)  # [G, Dh] unnormalised output
    sc = np.empty((group, block_size), np.float32)  # [G, block_size] scores of one block
    m = np.empty(group, np.float64)  # [G] running max score
    lsum = np.empty(group, np.float64)  # [G] running sum of exp(score - m)
    j0 = 0
    if sliding_window > 0 and p - sliding_window + 1 > 0:
        j0 = p - sliding_window + 1
    for hq in range(group):
        m[hq] = -np.inf
        lsum[hq] = 0.0
        for d in range(head_dim):
            qs[hq, d] = q[t, h0 + hq, d] * scale32
            acc[hq, d] = 0.0
    for bi in range(j0 // block_size, p // block_size + 1):
        blk = block_tables[s, bi]
        base = bi * block_size
        o0 = max(j0 - base, 0)
        o1 = min(p - base + 1, block_size)
        # 1) scores of the block's visible keys for every head of the group.
        for o in range(o0, o1):
            for hq in range(group):
                sc[hq, o] = _dot(qs, hq, k_cache, blk, o, g, head_dim)
            if quant:
                ks = k_scale[blk, o, g]
                for hq in range(group):
                    sc[hq, o] *= ks
        # 2) online softmax: rescale the running state once per block if the max grew.
        for hq in range(group):
            bm = -np.inf
            for o in range(o0, o1):
                if sc[hq, o] > bm:
                    bm = np.float64(sc[hq, o])
            if bm > m[hq]:
                if lsum[hq] > 0.0:
                    alpha = math.exp(m[hq] - bm)
                    lsum[hq] *= alpha
                    a32 = np.float32(alpha)
                    for d in range(head_dim):
                        acc[hq, d] *= a32
                m[hq] = bm
        # 3) accumulate the V rows (loaded once, used by the whole group).
        for o in range(o0, o1):
            vs = np.float32(1.0)
            if quant:
                vs = v_scale[blk, o, g]
            for hq in range(group):
                w = math.exp(np.float64(sc[hq, o]) - m[hq])
                lsum[hq] += w
                w32 = np.float32(w) * vs
                for d in range(head_dim):
                    acc[hq, d] += w32 * np.float32(v_cache[blk, o, g, d])
    for hq in range(group):
        inv = np.float32(1.0 / lsum[hq])
        for d in range(head_dim):
            out[t, h0 + hq, d] = acc[hq, d] * inv


@jit
def _grid(n_items):
    # Items are visited through a transposed grid of c columns: prange splits its index range into
    # contiguous per-thread chunks, and the transpose turns each chunk into a slice of every one of
    # c evenly spaced stripes of items, which balances causal prefill (late rows cost more).
    c = min(16, n_items)
    r = (n_items + c - 1) // c if c > 0 else 0
    return r, c


@jit
def _item_of(i, r, c):
    # Grid index i -> item index (may be >= n_items in the last stripe: skipped by the caller).
    return (i % c) * r + i // c


@parallel_jit
def paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
                    sliding_window, out):
    """Attention over float32 paged caches.

    q [T, H, Dh] f32; k_cache, v_cache [num_blocks, block_size, Hkv, Dh] f32;
    block_tables [S, max_blocks] int32; query_start_loc [S+1] int32; seq_lens [S] int32;
    scale float; sliding_window int (<= 0: off); out [T, H, Dh] f32 (written).
    """
    n_kv = k_cache.shape[2]
    n_items = q.shape[0] * n_kv  # item = token * Hkv + kv_head
    r, c = _grid(n_items)
    no_scale = np.zeros((1, 1, 1), np.float32)  # [1, 1, 1] placeholder, never read (quant=False)
    for i in numba.prange(r * c):
        item = _item_of(i, r, c)
        if item >= n_items:
            continue
        _attend_item(item // n_kv, item % n_kv, q, k_cache, v_cache, no_scale, no_scale, False, block_tables,
                     query_start_loc, seq_lens, scale, sliding_window, out)


@parallel_jit
def paged_attention_int8(q, k_cache, v_cache, k_scale, v_scale, block_tables, query_start_loc,
                         seq_lens, scale, sliding_window, out):
    """Attention over int8 paged caches, dequantised in the kernel (x = q * scale).

    As ``paged_attention`` with k_cache, v_cache [num_blocks, block_size, Hkv, Dh] int8 and
    k_scale, v_scale [num_blocks, block_size, Hkv] f32 (as written by ``write_kv_int8``).
    """
    n_kv = k_cache.shape[2]
    n_items = q.shape[0] * n_kv  # item = token * Hkv + kv_head
    r, c = _grid(n_items)
    for i in numba.prange(r * c):
        item = _item_of(i, r, c)
        if item >= n_items:
            continue
        _attend_item(item // n_kv, item % n_kv, q, k_cache, v_cache, k_scale, v_scale, True, block_tables,
                     query_start_loc, seq_lens, scale, sliding_window, out)
