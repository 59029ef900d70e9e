"""Random weight matrices written straight in GGML's block formats (no float matrix, no quantizer).

Every code byte is random, so codes are uniform over their range. The f16 scales of each block are
set so that the dequantized weights have mean about 0 and standard deviation about `std`: each
block's scale is the one that gives `std` for uniform codes, times a random factor in [0.75, 1.25]
(so blocks differ, as in real models). Block layouts as in ggml-common.h (see
model/weight_formats.py for how they decode).
"""

from __future__ import annotations

import numpy as np

# weights per block, bytes per block
BLOCK = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
         "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}
FLOAT_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def _uniform_code_std(num_levels: int) -> float:
    """Standard deviation of a code uniform over `num_levels` consecutive integers."""
    return float(np.sqrt((num_levels ** 2 - 1) / 12.0))


def _put_f16(blocks: np.ndarray, offset: int, values: np.ndarray) -> None:
    """Write float values as little-endian f16 into bytes offset, offset+1 of every block."""
    blocks[:, offset:offset + 2] = values.astype("<f2").view(np.uint8).reshape(-1, 2)


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """8 six-bit scales and 8 six-bit mins per block -> the 12 packed bytes of Q4_K/Q5_K:
    bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7; bytes 4-7 the
    same for mins; bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high)."""
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return out


def random_matrix(type_name: str, num_rows: int, num_cols: int, rng: np.random.Generator,
                  std: float) -> np.ndarray:
    """A [num_rows, num_cols] matrix of `type_name` with random weights: float32/float16 values,
    bfloat16 bits as uint16, or for block formats the raw bytes [num_rows, bytes_per_row]."""
    if type_name in FLOAT_BYTES:
        values = rng.standard_normal((num_rows, num_cols), dtype=np.float32)
        values *= np.float32(std)
        if type_name == "F32":
            return values
        if type_name == "F16":
            return values.astype(np.float16)
        bits = values.view(np.uint32)  # bfloat16: the top half, rounded to nearest even
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    per_block, block_bytes = BLOCK[type_name]
    num_blocks = num_rows * num_cols // per_block
    num_bytes = num_blocks * block_bytes
    # raw 64-bit draws of the generator seen as bytes: ~10x faster than Generator.bytes
    words = rng.bit_generator.random_raw(-(-num_bytes // 8))
    blocks = words.view(np.uint8)[:num_bytes].reshape(num_blocks, block_bytes)
    jitter = rng.uniform(0.75, 1.25, num_blocks)

    if type_name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        levels = {"Q4_0": 16, "Q4_1": 16, "Q5_0": 32, "Q5_1": 32, "Q8_0": 256}[type_name]
        d = std / _uniform_code_std(levels) * jitter
        _put_f16(blocks, 0, d)
        if type_name in ("Q4_1", "Q5_1"):  # w = d q + m: m centres the codes on 0
            _put_f16(blocks, 2, -d * (levels - 1) / 2)
        # Q4_0 and Q5_0 centre by construction (q - 8, q - 16); Q8_0 codes are signed
    elif type_name in ("Q4_K", "Q5_K"):
        # w = d sc q - dmin m with 6-bit sc, m per 32 weights; m = sc and dmin = d (levels-1)/2
        # centre every sub-block: w = d sc (q - (levels-1)/2)
        levels = 16 if type_name == "Q4_K" else 32
        sc = rng.integers(32, 64, size=(num_blocks, 8), dtype=np.uint8)
        d = std / (_uniform_code_std(levels) * 47.5) * jitter  # 47.5: the mean sub-scale
        _put_f16(blocks, 0, d)
        _put_f16(blocks, 2, d * (levels - 1) / 2)
        blocks[:, 4:16] = _pack_k_scales(sc, sc)
    else:  # Q6_K: w = d sc (q - 32), signed 8-bit sc per 16 weights, d last
        sc = rng.integers(32, 64, size=(num_blocks, 16), dtype=np.int8)
        blocks[:, 192:208] = sc.view(np.uint8)
        _put_f16(blocks, 208, std / (_uniform_code_std(64) * 47.5) * jitter)
    return blocks.reshape(num_rows, num_cols // per_block * block_bytes)
