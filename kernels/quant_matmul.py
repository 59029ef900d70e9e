"""Quantized matrix multiply: out[M, N] = x[M, K] @ W[N, K]^T for weights in the tiled layout.

Tiled layout (built once at load by `model/weight_layout.py`): output rows are grouped in tiles of
T (64) so that the innermost loop runs over T output rows at once: a few SIMD registers of float32
lanes, with no horizontal reduction. For tile `t`, group `g` (of G consecutive inputs), input `j`:

    q8: codes [NT, NG, G, T] int8/uint8   code of output row T*t+r for input G*g+j
    q4: codes [NT, NG, 16, T] uint8       low nibble: input 32g+j, high nibble: input 32g+16+j
    scale, minv [NT, NG, T] float32       w = scale * code + minv

Per group the kernel accumulates code * x in a fixed order and then adds
scale * partial + minv * sum(x over the group). Every output value goes through the same sequence
of float operations whatever M is and whatever other rows share the batch (batch invariance).
Up to ROWS_PER_PASS activation rows share each weight load, so the weight stream is read once per
ROWS_PER_PASS rows. Activations stay float32 (no 8-bit activation rounding, unlike llama.cpp), so
results match a float32 reference to float32 rounding.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.jit import jit, parallel_jit

ROWS_PER_PASS = 8


@jit
def group_sums(x, group_size, xsum):
    """xsum[m, g] = sum of x[m, g*G:(g+1)*G] in ascending order.  x [M, K] f32 -> xsum [M, K/G]."""
    M, K = x.shape
    num_groups = K // group_size
    for m in range(M):
        for g in range(num_groups):
            s = np.float32(0.0)
            for j in range(group_size):
                s += x[m, g * group_size + j]
            xsum[m, g] = s


@jit
def _finish_group(part, acc, scale_g, minv_g, xsum, m0, mc, g):
    """acc[mi] += scale_g * part[mi] + minv_g * xsum[m0+mi, g]; then part[mi] = 0."""
    R = acc.shape[1]
    for mi in range(mc):
        xs = xsum[m0 + mi, g]
        am = acc[mi]
        pm = part[mi]
        for r in range(R):
            am[r] += scale_g[r] * pm[r] + minv_g[r] * xs
            pm[r] = 0.0


@jit
def _store_tile(acc, out, m0, mc, n0):
    R = acc.shape[1]
    N = out.shape[1]
    for mi in range(mc):
        for r in range(min(R, N - n0)):
            out[m0 + mi, n0 + r] = acc[mi, r]


@parallel_jit
def matmul_q8(x, codes, scale, minv, out):
    """out [M, N] = x [M, K] @ dequant(codes [NT, NG, G, T], scale, minv [NT, NG, T])^T."""
    M, K = x.shape
    NT, NG, G, R = codes.shape
    xsum = np.empty((M, NG), dtype=np.float32)
    group_sums(x, G, xsum)
    for t in numba.prange(NT):
        acc = np.empty((ROWS_PER_PASS, R), dtype=np.float32)
        part = np.zeros((ROWS_PER_PASS, R), dtype=np.float32)
        w = np.empty(R, dtype=np.float32)
        for m0 in range(0, M, ROWS_PER_PASS):
            mc = min(ROWS_PER_PASS, M - m0)
            acc[:, :] = 0.0
            for g in range(NG):
                for j in range(G):
                    cj = codes[t, g, j]
                    for r in range(R):
                        w[r] = np.float32(cj[r])
                    k = g * G + j
                    for mi in range(mc):
                        xv = x[m0 + mi, k]
                        pm = part[mi]
                        for r in range(R):
                            pm[r] += w[r] * xv
                _finish_group(part, acc, scale[t, g], minv[t, g], xsum, m0, mc, g)
            _store_tile(acc, out, m0, mc, t * R)


@parallel_jit
def matmul_q4(x, codes, scale, minv, out):
    """Like matmul_q8 for nibble-packed codes [NT, NG, 16, T] (group size 32)."""
    M, K = x.shape
    NT, NG, H, R = codes.shape
    xsum = np.empty((M, NG), dtype=np.float32)
    group_sums(x, 2 * H, xsum)
    for t in numba.prange(NT):
        acc = np.empty((ROWS_PER_PASS, R), dtype=np.float32)
        part = np.zeros((ROWS_PER_PASS, R), dtype=np.float32)
        lo = np.empty(R, dtype=np.float32)
        hi = np.empty(R, dtype=np.float32)
        for m0 in range(0, M, ROWS_PER_PASS):
            mc = min(ROWS_PER_PASS, M - m0)
            acc[:, :] = 0.0
            for g in range(NG):
                base = g * 2 * H
                for j in range(H):
                    cj = codes[t, g, j]
                    for r in range(R):
                        b = np.int32(cj[r])
                        lo[r] = np.float32(b & 15)
                        hi[r] = np.float32(b >> 4)
                    for mi in range(mc):
                        xa = x[m0 + mi, base + j]
                        xb = x[m0 + mi, base + H + j]
                        pm = part[mi]
                        for r in range(R):
                            pm[r] += lo[r] * xa + hi[r] * xb
                _finish_group(part, acc, scale[t, g], minv[t, g], xsum, m0, mc, g)
            _store_tile(acc, out, m0, mc, t * R)
