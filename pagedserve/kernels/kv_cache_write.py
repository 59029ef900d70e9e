"""Write this step's K/V rows into the paged KV cache.

Cache layout (see ``kv_cache_shapes``), per physical block and kv head one contiguous tile:
  k_cache [num_blocks, Hkv, Dh, block_size]   K stored transposed: key index fastest
  v_cache [num_blocks, Hkv, block_size, Dh]   V row-major: feature index fastest
  k_scale, v_scale [num_blocks, Hkv, block_size] f32 (int8 caches only)
The transposed K lets ``paged_attention`` compute the scores of a whole block with the key index in
SIMD lanes (vertical multiply-adds, no horizontal reduction), which LLVM vectorises without
fastmath; V is consumed as ``acc[0:Dh] += w * v[key, 0:Dh]``, already vertical.

Token t goes to slot = slot_mapping[t] = block_id * block_size + offset; slot < 0 marks a padding
token and is skipped.

Supported caches: float32 and float16 (``write_kv``), and int8 with per-(token, kv head) float32
scales (``write_kv_int8``).  A float16 cache is a uint16 array holding IEEE half bits: Numba 0.68
has no float16 type on the CPU target (an np.float16 array argument fails typing), so
``kernels.half_float`` converts each value (round to nearest even, as NumPy's astype(np.float16)).
"""

from __future__ import annotations

import numpy as np

from pagedserve.kernels.half_float import to_cache_value
from pagedserve.kernels.jit import jit


def kv_cache_shapes(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int):
    """(k_shape, v_shape, scale_shape) of one layer's paged cache - the single source of the layout."""
    return (
        (num_blocks, num_kv_heads, head_dim, block_size),
        (num_blocks, num_kv_heads, block_size, head_dim),
        (num_blocks, num_kv_heads, block_size),
    )


@jit
def _quant_row(x, t, g, head_dim, cache, scales, b, o, transposed):
    # x [T, Hkv, Dh] f32 row (t, g) -> int8 at cache[b, g, :, o] (transposed K) or cache[b, g, o, :]
    # (V), scale at scales[b, g, o] f32.
    amax = np.float32(0.0)
    for d in range(head_dim):
        a = abs(x[t, g, d])
        if a > amax:
            amax = a
    sc = amax / np.float32(127.0)
    scales[b, g, o] = sc
    for d in range(head_dim):
        qi = np.int8(0)
        if sc != 0:
            qv = np.rint(x[t, g, d] / sc)
            # x / (amax/127) can round to 127.00001: clip keeps the promise |q| <= 127.
            if qv > 127.0:
                qv = 127.0
            elif qv < -127.0:
                qv = -127.0
            qi = np.int8(qv)
        if transposed:
            cache[b, g, d, o] = qi
        else:
            cache[b, g, o, d] = qi


@jit
def write_kv(k, v, slot_mapping, k_cache, v_cache):
    """k, v [T, Hkv, Dh] f32 -> k_cache [num_blocks, Hkv, Dh, block_size] (transposed) and
    v_cache [num_blocks, Hkv, block_size, Dh] at slot_mapping [T] int64 (negative slots
    skipped).  Slots are assumed distinct.  Caches are float32 (values stored exactly) or uint16
    (the bits of x.astype(np.float16))."""
    n_tok, n_kv, head_dim = k.shape
    block_size = k_cache.shape[3]
    for t in range(n_tok):
        slot = slot_mapping[t]
        if slot < 0:
            continue
        b = slot // block_size
        o = slot % block_size
        for g in range(n_kv):
            for d in range(head_dim):
                k_cache[b, g, d, o] = to_cache_value(k[t, g, d], k_cache)
                v_cache[b, g, o, d] = to_cache_value(v[t, g, d], v_cache)


@jit
def write_kv_int8(k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale):
    """Quantise and write K/V into int8 caches.

    k, v [T, Hkv, Dh] f32; slot_mapping [T] int64; k_cache [num_blocks, Hkv, Dh, block_size] int8
    (transposed), v_cache [num_blocks, Hkv, block_size, Dh] int8; k_scale, v_scale
    [num_blocks, Hkv, block_size] f32.
    Symmetric per (token, kv head): scale = max|x| / 127 (float32), q = rint(x / scale) clipped to
    [-127, 127]; an all-zero row stores scale 0 and zeros.  Dequantised value = q * scale.
    """
    n_tok, n_kv, head_dim = k.shape
    block_size = k_cache.shape[3]
    for t in range(n_tok):
        slot = slot_mapping[t]
        if slot < 0:
            continue
        b = slot // block_size
        o = slot % block_size
        for g in range(n_kv):
            _quant_row(k, t, g, head_dim, k_cache, k_scale, b, o, True)
            _quant_row(v, t, g, head_dim, v_cache, v_scale, b, o, False)
