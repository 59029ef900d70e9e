"""Quantized matrix multiply: out[M, N] = x[M, K] @ W[N, K]^T for weights in the tiled layout.

Tiled layout (built once at load by `model/weight_layout.py`): output rows are grouped in tiles of
T = 64 so that the innermost loop runs over 64 output rows at once (four AVX-512 registers of
float32 lanes, no horizontal reduction). For tile `t`, group `g` (of G consecutive inputs), input `j`:

    q8: codes [NT, NG, G, T] int8/uint8   code of output row T*t+r for input G*g+j
    q4: codes [NT, NG, 16, T] uint8       low nibble: input 32g+j, high nibble: input 32g+16+j
    scale, minv [NT, NG, T] float32       w = scale * code + minv

Per group the kernel accumulates code * x over the group's inputs in a fixed order, then adds
scale * partial and minv * sum(x over the group). Activations stay float32 (llama.cpp rounds them
to 8 bits), so results match a float32 reference to float32 rounding.

Speed comes from register tiles: a pass handles ROWS (4) activation rows against one weight tile,
so every weight code is converted once and used four times, and the 4 x 64 accumulators live in
stack scratch (`stack_array.py`) that LLVM keeps in registers. Rows left over (M % 4) take a
one-row pass. Both passes run the same sequence of float operations for every output value, so a
row's result is bit-identical whatever else shares the batch (batch invariance; tested).
"""

from __future__ import annotations

import numba
import numba.extending
import numpy as np
from numba import literally

from kernels.jit import contract_jit, contract_parallel_jit
from kernels.stack_array import stack_f32

ROWS = 4  # activation rows per register pass
TILE = 64  # output rows per tile (the layout's last axis)


@contract_jit
def group_sums(x, group_size, xsum):
    """xsum[m, g] = sum of x[m, g*G:(g+1)*G] in ascending order.  x [M, K] f32 -> xsum [M, K/G]."""
    M, K = x.shape
    for m in range(M):
        for g in range(K // group_size):
            s = np.float32(0.0)
            for j in range(group_size):
                s += x[m, g * group_size + j]
            xsum[m, g] = s


@contract_jit
def _finish(acc, part, scale_g, minv_g, xsum, m0, g, rows):
    """acc[mi] += scale_g * part[mi] + minv_g * xsum[m0+mi, g]; part[mi] = 0 (one fma each)."""
    for mi in range(rows):
        xs = xsum[m0 + mi, g]
        for r in range(TILE):
            acc[mi, r] += scale_g[r] * part[mi, r]
            acc[mi, r] += minv_g[r] * xs
            part[mi, r] = 0.0


@contract_jit
def _store(acc, out, m0, n0, rows):
    n = min(TILE, out.shape[1] - n0)
    for mi in range(rows):
        for r in range(n):
            out[m0 + mi, n0 + r] = acc[mi, r]


@contract_jit
def _q4_pass(x, codes, scale, minv, xsum, out, t, m0, rows):
    """Rows m0..m0+rows-1 of out against tile t; `rows` is a compile-time constant (1 or ROWS)."""
    literally(rows)
    half = codes.shape[2]
    part = numba.carray(stack_f32(256), (rows, TILE))  # [rows, TILE] (256 = ROWS * TILE)
    acc = numba.carray(stack_f32(256), (rows, TILE))
    lo = numba.carray(stack_f32(64), (TILE,))
    hi = numba.carray(stack_f32(64), (TILE,))
    for mi in range(rows):
        for r in range(TILE):
            acc[mi, r] = 0.0
            part[mi, r] = 0.0
    for g in range(codes.shape[1]):
        base = g * 2 * half
        for j in range(half):
            cj = codes[t, g, j]
            for r in range(TILE):
                b = cj[r]
                lo[r] = np.float32(np.uint8(b & 15))  # the uint8 casts keep LLVM in 8/32-bit lanes
                hi[r] = np.float32(np.uint8(b >> 4))
            for mi in range(rows):
                xa = x[m0 + mi, base + j]
                xb = x[m0 + mi, base + half + j]
                for r in range(TILE):
                    part[mi, r] += lo[r] * xa
                    part[mi, r] += hi[r] * xb
        _finish(acc, part, scale[t, g], minv[t, g], xsum, m0, g, rows)
    _store(acc, out, m0, t * TILE, rows)


@contract_jit
def _q8_pass(x, codes, scale, minv, xsum, out, t, m0, rows):
    """Like _q4_pass for one-code-per-byte tiles [NT, NG, G, TILE]."""
    literally(rows)
    group = codes.shape[2]
    part = numba.carray(stack_f32(256), (rows, TILE))
    acc = numba.carray(stack_f32(256), (rows, TILE))
    w = numba.carray(stack_f32(64), (TILE,))
    for mi in range(rows):
        for r in range(TILE):
            acc[mi, r] = 0.0
            part[mi, r] = 0.0
    for g in range(codes.shape[1]):
        for j in range(group):
            cj = codes[t, g, j]
            for r in range(TILE):
                w[r] = np.float32(cj[r])
            k = g * group + j
            for mi in range(rows):
                xv = x[m0 + mi, k]
                for r in range(TILE):
                    part[mi, r] += w[r] * xv
        _finish(acc, part, scale[t, g], minv[t, g], xsum, m0, g, rows)
    _store(acc, out, m0, t * TILE, rows)


@contract_jit
def _q4_tile(x, codes, scale, minv, xsum, out, t):
    M = x.shape[0]
    m0 = 0
    while m0 + ROWS <= M:
        _q4_pass(x, codes, scale, minv, xsum, out, t, m0, 4)
        m0 += ROWS
    while m0 < M:
        _q4_pass(x, codes, scale, minv, xsum, out, t, m0, 1)
        m0 += 1


@contract_jit
def _q8_tile(x, codes, scale, minv, xsum, out, t):
    M = x.shape[0]
    m0 = 0
    while m0 + ROWS <= M:
        _q8_pass(x, codes, scale, minv, xsum, out, t, m0, 4)
        m0 += ROWS
    while m0 < M:
        _q8_pass(x, codes, scale, minv, xsum, out, t, m0, 1)
        m0 += 1


@contract_parallel_jit
def matmul_q4(x, codes, scale, minv, out):
    """out [M, N] = x [M, K] f32 @ dequant(codes [NT, NG, 16, TILE] uint8, scale, minv [NT, NG, TILE])^T."""
    M = x.shape[0]
    NT, NG, H, R = codes.shape
    assert R == TILE, "codes must be tiled by TILE output rows"
    xsum = np.empty((M, NG), dtype=np.float32)
    group_sums(x, 2 * H, xsum)
    for t in numba.prange(NT):
        _q4_tile(x, codes, scale, minv, xsum, out, t)


@contract_parallel_jit
def matmul_q8(x, codes, scale, minv, out):
    """out [M, N] = x [M, K] f32 @ dequant(codes [NT, NG, G, TILE] int8/uint8, scale, minv)^T."""
    M = x.shape[0]
    NT, NG, G, R = codes.shape
    assert R == TILE, "codes must be tiled by TILE output rows"
    xsum = np.empty((M, NG), dtype=np.float32)
    group_sums(x, G, xsum)
    for t in numba.prange(NT):
        _q8_tile(x, codes, scale, minv, xsum, out, t)


def matmul_codes(x, codes, scale, minv, out):
    """Compiled-code dispatcher: the codes' dtype picks the kernel (uint8 = q4, int8 = q8)."""
    raise NotImplementedError("call from compiled code only")


@numba.extending.overload(matmul_codes, jit_options={"cache": True, "nogil": True})
def _matmul_codes_overload(x, codes, scale, minv, out):
    if codes.dtype == numba.types.uint8:
        return lambda x, codes, scale, minv, out: matmul_q4(x, codes, scale, minv, out)
    return lambda x, codes, scale, minv, out: matmul_q8(x, codes, scale, minv, out)
