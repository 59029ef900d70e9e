"""RMSNorm kernels.

Promise: out[t] = x[t] * (1 / sqrt(mean(x[t]^2) + eps)) * weight, for every token row t independently.
The sum of squares is accumulated in float64 (more accurate than the float32 sequential sum of a
PyTorch reference, and still deterministic); the normaliser is rounded to float32 and the products
are done in float32 in the same order as HF's ``LlamaRMSNorm`` (``(x * rsqrt) * weight``).

Gemma note: Gemma's norm is ``x * (1 + w)``; GGUF converters already store ``1 + w``, so callers pass
the stored weight as is.

Every row is computed by one thread with one fixed summation order, so results are batch invariant.
"""

from __future__ import annotations

import math

import numpy as np

from kernels.jit import jit


@jit
def _norm_row_inv(x, t, eps):
    # x: [T, D] f32 -> float32 normaliser for row t (float64 accumulation, cast once).
    d_model = x.shape[1]
    ss = 0.0
    for d in range(d_model):
        v = np.float64(x[t, d])
        ss += v * v
    return np.float32(1.0 / math.sqrt(ss / d_model + eps))


@jit
def rms_norm(x, weight, eps, out):
    """out [T, D] f32 <- RMSNorm(x [T, D] f32) * weight [D] f32.  ``out`` may alias ``x``."""
    n_tok = x.shape[0]
    d_model = x.shape[1]
    for t in range(n_tok):
        inv = _norm_row_inv(x, t, eps)
        for d in range(d_model):
            out[t, d] = (x[t, d] * inv) * weight[d]


@jit
def rms_norm_heads(x, weight, eps):
    """In place per-head RMSNorm (Gemma 3 QK-norm): x [T, H, Dh] f32, weight [Dh] f32.

    Each (token, head) vector of Dh values is normalised independently.
    """
    n_tok = x.shape[0]
    n_head = x.shape[1]
    head_dim = x.shape[2]
    for w in range(n_tok * n_head):
        t = w // n_head
        h = w % n_head
        ss = 0.0
        for d in range(head_dim):
            v = np.float64(x[t, h, d])
            ss += v * v
        inv = np.float32(1.0 / math.sqrt(ss / head_dim + eps))
        for d in range(head_dim):
            x[t, h, d] = (x[t, h, d] * inv) * weight[d]
