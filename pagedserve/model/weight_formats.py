"""Decode GGUF weight blocks into integer codes and the scale fields ggml stores.

`split_blocks` gives each format's codes as small unsigned integers with the scale fields as
stored in the file (half bits, 6-bit sub-scales, ...): what the in-memory layouts keep
(`model/weight_layout.py`). `decode_blocks` turns them into the affine form
`w = scale[g] * q + min[g]` per group of `group_size` weights of a row, with float32 `scale` and
`min`: the reference form the kernels must reproduce. The products `scale * q` are exact in float32
(f16 scales times small integers), so this form reproduces ggml's dequantization to the last bit.

| format | group | codes | q        | scale        | min        | stored scale fields            |
|--------|-------|-------|----------|--------------|------------|--------------------------------|
| Q4_0   | 32    | 0..15 | u        | d            | -8 d       | d                              |
| Q4_1   | 32    | 0..15 | u        | d            | m          | d, m                           |
| Q5_0   | 32    | 0..31 | u        | d            | -16 d      | d                              |
| Q5_1   | 32    | 0..31 | u        | d            | m          | d, m                           |
| Q8_0   | 32    | int8  | u        | d            | 0          | d                              |
| Q4_K   | 32    | 0..15 | u        | d * sc       | -dmin * m  | d, dmin per 256; sc, m 6-bit   |
| Q5_K   | 32    | 0..31 | u        | d * sc       | -dmin * m  | d, dmin per 256; sc, m 6-bit   |
| Q6_K   | 16    | 0..63 | u - 32   | d * sc       | 0          | d per 256; sc int8             |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pagedserve.kernels.group_scales import AFFINE, FACTOR, SUPER, SUPER_BLOCK
from pagedserve.model.gguf_file import ModelLoadError

FLOAT_FORMATS = ("F32", "F16", "BF16")
QUANT_FORMATS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
SUPPORTED_FORMATS = FLOAT_FORMATS + QUANT_FORMATS

# (weights per block, bytes per block)
BLOCK = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}

# Scale modes (the kernels' storage modes, kernels/group_scales.py): how a group's float scale and
# min follow from the stored fields.
#   AFFINE: scale = d, min = m: one half each per group (Q4_1, Q5_1)
#   FACTOR: scale = d per group, min = min_factor * d (Q4_0, Q5_0, Q8_0)
#   SUPER:  K-quants: scale = sc * d, min = -(m * dmin); d, dmin per super-block of SUPER_BLOCK weights


@dataclass(frozen=True)
class BlockFields:
    """A matrix of one format as its integer codes and its scale fields, as the file stores them.

    codes [N, K]: uint8 unsigned codes of `code_bits` bits (Q8_0: int8); the weight's integer
    is codes - code_offset. scale, minv [N, NG] and super_d, super_dmin [N, K / 256] per mode:
      AFFINE: scale, minv uint16 half bits (d, m); super_* empty
      FACTOR: scale uint16 half bits (d); minv, super_* empty; min = min_factor * d
      SUPER:  scale 6-bit uint8 sub-scales (Q6_K: int8), minv 6-bit uint8 sub-mins (Q6_K: empty),
              super_d / super_dmin uint16 half bits (Q6_K: no dmin, empty)
    """

    codes: np.ndarray
    code_bits: int  # 4, 5, 6 or 8
    code_offset: int  # 32 for Q6_K, else 0
    group_size: int
    mode: str
    scale: np.ndarray
    minv: np.ndarray
    super_d: np.ndarray
    super_dmin: np.ndarray
    min_factor: float = 0.0


@dataclass(frozen=True)
class DecodedWeight:
    """q [N, K] integer codes (int8, or uint8 for unsigned formats), scale/min [N, K // group_size]."""

    q: np.ndarray
    scale: np.ndarray
    min: np.ndarray
    group_size: int
    bits: int  # 4 when every code fits in 0..15 (packable as nibbles), else 8


def _half_bits(raw: np.ndarray) -> np.ndarray:
    """[..., 2] uint8 -> [...] uint16 (little-endian half bits)."""
    return np.ascontiguousarray(raw).view(np.uint16)[..., 0]


def _f32(half_bits: np.ndarray) -> np.ndarray:
    return half_bits.view(np.float16).astype(np.float32)


def _k_scales_mins(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed bytes of a Q4_K/Q5_K super-block -> 8 six-bit scales and 8 six-bit mins."""
    s = scales.astype(np.uint8)
    d, m, md = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _low_high_nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., 16] packed bytes -> [..., 32]: element j is the low nibble of byte j, j+16 the high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


_EMPTY16 = np.zeros((0, 0), np.uint16)


def split_blocks(type_name: str, raw: np.ndarray, num_cols: int) -> BlockFields:
    """Split a [N, bytes_per_row] uint8 matrix of `type_name` blocks into codes and scale fields."""
    if type_name not in BLOCK:
        raise ModelLoadError(f"unsupported weight type {type_name}")
    per_block, nbytes = BLOCK[type_name]
    n = raw.shape[0]
    if num_cols % per_block:
        raise ModelLoadError(f"{type_name} row of {num_cols} weights is not a whole number of blocks")
    nb = num_cols // per_block
    b = np.asarray(raw, dtype=np.uint8).reshape(n, nb, nbytes)

    if type_name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        d = _half_bits(b[..., 0:2])
        if type_name == "Q8_0":
            q = b[..., 2:34].view(np.int8).reshape(n, num_cols)
            return BlockFields(q, 8, 0, 32, FACTOR, d, _EMPTY16, _EMPTY16, _EMPTY16, 0.0)
        off = 2 if type_name.endswith("_0") else 4
        m = _half_bits(b[..., 2:4]) if off == 4 else _EMPTY16
        if type_name in ("Q4_0", "Q4_1"):
            q, bits = _low_high_nibbles(b[..., off:off + 16]), 4
        else:  # Q5_0 / Q5_1: the fifth bits sit in a 32-bit word, bit j for element j.
            qh = np.ascontiguousarray(b[..., off:off + 4]).view(np.uint32)[..., 0]  # [N, nb]
            fifth = ((qh[..., None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
            q, bits = _low_high_nibbles(b[..., off + 4:off + 20]) | (fifth << 4), 5
        q = q.reshape(n, num_cols)
        if off == 4:
            return BlockFields(q, bits, 0, 32, AFFINE, d, m, _EMPTY16, _EMPTY16)
        return BlockFields(q, bits, 0, 32, FACTOR, d, _EMPTY16, _EMPTY16, _EMPTY16, -2.0 ** (bits - 1))

    if type_name in ("Q4_K", "Q5_K"):
        d = _half_bits(b[..., 0:2])
        dmin = _half_bits(b[..., 2:4])
        sc, mn = _k_scales_mins(b[..., 4:16])  # [N, nb, 8]
        if type_name == "Q4_K":
            qs = b[..., 16:144].reshape(n, nb, 4, 32)  # 4 chunks of 64 weights
            q, bits = np.concatenate([qs & 0x0F, qs >> 4], axis=-1), 4  # [N, nb, 4, 64]
        else:
            qh = b[..., 16:48]  # [N, nb, 32]: bit i of byte j is the 5th bit of element 32 i + j
            qs = b[..., 48:176].reshape(n, nb, 4, 32)
            low = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(n, nb, 8, 32)
            high = (qh[:, :, None, :] >> np.arange(8, dtype=np.uint8)[None, None, :, None]) & 1
            q, bits = low | (high << 4), 5
        return BlockFields(q.reshape(n, num_cols), bits, 0, 32, SUPER, sc.reshape(n, nb * 8),
                           mn.reshape(n, nb * 8), d, dmin)

    # Q6_K: ql [128], qh [64], scales int8 [16], d f16; groups of 16 weights.
    ql = b[..., 0:128].reshape(n, nb, 2, 64)
    qh = b[..., 128:192].reshape(n, nb, 2, 32)
    sc = np.ascontiguousarray(b[..., 192:208]).view(np.int8).reshape(n, nb * 16)
    d = _half_bits(b[..., 208:210])
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=-1).reshape(n, nb, 2, 4, 32)
    high = (qh[:, :, :, None, :] >> (2 * np.arange(4, dtype=np.uint8))[None, None, None, :, None]) & 3
    q = (low | (high << 4)).reshape(n, num_cols)
    return BlockFields(q, 6, 32, 16, SUPER, sc, np.zeros((n, 0), np.uint8), d, _EMPTY16)


def group_scales(f: BlockFields) -> tuple[np.ndarray, np.ndarray]:
    """float32 scale and min [N, NG] of every group, computed as the kernels compute them."""
    if f.mode == AFFINE:
        return _f32(f.scale), _f32(f.minv)
    if f.mode == FACTOR:
        d = _f32(f.scale)
        # + 0 turns the -0 of a zero factor times a negative d into +0 (a min of zero is +0)
        return d, np.float32(f.min_factor) * d + np.float32(0.0)
    per_super = SUPER_BLOCK // f.group_size
    d = np.repeat(_f32(f.super_d), per_super, axis=1)
    scale = d * f.scale.astype(np.float32)
    if f.minv.shape[1] == 0:
        return scale, np.zeros_like(scale)
    dmin = np.repeat(_f32(f.super_dmin), per_super, axis=1)
    return scale, -(dmin * f.minv.astype(np.float32))


def decode_blocks(type_name: str, raw: np.ndarray, num_cols: int) -> DecodedWeight:
    """Decode a [N, bytes_per_row] uint8 matrix of `type_name` blocks into codes and float scales."""
    f = split_blocks(type_name, raw, num_cols)
    scale, mins = group_scales(f)
    q = f.codes
    if f.code_offset:
        q = (q.astype(np.int16) - f.code_offset).astype(np.int8)
    return DecodedWeight(q, scale, mins, f.group_size, 4 if f.code_bits == 4 else 8)


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
