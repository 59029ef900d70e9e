"""One decoder layer (llama, qwen2, gemma3 blocks), and every layer of a step in one compiled call.

`decoder_layer` is the only definition of a layer's arithmetic: pre-norm, q/k/v projection (+ bias),
optional per-head q/k norms (Gemma 3), RoPE, KV write and paged attention, output projection
(+ optional post-norm), residual; then the gated FFN (SiLU or GELU-tanh) the same way.

- `decoder_layers` runs it for every layer of a uniform model (the weights stacked [L, ...] in one
  `LayerParams`, the KV arrays of one group [L, ...]): one call per step instead of about fifteen
  kernel calls per layer from Python, which at batch 1 cost as much as the arithmetic.
- Models whose layers differ in weight format (e.g. Q4_K_M: some layers' ffn_down in Q6_K) cannot
  be stacked; the caller then calls `decoder_layer` once per layer.
- Layers with float weights run the same function interpreted (`decoder_layer.py_func`): their
  matmuls go through NumPy's BLAS, which compiled code cannot call (`linear` below has a Python
  body for that); every other step still runs the compiled kernels.

So the fused and per-layer paths give bit-identical results by construction.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba.core import errors, types
from numba.extending import overload

from pagedserve.kernels.activations import add_inplace, gelu_tanh_mul, silu_mul, silu_mul_serial
from pagedserve.kernels.jit import jit
from pagedserve.kernels.kv_cache_write import write_kv, write_kv_int8
from pagedserve.kernels.paged_attention import paged_attention, paged_attention_int8
from pagedserve.kernels.quant_matmul import matmul_codes
from pagedserve.kernels.rms_norm import rms_norm, rms_norm_heads
from pagedserve.kernels.rope import apply_rope_table, rope_table

# Up to this many tokens, element-wise work runs on the calling thread: waking the thread pool
# costs more than it saves (and, on a busy machine, can stall for a whole scheduler time slice).
SERIAL_TOKENS = 16


class Linear(NamedTuple):
    """One weight matrix in the layout of `model/weight_layout.py` (codes' rank: 2 float32 [N, K],
    3 codes in nibbles (q4, q5, q6), 4 int8 codes (q8); scale and minv in a storage mode of
    `kernels/group_scales.py`). A layer's projection is a tuple of parts: one when fused, else
    (q, k, v) or (gate, up) side by side along the output."""

    codes: np.ndarray
    scale: np.ndarray
    minv: np.ndarray
    num_out: int  # N


class LayerParams(NamedTuple):
    """One layer's weights; absent optional vectors are empty ([0]). The same structure with a
    leading [L] axis on every array holds a whole uniform model (`decoder_layers`)."""

    attn_norm: np.ndarray  # [D]
    qkv: tuple  # of Linear: [q_size + 2 kv_size, D]
    qkv_bias: np.ndarray  # [q_size + 2 kv_size] (qwen2) or [0]
    q_norm: np.ndarray  # [Dh] (gemma3) or [0]
    k_norm: np.ndarray  # [Dh] (gemma3) or [0]
    attn_output: tuple  # of one Linear: [D, q_size]
    post_attn_norm: np.ndarray  # [D] (gemma3) or [0]
    ffn_norm: np.ndarray  # [D]
    gate_up: tuple  # of Linear: [2 F, D], gate rows then up rows
    ffn_down: tuple  # of one Linear: [D, F]
    post_ffn_norm: np.ndarray  # [D] (gemma3) or [0]


class KVArrays(NamedTuple):
    """A layer's KV cache (see kernels/kv_cache_write.py), or a group's with a leading [L] axis."""

    k: np.ndarray  # [num_blocks, Hkv, Dh, block_size]: float32, uint16 half bits or int8
    v: np.ndarray  # [num_blocks, Hkv, block_size, Dh]
    k_scale: np.ndarray  # [num_blocks, Hkv, block_size] float32 (int8 caches), else [0, 0, 0]
    v_scale: np.ndarray
    sliding_window: int  # 0 = full attention


class StepArrays(NamedTuple):
    """Where the tokens of the step sit, for one KV group (as `model/forward.AttentionMetadata`)."""

    slot_mapping: np.ndarray  # [T] int64
    block_table: np.ndarray  # [S, max_blocks] int32
    query_start_loc: np.ndarray  # [S+1] int32
    seq_lens: np.ndarray  # [S] int32


class LayerDims(NamedTuple):
    """The model's shapes and constants the layer arithmetic needs."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    eps: float
    attn_scale: np.float32
    rope_neox: bool
    gelu: bool  # GELU-tanh gating (gemma3), else SiLU


class Scratch(NamedTuple):
    """Per-step work arrays, reused by every layer."""

    h: np.ndarray  # [T, D]
    qkv: np.ndarray  # [T, q_size + 2 kv_size]
    q: np.ndarray  # [T, H, Dh]
    k: np.ndarray  # [T, Hkv, Dh]
    v: np.ndarray  # [T, Hkv, Dh]
    attn: np.ndarray  # [T, H, Dh]
    o: np.ndarray  # [T, D]
    gate_up: np.ndarray  # [T, 2 F]
    act: np.ndarray  # [T, F]


@jit
def make_scratch(num_tokens, dims):
    t, nh, nkv, hd, f = num_tokens, dims.num_heads, dims.num_kv_heads, dims.head_dim, dims.ffn_size
    return Scratch(
        np.empty((t, dims.hidden_size), np.float32), np.empty((t, (nh + 2 * nkv) * hd), np.float32),
        np.empty((t, nh, hd), np.float32), np.empty((t, nkv, hd), np.float32),
        np.empty((t, nkv, hd), np.float32), np.empty((t, nh, hd), np.float32),
        np.empty((t, dims.hidden_size), np.float32), np.empty((t, 2 * f), np.float32),
        np.empty((t, f), np.float32),
    )


@jit
def _matmul_quantized(x, codes, scale, minv, out):
    # the compiled dispatch (code layout, scale mode) for interpreted layers' quantized parts
    matmul_codes(x, codes, scale, minv, out)


def _matmul_part(x, part, out):
    if part.codes.ndim == 2:  # float weights: BLAS
        np.dot(x, part.codes.T, out=out)
    else:
        _matmul_quantized(x, part.codes, part.scale, part.minv, out)


def linear(x, parts, out):
    """out [M, N] = x [M, K] @ W^T for W the parts (tuple of Linear) stacked along N.

    This Python body serves interpreted layers (any weights); compiled code gets the overload
    below (quantized weights only)."""
    if len(parts) == 1:
        _matmul_part(x, parts[0], out)
        return
    col = 0
    for part in parts:
        tmp = np.empty((x.shape[0], part.num_out), np.float32)
        _matmul_part(x, part, tmp)
        out[:, col:col + part.num_out] = tmp
        col += part.num_out


@jit
def _matmul_columns(x, part, out, col):
    tmp = np.empty((x.shape[0], part.num_out), np.float32)
    matmul_codes(x, part.codes, part.scale, part.minv, tmp)
    out[:, col:col + part.num_out] = tmp
    return col + part.num_out


@overload(linear, jit_options={"cache": True, "nogil": True})
def _linear_compiled(x, parts, out):
    if not isinstance(parts, types.BaseTuple) or not 1 <= len(parts.types) <= 3:
        raise errors.TypingError("linear takes a tuple of 1 to 3 Linear parts")
    if any(p.types[0].ndim == 2 for p in parts.types):
        raise errors.TypingError("float weights need BLAS: run the layer interpreted (py_func)")
    n = len(parts.types)
    if n == 1:
        def one(x, parts, out):
            p = parts[0]
            matmul_codes(x, p.codes, p.scale, p.minv, out)
        return one
    if n == 2:
        def two(x, parts, out):
            _matmul_columns(x, parts[1], out, _matmul_columns(x, parts[0], out, 0))
        return two

    def three(x, parts, out):
        col = _matmul_columns(x, parts[0], out, 0)
        _matmul_columns(x, parts[2], out, _matmul_columns(x, parts[1], out, col))
    return three


def attend(q, k, v, kv, step, attn_scale, out):
    """Write k, v [T, Hkv, Dh] into the layer's cache, then out [T, H, Dh] = attention of q over it.
    (Python body for interpreted layers; compiled code gets the overload below.)"""
    if kv.k.dtype == np.int8:
        write_kv_int8(k, v, step.slot_mapping, kv.k, kv.v, kv.k_scale, kv.v_scale)
        paged_attention_int8(q, kv.k, kv.v, kv.k_scale, kv.v_scale, step.block_table,
                             step.query_start_loc, step.seq_lens, attn_scale, kv.sliding_window, out)
    else:  # float32 or half (uint16) cache: the kernels convert per element
        write_kv(k, v, step.slot_mapping, kv.k, kv.v)
        paged_attention(q, kv.k, kv.v, step.block_table, step.query_start_loc, step.seq_lens,
                        attn_scale, kv.sliding_window, out)


@overload(attend, jit_options={"cache": True, "nogil": True})
def _attend_compiled(q, k, v, kv, step, attn_scale, out):
    if kv.types[0].dtype == types.int8:
        def quantized(q, k, v, kv, step, attn_scale, out):
            write_kv_int8(k, v, step.slot_mapping, kv.k, kv.v, kv.k_scale, kv.v_scale)
            paged_attention_int8(q, kv.k, kv.v, kv.k_scale, kv.v_scale, step.block_table,
                                 step.query_start_loc, step.seq_lens, attn_scale, kv.sliding_window,
                                 out)
        return quantized

    def floating(q, k, v, kv, step, attn_scale, out):
        write_kv(k, v, step.slot_mapping, kv.k, kv.v)
        paged_attention(q, kv.k, kv.v, step.block_table, step.query_start_loc, step.seq_lens,
                        attn_scale, kv.sliding_window, out)
    return floating


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
def decoder_layer(x, w, kv, step, dims, cos, sin, s):
    """Run one layer on x [T, D] in place: w a LayerParams, kv the layer's KVArrays, step the
    StepArrays of its KV group, cos/sin [T, R/2] the RoPE table of its frequencies, s a Scratch."""
    num_tokens = x.shape[0]
    rms_norm(x, w.attn_norm, dims.eps, s.h)
    linear(s.h, w.qkv, s.qkv)
    _split_qkv(s.qkv, w.qkv_bias, s.q, s.k, s.v)
    if w.q_norm.shape[0] > 0:
        rms_norm_heads(s.q, w.q_norm, dims.eps)
        rms_norm_heads(s.k, w.k_norm, dims.eps)
    apply_rope_table(s.q, cos, sin, dims.rope_neox)
    apply_rope_table(s.k, cos, sin, dims.rope_neox)
    attend(s.q, s.k, s.v, kv, step, dims.attn_scale, s.attn)
    linear(s.attn.reshape(num_tokens, dims.num_heads * dims.head_dim), w.attn_output, s.o)
    if w.post_attn_norm.shape[0] > 0:
        rms_norm(s.o, w.post_attn_norm, dims.eps, s.o)
    add_inplace(x, s.o)

    rms_norm(x, w.ffn_norm, dims.eps, s.h)
    linear(s.h, w.gate_up, s.gate_up)
    if dims.gelu:
        gelu_tanh_mul(s.gate_up, s.act)
    elif num_tokens <= SERIAL_TOKENS:
        silu_mul_serial(s.gate_up, s.act)
    else:
        silu_mul(s.gate_up, s.act)
    linear(s.act, w.ffn_down, s.o)
    if w.post_ffn_norm.shape[0] > 0:
        rms_norm(s.o, w.post_ffn_norm, dims.eps, s.o)
    add_inplace(x, s.o)


@jit
def _one_part(parts, layer):
    p = parts[0]
    return (Linear(p.codes[layer], p.scale[layer], p.minv[layer], p.num_out),)


@jit
def _layer_of(stack, layer):
    """The LayerParams of one layer of a stacked model (views, no copy)."""
    return LayerParams(
        stack.attn_norm[layer], _one_part(stack.qkv, layer), stack.qkv_bias[layer],
        stack.q_norm[layer], stack.k_norm[layer], _one_part(stack.attn_output, layer),
        stack.post_attn_norm[layer], stack.ffn_norm[layer], _one_part(stack.gate_up, layer),
        _one_part(stack.ffn_down, layer), stack.post_ffn_norm[layer],
    )


@jit
def _differ(a, b):
    for i in range(a.shape[0]):
        if a[i] != b[i]:
            return True
    return False


@jit
def decoder_layers(x, positions, inv_freqs, stack, kv, step, dims):
    """Run every layer on x [T, D] in place: stack a LayerParams of [L, ...] arrays (one fused
    part per projection), kv the KVArrays of the one KV group [L, ...], positions [T] int64,
    inv_freqs [L, R/2] the RoPE frequencies of each layer."""
    num_tokens = x.shape[0]
    s = make_scratch(num_tokens, dims)
    half = inv_freqs.shape[1]
    cos = np.empty((num_tokens, half), dtype=np.float32)  # rotation table of the current frequencies
    sin = np.empty((num_tokens, half), dtype=np.float32)
    for layer in range(stack.attn_norm.shape[0]):
        if layer == 0 or _differ(inv_freqs[layer], inv_freqs[layer - 1]):
            rope_table(positions, inv_freqs[layer], cos, sin)
        layer_kv = KVArrays(kv.k[layer], kv.v[layer], kv.k_scale[layer], kv.v_scale[layer],
                            kv.sliding_window)
        decoder_layer(x, _layer_of(stack, layer), layer_kv, step, dims, cos, sin, s)
