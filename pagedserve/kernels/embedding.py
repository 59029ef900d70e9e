"""Embedding lookup: dequantize the rows of token ids from a weight in the tiled layout.

The layout is the one of `kernels/quant_matmul.py` (row n lives in tile n // 64, lane n % 64), so
a tied output matrix and the embedding table share one copy of the weights. Each value is
scale * code + min with the scale and min of the matmul kernels (`kernels/group_scales.py`),
computed the same way, so rows equal ggml's dequantization bit for bit.
"""

from __future__ import annotations

import numba
import numba.extending
import numpy as np

from pagedserve.kernels.group_scales import SUPER_BLOCK
from pagedserve.kernels.half_float import as_f32, half_to_f32
from pagedserve.kernels.int16_dot import TILE as _TILE
from pagedserve.kernels.jit import jit, parallel_jit


@jit
def _half_at(record, i):
    """float32 of the little-endian half at bytes i, i + 1 of a uint8 record."""
    return half_to_f32(np.uint16(np.int32(record[i]) | (np.int32(record[i + 1]) << 8)))


def group_scale_min(scale, minv, t, g, r, group_size):
    """(scale, min) float32 of group g of row r of tile t, for any storage mode of the scales."""
    raise NotImplementedError("call from compiled code only")


@numba.extending.overload(group_scale_min, jit_options={"cache": True, "nogil": True})
def _group_scale_min_overload(scale, minv, t, g, r, group_size):
    if scale.dtype == numba.types.uint8:  # K-quant records
        def super_mode(scale, minv, t, g, r, group_size):
            per_super = SUPER_BLOCK // group_size
            rec = scale[t, g // per_super]
            j = g % per_super
            d = _half_at(rec, 2 * r)
            if group_size == 16:  # Q6_K: signed sub-scales, no min
                return np.float32(np.int8(rec[2 * _TILE + _TILE * j + r])) * d, np.float32(0.0)
            dmin = _half_at(rec, 2 * _TILE + 2 * r)
            sc = np.float32(rec[4 * _TILE + _TILE * j + r])
            m = np.float32(rec[4 * _TILE + _TILE * per_super + _TILE * j + r])
            return sc * d, -(m * dmin)
        return super_mode
    if minv.ndim == 1:  # min = factor * scale; + 0 makes a zero min +0 as the affine form stores it
        def factor_mode(scale, minv, t, g, r, group_size):
            s = as_f32(scale[t, g, r])
            return s, s * minv[0] + np.float32(0.0)
        return factor_mode
    return lambda scale, minv, t, g, r, group_size: (as_f32(scale[t, g, r]), as_f32(minv[t, g, r]))


@parallel_jit
def embed_rows_q8(codes, scale, minv, token_ids, row_scale, out):
    """out [T, K] = row_scale * W[token_ids]; codes [NT, NG, G/2, 128] int8 (pair p, row r, e at
    [t, g, p, 2r + e] = code of input 2p + e)."""
    NT, NG, NP, _ = codes.shape
    G = 2 * NP
    for i in numba.prange(token_ids.shape[0]):
        n = token_ids[i]
        t = n // _TILE
        r = n % _TILE
        for g in range(NG):
            s, m = group_scale_min(scale, minv, t, g, r, G)
            for p in range(NP):
                for e in range(2):
                    code = np.float32(codes[t, g, p, 2 * r + e])
                    out[i, g * G + 2 * p + e] = (s * code + m) * row_scale


@parallel_jit
def embed_rows_q4(codes, scale, minv, token_ids, row_scale, out):
    """Like embed_rows_q8 for codes in nibbles [NT, NG, B] (kernels/nibble_dot.py): byte
    [t, g, 256d + 64c + 4r' + b] of row 16c + r' holds inputs 4d+b (low nibble) and G/2+4d+b (high);
    5- and 6-bit codes add their high bits from byte [t, g, 32G + 64c + 4r' + b] (kernels/high_bits.py)."""
    NT, NG, B = codes.shape
    G = 32 if B != 768 else 16
    high_bits = 0 if B == 1024 else (1 if B == 1280 else 2)
    offset = 32 if high_bits == 2 else 0  # Q6_K codes are stored + 32
    half = G // 2
    field_mask = (1 << high_bits) - 1
    for i in numba.prange(token_ids.shape[0]):
        n = token_ids[i]
        t = n // _TILE
        r = n % _TILE
        row_base = 64 * (r // 16) + 4 * (r % 16)
        for g in range(NG):
            s, m = group_scale_min(scale, minv, t, g, r, G)
            for d in range(G // 8):
                for b in range(4):
                    byte = np.int32(codes[t, g, 256 * d + row_base + b])
                    high = np.int32(codes[t, g, 32 * G + row_base + b]) if high_bits else 0
                    for h in range(2):
                        code = (byte >> (4 * h)) & 15
                        if high_bits:
                            code |= ((high >> (high_bits * (2 * d + h))) & field_mask) << 4
                        out[i, g * G + h * half + 4 * d + b] = (s * np.float32(code - offset) + m) * row_scale
