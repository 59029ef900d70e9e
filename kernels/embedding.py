"""Embedding lookup: dequantize the rows of token ids from a weight in the tiled layout.

The layout is the one of `kernels/quant_matmul.py` (row n lives in tile n // T, lane n % T), so a
tied output matrix and the embedding table share one copy of the weights.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.jit import parallel_jit


@parallel_jit
def embed_rows_q8(codes, scale, minv, token_ids, row_scale, out):
    """out [T, K] = row_scale * W[token_ids]; codes [NT, NG, G, T] int8/uint8, scale/minv [NT, NG, T]."""
    NT, NG, G, R = codes.shape
    for i in numba.prange(token_ids.shape[0]):
        n = token_ids[i]
        t = n // R
        r = n % R
        for g in range(NG):
            s = scale[t, g, r]
            m = minv[t, g, r]
            for j in range(G):
                out[i, g * G + j] = (s * np.float32(codes[t, g, j, r]) + m) * row_scale


@parallel_jit
def embed_rows_q4(codes, scale, minv, token_ids, row_scale, out):
    """Like embed_rows_q8 for nibble-packed codes [NT, NG, 16, T] (group size 32)."""
    NT, NG, H, R = codes.shape
    for i in numba.prange(token_ids.shape[0]):
        n = token_ids[i]
        t = n // R
        r = n % R
        for g in range(NG):
            s = scale[t, g, r]
            m = minv[t, g, r]
            for j in range(H):
                b = np.int32(codes[t, g, j, r])
                out[i, g * 2 * H + j] = (s * np.float32(b & 15) + m) * row_scale
                out[i, g * 2 * H + H + j] = (s * np.float32(b >> 4) + m) * row_scale
