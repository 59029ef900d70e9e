"""Decode GGUF weight blocks into integer codes with per-group affine scales.

Every supported quantized format is written exactly as `w = scale[g] * q + min[g]` per group of
`group_size` consecutive weights of a row, with small integer codes `q` and float32 `scale`,
`min`. The products `scale * q` are exact in float32 (f16 scales times small integers), so this
form reproduces ggml's dequantization to the last bit, and one kernel family serves all formats.

| format | group | q range  | scale        | min        |
|--------|-------|----------|--------------|------------|
| Q4_0   | 32    | 0..15    | d            | -8 d       |
| Q4_1   | 32    | 0..15    | d            | m          |
| Q5_0   | 32    | 0..31    | d            | -16 d      |
| Q5_1   | 32    | 0..31    | d            | m          |
| Q8_0   | 32    | -128..127| d            | 0          |
| Q4_K   | 32    | 0..15    | d * sc       | -dmin * m  |
| Q5_K   | 32    | 0..31    | d * sc       | -dmin * m  |
| Q6_K   | 16    | -32..31  | d * sc       | 0          |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pagedserve.model.gguf_file import ModelLoadError

FLOAT_FORMATS = ("F32", "F16", "BF16")
QUANT_FORMATS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
SUPPORTED_FORMATS = FLOAT_FORMATS + QUANT_FORMATS

# (weights per block, bytes per block)
_BLOCK = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}


@dataclass(frozen=True)
class DecodedWeight:
    """q [N, K] integer codes (int8, or uint8 for unsigned formats), scale/min [N, K // group_size]."""

    q: np.ndarray
    scale: np.ndarray
    min: np.ndarray
    group_size: int
    bits: int  # 4 when every code fits in 0..15 (packable as nibbles), else 8


def _f16(raw: np.ndarray) -> np.ndarray:
    """[..., 2] uint8 -> [...] float32 (little-endian f16)."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _k_scales_mins(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed bytes of a Q4_K/Q5_K super-block -> 8 six-bit scales and 8 six-bit mins."""
    s = scales.astype(np.uint8)
    d, m, md = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _low_high_nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., 16] packed bytes -> [..., 32]: element j is the low nibble of byte j, j+16 the high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def decode_blocks(type_name: str, raw: np.ndarray, num_cols: int) -> DecodedWeight:
    """Decode a [N, bytes_per_row] uint8 matrix of `type_name` blocks into codes and scales."""
    if type_name not in _BLOCK:
        raise ModelLoadError(f"unsupported weight type {type_name}")
    per_block, nbytes = _BLOCK[type_name]
    n = raw.shape[0]
    if num_cols % per_block:
        raise ModelLoadError(f"{type_name} row of {num_cols} weights is not a whole number of blocks")
    nb = num_cols // per_block
    b = np.asarray(raw, dtype=np.uint8).reshape(n, nb, nbytes)

    if type_name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        d = _f16(b[..., 0:2])
        if type_name == "Q8_0":
            q = b[..., 2:34].view(np.int8)
            return DecodedWeight(q.reshape(n, num_cols), d, np.zeros_like(d), 32, 8)
        if type_name == "Q4_0":
            q = _low_high_nibbles(b[..., 2:18])
            return DecodedWeight(q.reshape(n, num_cols), d, -8.0 * d, 32, 4)
        if type_name == "Q4_1":
            q = _low_high_nibbles(b[..., 4:20])
            return DecodedWeight(q.reshape(n, num_cols), d, _f16(b[..., 2:4]), 32, 4)
        # Q5_0 / Q5_1: the fifth bits sit in a 32-bit word, bit j for element j.
        off = 2 if type_name == "Q5_0" else 4
        qh = np.ascontiguousarray(b[..., off:off + 4]).view(np.uint32)[..., 0]  # [N, nb]
        bits = (qh[..., None] >> np.arange(32, dtype=np.uint32)) & 1
        q = _low_high_nibbles(b[..., off + 4:off + 20]) | (bits.astype(np.uint8) << 4)
        mn = -16.0 * d if type_name == "Q5_0" else _f16(b[..., 2:4])
        return DecodedWeight(q.reshape(n, num_cols), d, mn.astype(np.float32), 32, 8)

    if type_name in ("Q4_K", "Q5_K"):
        d = _f16(b[..., 0:2])[..., None]
        dmin = _f16(b[..., 2:4])[..., None]
        sc, mn = _k_scales_mins(b[..., 4:16])  # [N, nb, 8]
        if type_name == "Q4_K":
            qs = b[..., 16:144].reshape(n, nb, 4, 32)  # 4 chunks of 64 weights
            q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # [N, nb, 4, 64]
        else:
            qh = b[..., 16:48]  # [N, nb, 32]: bit i of byte j is the 5th bit of element 32 i + j
            qs = b[..., 48:176].reshape(n, nb, 4, 32)
            low = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(n, nb, 8, 32)
            high = (qh[:, :, None, :] >> np.arange(8, dtype=np.uint8)[None, None, :, None]) & 1
            q = low | (high << 4)
        scale = (d * sc).astype(np.float32)
        mins = -(dmin * mn).astype(np.float32)
        bits = 4 if type_name == "Q4_K" else 8
        return DecodedWeight(q.reshape(n, num_cols), scale.reshape(n, nb * 8),
                             mins.reshape(n, nb * 8), 32, bits)

    # Q6_K: ql [128], qh [64], scales int8 [16], d f16; groups of 16 weights.
    ql = b[..., 0:128].reshape(n, nb, 2, 64)
    qh = b[..., 128:192].reshape(n, nb, 2, 32)
    sc = b[..., 192:208].view(np.int8).astype(np.float32)  # [N, nb, 16]
    d = _f16(b[..., 208:210])[..., None]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=-1).reshape(n, nb, 2, 4, 32)
    high = (qh[:, :, :, None, :] >> (2 * np.arange(4, dtype=np.uint8))[None, None, None, :, None]) & 3
    q = ((low | (high << 4)).astype(np.int16) - 32).astype(np.int8)
    scale = (d * sc).astype(np.float32).reshape(n, nb * 16)
    return DecodedWeight(q.reshape(n, num_cols), scale, np.zeros_like(scale), 16, 8)


def dequantize(type_name: str, raw: np.ndarray, num_cols: int) -> np.ndarray:
    """Weights of any supported format as float32 [N, num_cols] (for references and float paths)."""
    if type_name == "F32":
        return np.asarray(raw, dtype=np.float32).reshape(-1, num_cols)
    if type_name == "F16":
        return np.asarray(raw).view(np.float16).astype(np.float32).reshape(-1, num_cols)
    if type_name == "BF16":
        as_u16 = np.asarray(raw).view(np.uint16).astype(np.uint32) << 16
        return as_u16.view(np.float32).reshape(-1, num_cols)
    dec = decode_blocks(type_name, raw, num_cols)
    n = dec.q.shape[0]
    g = dec.group_size
    q = dec.q.astype(np.float32).reshape(n, -1, g)
    return (dec.scale[..., None] * q + dec.min[..., None]).reshape(n, num_cols)
