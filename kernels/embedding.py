"""Embedding lookup: dequantize the rows of token ids from a weight in the tiled layout.

The layout is the one of `kernels/quant_matmul.py` (row n lives in tile n // 64, lane n % 64), so
a tied output matrix and the embedding table share one copy of the weights.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.half_float import as_f32
from kernels.int16_dot import TILE as _TILE
from kernels.jit import parallel_jit


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
    """Like embed_rows_q8 for nibble-packed codes [NT, NG, 1024] (group size 32): byte
    [t, g, 128p + 64h + 2r' + e] of row 32h + r' holds inputs 2p+e (low nibble) and 16+2p+e (high)."""
    NT, NG, _ = codes.shape
    for i in numba.prange(token_ids.shape[0]):
        n = token_ids[i]
        t = n // _TILE
        r = n % _TILE
        h = r // 32
        rr = r % 32
        for g in range(NG):
            s = as_f32(scale[t, g, r])
            m = as_f32(minv[t, g, r])
            for p in range(8):
                for e in range(2):
                    byte = np.int32(codes[t, g, 128 * p + 64 * h + 2 * rr + e])
                    out[i, 32 * g + 2 * p + e] = (s * np.float32(byte & 15) + m) * row_scale
                    out[i, 32 * g + 16 + 2 * p + e] = (s * np.float32(byte >> 4) + m) * row_scale
