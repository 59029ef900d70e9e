"""The layouts weights had before they were kept at file size, as test references.

Every quantized format was widened at load: codes as nibbles (4-bit codes) or one byte each,
float32 (or exact half) scale and min per group. The kernels still run these layouts (affine
scales, int8 codes with groups of 16 or 32), so the new layouts' matmul outputs can be compared
with the old path's bit for bit.
"""

from __future__ import annotations

import numpy as np

from pagedserve.kernels.quant_matmul import TILE
from pagedserve.model.weight_formats import decode_blocks
from pagedserve.model.weight_layout import LinearWeight, _int8_codes, _per_tile, _tile_rows


def _as_half_if_exact(scale: np.ndarray, minv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore"):
        s16, m16 = scale.astype(np.float16), minv.astype(np.float16)
    if np.array_equal(s16.astype(np.float32), scale) and np.array_equal(m16.astype(np.float32), minv):
        return s16.view(np.uint16), m16.view(np.uint16)
    return scale, minv


def widened_linear(fmt: str, raw: np.ndarray, num_out: int, num_in: int) -> LinearWeight:
    """The weight as the old loader built it (kind "q4": nibbles, or "q8": a byte per code)."""
    dec = decode_blocks(fmt, raw, num_in)
    g = dec.group_size
    ng = num_in // g
    nt = -(-num_out // TILE)
    scale, minv = _as_half_if_exact(_per_tile(dec.scale, nt), _per_tile(dec.min, nt))
    if dec.bits == 4 and g == 32:
        q = _tile_rows(dec.q.reshape(num_out, ng, g), nt).astype(np.uint8)  # [NT, TILE, NG, G]
        lo = q[..., :16].reshape(nt, 4, 16, ng, 4, 4)
        hi = q[..., 16:].reshape(nt, 4, 16, ng, 4, 4)
        packed = (lo | (hi << 4)).transpose(0, 3, 4, 1, 2, 5)
        codes = np.ascontiguousarray(packed).reshape(nt, ng, 16 * TILE)
        return LinearWeight("q4", num_out, num_in, fmt, codes, scale, minv)
    codes = _int8_codes(dec.q.astype(np.int8), g, nt)
    return LinearWeight("q8", num_out, num_in, fmt, codes, scale, minv)
