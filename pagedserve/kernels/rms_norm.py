"""RMSNorm kernels.

Promise: out[t] = x[t] * (1 / sqrt(mean(x[t]^2) + eps)) * weight, for every token row t independently.
The sum of squares is accumulated in float64 (more accurate than the float32 sequential sum of a
PyTorch reference; eight interleaved partial sums in a fixed order, so still deterministic); the
normaliser is rounded to float32 and the products are done in float32 in the same order as HF's
``LlamaRMSNorm`` (``(x * rsqrt) * weight``).

Gemma note: Gemma's norm is ``x * (1 + w)``; GGUF converters already store ``1 + w``, so callers pass
the stored weight as is.

Every row is computed by one thread with one fixed summation order, so results are batch invariant.
"""

from __future__ import annotations

import math

import numpy as np

from pagedserve.kernels.jit import jit


@jit
def _sum_squares(row):
    # Eight float64 partial sums (lane j takes d = j mod 8, ascending), folded pairwise, then the
    # tail: a fixed order, and eight independent chains instead of one (a single chain of D
    # dependent adds was most of the norm's time).
    n = row.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = n - n % 8
    for d in range(0, n8, 8):
        s0 += np.float64(row[d]) * np.float64(row[d])
        s1 += np.float64(row[d + 1]) * np.float64(row[d + 1])
        s2 += np.float64(row[d + 2]) * np.float64(row[d + 2])
        s3 += np.float64(row[d + 3]) * np.float64(row[d + 3])
        s4 += np.float64(row[d + 4]) * np.float64(row[d + 4])
        s5 += np.float64(row[d + 5]) * np.float64(row[d + 5])
        s6 += np.float64(row[d + 6]) * np.float64(row[d + 6])
        s7 += np.float64(row[d + 7]) * np.float64(row[d + 7])
    ss = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for d in range(n8, n):
        ss += np.float64(row[d]) * np.float64(row[d])
    return ss


@jit
def _norm_row_inv(x, t, eps):
    # x: [T, D] f32 -> float32 normaliser for row t (float64 accumulation, cast once).
    return np.float32(1.0 / math.sqrt(_sum_squares(x[t]) / x.shape[1] + eps))


@jit
def _scale_row(src, inv, weight, dst):
    for d in range(dst.shape[0]):
        dst[d] = (src[d] * inv) * weight[d]


@jit
def rms_norm(x, weight, eps, out):
    """out [T, D] f32 <- RMSNorm(x [T, D] f32) * weight [D] f32.  ``out`` may alias ``x``."""
    for t in range(x.shape[0]):
        _scale_row(x[t], _norm_row_inv(x, t, eps), weight, out[t])


@jit
def rms_norm_heads(x, weight, eps):
    """In place per-head RMSNorm (Gemma 3 QK-norm): x [T, H, Dh] f32, weight [Dh] f32.

    Each (token, head) vector of Dh values is normalised independently.
    """
    head_dim = x.shape[2]
    for t in range(x.shape[0]):
        for h in range(x.shape[1]):
            row = x[t, h]
            inv = np.float32(1.0 / math.sqrt(_sum_squares(row) / head_dim + eps))
            _scale_row(row, inv, weight, row)
