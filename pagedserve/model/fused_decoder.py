"""All decoder layers of a step in one compiled call (the fast path for uniform models).

Why: the generic forward pass (`model/forward.py`) calls about fifteen kernels per layer from
Python; at batch 1 that dispatch costs as much as the arithmetic. This function runs the same
kernels, in the same order, from compiled code: the results are bit-identical to the generic path
(tested), only the per-call overhead goes away.

It applies to pre-norm llama/qwen2-style blocks whose weights were stacked at load
(`model/layer_stack.py`), with a float32 or float16 (half bits in uint16) KV cache in one group.
Everything else takes the generic path.
"""

from __future__ import annotations

import numpy as np

from pagedserve.kernels.activations import add_inplace, silu_mul, silu_mul_serial
from pagedserve.kernels.jit import jit
from pagedserve.kernels.kv_cache_write import write_kv
from pagedserve.kernels.paged_attention import paged_attention
from pagedserve.kernels.quant_matmul import matmul_codes
from pagedserve.kernels.rms_norm import rms_norm
from pagedserve.kernels.rope import apply_rope_table, rope_table


# Up to this many tokens, element-wise work runs on the calling thread: waking the thread pool
# costs more than it saves (and, on a busy machine, can stall for a whole scheduler time slice).
SERIAL_TOKENS = 16


@jit
def _split_qkv(qkv, bias, q, k, v):
    """qkv [T, q+2kv] (+ bias [q+2kv] when non-empty) -> q [T, H, Dh], k, v [T, Hkv, Dh]."""
    nh, hd = q.shape[1], q.shape[2]
    nkv = k.shape[1]
    for t in range(qkv.shape[0]):
        for i in range(nh + 2 * nkv):  # head i of the row: q heads, then k, then v (contiguous)
            if i < nh:
                dst = q[t, i]
            elif i < nh + nkv:
                dst = k[t, i - nh]
            else:
                dst = v[t, i - nh - nkv]
            _copy_head(qkv[t, i * hd:(i + 1) * hd], bias, i * hd, dst)


@jit
def _copy_head(src, bias, b0, dst):
    # contiguous 1-D slices, a loop from 0: LLVM vectorises this (2-D index arithmetic per value
    # with // and % did not: 2.5 ns per value)
    if bias.shape[0] > 0:
        for d in range(dst.shape[0]):
            dst[d] = src[d] + bias[b0 + d]
    else:
        for d in range(dst.shape[0]):
            dst[d] = src[d]


@jit
def _differ(a, b):
    for i in range(a.shape[0]):
        if a[i] != b[i]:
            return True
    return False


@jit
def decoder_layers(x, positions, inv_freqs, neox, eps, num_heads, num_kv_heads, head_dim,
                   attn_norm, qkv_bias, qkv_codes, qkv_scale, qkv_minv,
                   o_codes, o_scale, o_minv, ffn_norm,
                   gu_codes, gu_scale, gu_minv, down_codes, down_scale, down_minv,
                   k_cache, v_cache, slot_mapping, block_table, query_start_loc, seq_lens,
                   attn_scale, sliding_window, ffn_size):
    """Run every layer on x [T, D] in place.

    Stacked weights are indexed [layer, ...]; k_cache, v_cache [L, num_blocks, ...] (float32, or
    uint16 holding half bits) are the one KV group's arrays; inv_freqs [L, R/2]. The metadata
    arrays are those of the generic path.
    """
    num_tokens, hidden = x.shape
    q_size = num_heads * head_dim
    kv_size = num_kv_heads * head_dim
    h = np.empty((num_tokens, hidden), dtype=np.float32)
    qkv = np.empty((num_tokens, q_size + 2 * kv_size), dtype=np.float32)
    q = np.empty((num_tokens, num_heads, head_dim), dtype=np.float32)
    k = np.empty((num_tokens, num_kv_heads, head_dim), dtype=np.float32)
    v = np.empty((num_tokens, num_kv_heads, head_dim), dtype=np.float32)
    attn = np.empty((num_tokens, num_heads, head_dim), dtype=np.float32)
    o = np.empty((num_tokens, hidden), dtype=np.float32)
    gate_up = np.empty((num_tokens, 2 * ffn_size), dtype=np.float32)
    act = np.empty((num_tokens, ffn_size), dtype=np.float32)
    half = inv_freqs.shape[1]
    cos = np.empty((num_tokens, half), dtype=np.float32)  # rotation table of the current frequencies
    sin = np.empty((num_tokens, half), dtype=np.float32)
    for layer in range(attn_norm.shape[0]):
        if layer == 0 or _differ(inv_freqs[layer], inv_freqs[layer - 1]):
            rope_table(positions, inv_freqs[layer], cos, sin)
        rms_norm(x, attn_norm[layer], eps, h)
        matmul_codes(h, qkv_codes[layer], qkv_scale[layer], qkv_minv[layer], qkv)
        _split_qkv(qkv, qkv_bias[layer], q, k, v)
        apply_rope_table(q, cos, sin, neox)
        apply_rope_table(k, cos, sin, neox)
        write_kv(k, v, slot_mapping, k_cache[layer], v_cache[layer])
        paged_attention(q, k_cache[layer], v_cache[layer], block_table, query_start_loc, seq_lens,
                        attn_scale, sliding_window, attn)
        matmul_codes(attn.reshape(num_tokens, q_size), o_codes[layer], o_scale[layer], o_minv[layer], o)
        add_inplace(x, o)
        rms_norm(x, ffn_norm[layer], eps, h)
        matmul_codes(h, gu_codes[layer], gu_scale[layer], gu_minv[layer], gate_up)
        if num_tokens <= SERIAL_TOKENS:
            silu_mul_serial(gate_up, act)
        else:
            silu_mul(gate_up, act)
        matmul_codes(act, down_codes[layer], down_scale[layer], down_minv[layer], o)
        add_inplace(x, o)
