"""Paged attention over a packed variable-length batch (prefill chunks and decodes mixed).

Batch layout: sequence s owns query rows query_start_loc[s] .. query_start_loc[s+1]-1 of q; after
this step its context holds seq_lens[s] tokens (this step's K/V are already in the cache).  Its i-th
query row (of q_len rows) sits at position p = seq_lens[s] - q_len + i and attends to keys
j <= p, and with sliding_window W > 0 only to keys with p - j < W.  Key j is read from block
block_tables[s, j // block_size] at offset j % block_size; blocks before the first visible key are
never read (they may be the null block).  GQA: query head h uses kv head h // (H // Hkv).

Cache layout (``kernels.kv_cache_write.kv_cache_shapes``): k_cache [num_blocks, Hkv, Dh, block_size]
(K transposed), v_cache [num_blocks, Hkv, block_size, Dh], int8 scales [num_blocks, Hkv, block_size].
Cache element types: float32, uint16 holding IEEE half bits (float16 caches; decoded exactly to
float32 by ``kernels.half_float.as_f32``), or int8 with scales (``paged_attention_int8``).  A half
cache gives bit for bit the result of a float32 cache holding the same (half-rounded) values.

Promises:
* out[t, h] = softmax(scale * q[t, h] . K^T) V over the visible keys, accurate to ~1e-6 relative
  (float32 dot products, V accumulation and exp (kernels/fast_exp.py, ~1 ulp); float64 exp-sum).
* Batch invariance: a row's result depends only on its own query, its sequence's cache, and the
  scalars - never on the other rows, the batch composition or the thread count.  Every (row, head)
  runs the same sequence of float operations whether its row is processed alone or in a tile with
  its neighbours: keys visited block by block in position order, each score summed over d in
  ascending order, one online-softmax update per block, V rows added in ascending key order.
  Rows not owned by any sequence (t >= query_start_loc[S]) get zeros.
* No fastmath; nopython; releases the GIL.  Output is written into ``out``.

The per-block dot products and V accumulation, and why they vectorise without fastmath, are in
kernels/attention_block.py.

Work split: an item is a tile of up to TILE consecutive query rows of one sequence and one kv head
(the whole GQA group), so each K/V block is loaded once for up to TILE * G (row, head) pairs; a
decode row is a tile of one.  prange over items, visited in a strided order so each thread's share
mixes early and late rows of a prompt (causal prefill stays balanced).
"""

from __future__ import annotations


import numba
import numpy as np

from pagedserve.kernels.fast_exp import exp_f32
from pagedserve.kernels.attention_block import accumulate_v, block_scores
from pagedserve.kernels.attention_simd import CHUNK, LANES, MAX_ROWS, attend_block
from pagedserve.kernels.jit import jit, parallel_jit
from pagedserve.kernels.prefetch import prefetch

TILE = 4  # query rows of one sequence per work item (they share every K/V block load)


@jit
def _attend_tile(t0, nq, s, g, q, k_cache, v_cache, k_scale, v_scale, quant, block_tables,
                 query_start_loc, seq_lens, scale, sliding_window, out):
    """out[t0:t0+nq, g*G:(g+1)*G, :] for nq consecutive query rows of sequence s, kv head g.

    Generic over the cache dtype (float32, uint16 half bits, or int8).  quant=True multiplies the scores and V rows
    by k_scale / v_scale [num_blocks, Hkv, block_size]; quant=False never reads the scales.
    """
    n_head, head_dim = q.shape[1], q.shape[2]
    n_kv = k_cache.shape[1]
    block_size = k_cache.shape[3]
    group = n_head // n_kv
    scale32 = np.float32(scale)
    h0 = g * group
    p0 = seq_lens[s] - (query_start_loc[s + 1] - query_start_loc[s]) + (t0 - query_start_loc[s])
    # Rows with p < 0 (inconsistent metadata): defined output, no cache reads.
    while nq > 0 and p0 < 0:
        for hq in range(group):
            for d in range(head_dim):
                out[t0, h0 + hq, d] = 0.0
        t0 += 1
        nq -= 1
        p0 += 1
    if nq == 0:
        return
    n_rows = nq * group  # row r = query i * G + head hq
    # Item-local scratch (a few KB): the number of threads is not known in cacheable code, so
    # per-thread buffers are not an option; this costs < 1 us per item.
    qs = np.empty((n_rows, head_dim), np.float32)  # scaled queries
    acc = np.empty((n_rows, head_dim), np.float32)  # unnormalised outputs
    sc = np.empty((n_rows, block_size), np.float32)  # scores of one block
    w = np.empty((n_rows, block_size), np.float32)  # V weights of one block
    m = np.empty(n_rows, np.float32)  # running max score
    lsum = np.empty(n_rows, np.float64)  # running sum of exp(score - m)
    j0 = np.empty(nq, np.int64)  # first visible key of each query row
    for i in range(nq):
        j0[i] = 0
        if sliding_window > 0 and p0 + i - sliding_window + 1 > 0:
            j0[i] = p0 + i - sliding_window + 1
        for hq in range(group):
            r = i * group + hq
            m[r] = -np.inf
            lsum[r] = 0.0
            for d in range(head_dim):
                qs[r, d] = q[t0 + i, h0 + hq, d] * scale32
                acc[r, d] = 0.0
    simd = block_size == LANES and head_dim % CHUNK == 0  # kernels/attention_simd.py applies
    p_last = p0 + nq - 1
    b_last = p_last // block_size
    tile_bytes = head_dim * block_size * k_cache.itemsize  # one (block, kv head) tile of K or V
    for bi in range(j0[0] // block_size, b_last + 1):
        blk = block_tables[s, bi]
        if bi < b_last:  # start loading the next block's K and V tiles (see kernels/prefetch.py)
            nxt = block_tables[s, bi + 1]
            k_next = k_cache[nxt, g].ctypes.data
            v_next = v_cache[nxt, g].ctypes.data
            for off in range(0, tile_bytes, 64):
                prefetch(k_next + off)
                prefetch(v_next + off)
        base = bi * block_size
        # Query rows that see this block: a contiguous range (first/last visible key grow with i).
        ia = nq
        ib = 0
        for i in range(nq):
            if j0[i] < base + block_size and p0 + i >= base:
                ia = min(ia, i)
                ib = i + 1
        if ia >= ib:
            continue
        if simd:
            _block_simd(qs, acc, m, lsum, ia, ib, group, j0, p0, base, k_cache, v_cache, k_scale,
                        v_scale, quant, blk, g, head_dim, block_size)
            continue
        # 1) scores of every key of the block (lanes past a row's visible range are never used).
        block_scores(qs, ia * group, ib * group, k_cache, blk, g, head_dim, block_size, sc)
        if quant:
            for r in range(ia * group, ib * group):
                for o in range(block_size):
                    sc[r, o] *= k_scale[blk, g, o]
        for i in range(ia, ib):
            o0 = max(j0[i] - base, 0)
            o1 = min(p0 + i - base + 1, block_size)
            for hq in range(group):
                r = i * group + hq
                # 2) online softmax: rescale the running state once per block if the max grew.
                bm = m[r]
                for o in range(o0, o1):
                    if sc[r, o] > bm:
                        bm = sc[r, o]
                if bm > m[r]:
                    if lsum[r] > 0.0:
                        alpha = exp_f32(m[r] - bm)
                        lsum[r] *= alpha
                        for d in range(head_dim):
                            acc[r, d] *= alpha
                    m[r] = bm
                # 3) weights (a vectorised float32 exp), summed in key order, then the V rows.
                mr = m[r]
                for o in range(o0, o1):
                    w[r, o] = exp_f32(sc[r, o] - mr)
                for o in range(o0, o1):
                    lsum[r] += w[r, o]
                if quant:
                    for o in range(o0, o1):
                        w[r, o] *= v_scale[blk, g, o]
                accumulate_v(acc, r, w, o0, o1, v_cache, blk, g, head_dim)
    for i in range(nq):
        for hq in range(group):
            r = i * group + hq
            inv = np.float32(1.0 / lsum[r])
            for d in range(head_dim):
                out[t0 + i, h0 + hq, d] = acc[r, d] * inv


@jit
def _block_simd(qs, acc, m, lsum, ia, ib, group, j0, p0, base, k_cache, v_cache, k_scale, v_scale,
                quant, blk, g, head_dim, block_size):
    # One block for query rows ia..ib-1 (each with its G heads, in calls of up to MAX_ROWS rows).
    k_addr = k_cache[blk, g].ctypes.data
    v_addr = v_cache[blk, g].ctypes.data
    ks_addr = k_scale[blk, g].ctypes.data if quant else 0
    vs_addr = v_scale[blk, g].ctypes.data if quant else 0
    for i in range(ia, ib):
        o0 = max(j0[i] - base, 0)
        o1 = min(p0 + i - base + 1, block_size)
        r = i * group
        while r < (i + 1) * group:
            n = min(MAX_ROWS, (i + 1) * group - r)
            qa = qs.ctypes.data + r * head_dim * 4
            aa = acc.ctypes.data + r * head_dim * 4
            ma = m.ctypes.data + r * 4
            la = lsum.ctypes.data + r * 8
            if n == 4:
                attend_block(k_cache, k_addr, v_cache, v_addr, qa, aa, ma, la, ks_addr, vs_addr, o0, o1,
                             head_dim, 4, quant)
            elif n == 3:
                attend_block(k_cache, k_addr, v_cache, v_addr, qa, aa, ma, la, ks_addr, vs_addr, o0, o1,
                             head_dim, 3, quant)
            elif n == 2:
                attend_block(k_cache, k_addr, v_cache, v_addr, qa, aa, ma, la, ks_addr, vs_addr, o0, o1,
                             head_dim, 2, quant)
            else:
                attend_block(k_cache, k_addr, v_cache, v_addr, qa, aa, ma, la, ks_addr, vs_addr, o0, o1,
                             head_dim, 1, quant)
            r += n


@jit
def _tiles(query_start_loc, tile):
    # -> (seq, first row, row count) of every tile: each sequence's rows cut into runs of `tile`.
    n_seq = query_start_loc.shape[0] - 1
    n = 0
    for s in range(n_seq):
        n += (query_start_loc[s + 1] - query_start_loc[s] + tile - 1) // tile
    seq = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    count = np.empty(n, np.int64)
    k = 0
    for s in range(n_seq):
        t = query_start_loc[s]
        while t < query_start_loc[s + 1]:
            seq[k] = s
            first[k] = t
            count[k] = min(tile, query_start_loc[s + 1] - t)
            t += tile
            k += 1
    return seq, first, count


@jit
def _zero_padding_rows(query_start_loc, out):
    for t in range(max(query_start_loc[query_start_loc.shape[0] - 1], 0), out.shape[0]):
        for h in range(out.shape[1]):
            for d in range(out.shape[2]):
                out[t, h, d] = 0.0


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
    """Attention over float32 or float16 (uint16 half bits) paged caches.

    q [T, H, Dh] f32; k_cache [num_blocks, Hkv, Dh, block_size] f32 or uint16 (K transposed);
    v_cache [num_blocks, Hkv, block_size, Dh] of the same type; block_tables [S, max_blocks] int32;
    query_start_loc [S+1] int32; seq_lens [S] int32; scale float; sliding_window int (<= 0: off);
    out [T, H, Dh] f32 (written).
    """
    n_kv = k_cache.shape[1]
    _zero_padding_rows(query_start_loc, out)
    t_seq, t_first, t_count = _tiles(query_start_loc, TILE)
    n_items = t_seq.shape[0] * n_kv  # item = tile * Hkv + kv_head
    r, c = _grid(n_items)
    no_scale = np.zeros((1, 1, 1), np.float32)  # [1, 1, 1] placeholder, never read (quant=False)
    for i in numba.prange(r * c):
        item = _item_of(i, r, c)
        if item >= n_items:
            continue
        tl = item // n_kv
        _attend_tile(t_first[tl], t_count[tl], t_seq[tl], item % n_kv, q, k_cache, v_cache, no_scale,
                     no_scale, False, block_tables, query_start_loc, seq_lens, scale, sliding_window, out)


@parallel_jit
def paged_attention_int8(q, k_cache, v_cache, k_scale, v_scale, block_tables, query_start_loc,
                         seq_lens, scale, sliding_window, out):
    """Attention over int8 paged caches, dequantised in the kernel (x = q * scale).

    As ``paged_attention`` with k_cache [num_blocks, Hkv, Dh, block_size] int8 (transposed),
    v_cache [num_blocks, Hkv, block_size, Dh] int8 and k_scale, v_scale [num_blocks, Hkv, block_size]
    f32 (as written by ``write_kv_int8``).
    """
    n_kv = k_cache.shape[1]
    _zero_padding_rows(query_start_loc, out)
    t_seq, t_first, t_count = _tiles(query_start_loc, TILE)
    n_items = t_seq.shape[0] * n_kv  # item = tile * Hkv + kv_head
    r, c = _grid(n_items)
    for i in numba.prange(r * c):
        item = _item_of(i, r, c)
        if item >= n_items:
            continue
        tl = item // n_kv
        _attend_tile(t_first[tl], t_count[tl], t_seq[tl], item % n_kv, q, k_cache, v_cache, k_scale,
                     v_scale, True, block_tables, query_start_loc, seq_lens, scale, sliding_window, out)
