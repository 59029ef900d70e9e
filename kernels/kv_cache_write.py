"""Write this step's K/V rows into the paged KV cache.

Cache layout: [num_blocks, block_size, Hkv, Dh]; token t goes to slot = slot_mapping[t] =
block_id * block_size + offset; slot < 0 marks a padding token and is skipped.

float16 caches are not supported: Numba 0.68 has no float16 type on the CPU target (an f16 array
argument fails typing with ``NotImplementedError: float16``).  Supported caches: float32 (``write_kv``)
and int8 with per-(token, kv head) float32 scales (``write_kv_int8``).
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.jit import jit, parallel_jit


@jit
def _quant_row(x, t, g, head_dim, cache, scales, b, o):
    # x [T, Hkv, Dh] f32 row (t, g) -> cache[b, o, g, :] int8, scales[b, o, g] f32.
    amax = np.float32(0.0)
    for d in range(head_dim):
        a = abs(x[t, g, d])
        if a > amax:
            amax = a
    sc = amax / np.float32(127.0)
    scales[b, o, g] = sc
    if sc == 0:
        for d in range(head_dim):
            cache[b, o, g, d] = 0
        return
    for d in range(head_dim):
        qv = np.rint(x[t, g, d] / sc)
        # x / (amax/127) can round to 127.00001: clip keeps the promise |q| <= 127.
        if qv > 127.0:
            qv = 127.0
        elif qv < -127.0:
            qv = -127.0
        cache[b, o, g, d] = np.int8(qv)


@parallel_jit
def write_kv(k, v, slot_mapping, k_cache, v_cache):
    """k, v [T, Hkv, Dh] f32 -> k_cache, v_cache [num_blocks, block_size, Hkv, Dh] f32 at
    slot_mapping [T] int64 (negative slots skipped).  Slots are assumed distinct."""
    n_tok, n_kv, head_dim = k.shape
    block_size = k_cache.shape[1]
    for t in numba.prange(n_tok):
        slot = slot_mapping[t]
        if slot < 0:
            continue
        b = slot // block_size
        o = slot % block_size
        for g in range(n_kv):
            for d in range(head_dim):
                k_cache[b, o, g, d] = k[t, g, d]
                v_cache[b, o, g, d] = v[t, g, d]


@parallel_jit
def write_kv_int8(k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale):
    """Quantise and write K/V into int8 caches.

    k, v [T, Hkv, Dh] f32; slot_mapping [T] int64; k_cache, v_cache [num_blocks, block_size, Hkv, Dh]
    int8; k_scale, v_scale [num_blocks, block_size, Hkv] f32.
    Symmetric per (token, kv head): scale = max|x| / 127 (float32), q = rint(x / scale) clipped to
    [-127, 127]; an all-zero row stores scale 0 and zeros.  Dequantised value = q * scale.
    """
    n_tok, n_kv, head_dim = k.shape
    block_size = k_cache.shape[1]
    for t in numba.prange(n_tok):
        slot = slot_mapping[t]
        if slot < 0:
            continue
        b = slot // block_size
        o = slot % block_size
        for g in range(n_kv):
            _quant_row(k, t, g, head_dim, k_cache, k_scale, b, o)
            _quant_row(v, t, g, head_dim, v_cache, v_scale, b, o)
