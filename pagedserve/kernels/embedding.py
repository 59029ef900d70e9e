"""Embedding lookup: dequantize the rows of token ids from a weight in the tiled layout.

The layout is the one of `kernels/quant_matmul.py` (row n lives in tile n // 64, lane n % 64), so
a tied output matrix and the embedding table share one copy of the weights.
"""

from __future__ import annotations

import numba
import numpy as np

from pagedserve.kernels.half_float import as_f32
from pagedserve.kernels.int16_dot import TILE as _TILE
from pagedserve.kernels.jit import parallel_jit


@parallel_jit
def embed_rows_q8(codes, scale, minv, token_ids, row_scale, out):
    """out [T, K] = row_scale * W[token_ids]; codes [NT, NG, G/2, 128] int8 (pair p, row r, e at
    [t, g, p, 2r + e] = code of input 2p + e), scale/minv [NT, NG, 64] float32 or uint16 half bits."""
    NT, NG, NP, _ = codes.shape
    G = 2 * NP
    for i in numba.prange(token_ids.shape[0]):
        n = token_ids[i]
        t = n // _TILE
        r = n % _TILE
        for g in range(NG):
            s = as_f32(scale[t, g, r])
            m = as_f32(minv[t, g, r])
            for p in range(NP):
                for e in range(2):
                    code = np.float32(codes[t, g, p, 2 * r + e])
                    out[i, g * G + 2 * p + e] = (s * code + m) * row_scale


@parallel_jit
def embed_rows_q4(codes, scale, minv, token_ids, row_scale, out):
    """Like embed_rows_q8 for nibble-packed codes [NT, NG, 1024] (group size 32, kernels/nibble_dot.py):
    byte [t, g, 256d + 64c + 4r' + b] of row 16c + r' holds inputs 4d+b (low nibble) and 16+4d+b (high)."""
    NT, NG, _ = codes.shape
    for i in numba.prange(token_ids.shape[0]):
        n = token_ids[i]
        t = n // _TILE
        r = n % _TILE
        row_base = 64 * (r // 16) + 4 * (r % 16)
        for g in range(NG):
            s = as_f32(scale[t, g, r])
            m = as_f32(minv[t, g, r])
            for d in range(4):
                for b in range(4):
                    byte = np.int32(codes[t, g, 256 * d + row_base + b])
                    out[i, 32 * g + 4 * d + b] = (s * np.float32(byte & 15) + m) * row_scale
                    out[i, 32 * g + 16 + 4 * d + b] = (s * np.float32(byte >> 4) + m) * row_scale
