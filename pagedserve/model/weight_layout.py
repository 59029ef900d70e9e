"""Repack GGUF weight matrices at load into the tiled layout the matmul kernels stream through.

Quantized formats keep their bits: codes in nibbles (5- and 6-bit codes: nibbles plus high-bit
planes), scales as the file stores them (half bits; K-quants: 6-bit sub-scales and sub-mins with
one half `d` and `dmin` per super-block), the float scale and min of a group being computed in the
kernel exactly as ggml computes them. So the repacked weights take the file's size (at most 3%
more, for K-quant sub-scales kept as bytes) and dequantize to ggml's values bit for bit. Float
formats become float32 [N, K] matrices used through BLAS.

| kind | formats            | codes                              | scale, minv (kernels/group_scales.py) |
|------|--------------------|------------------------------------|---------------------------------------|
| q4   | Q4_0, Q4_1, Q4_K   | [NT, NG, 1024] uint8 nibbles       | factor, affine, K-quant records       |
| q5   | Q5_0, Q5_1, Q5_K   | [NT, NG, 1280]: + a high-bit plane | factor, affine, K-quant records       |
| q6   | Q6_K (groups of 16)| [NT, NG, 768]: + 2 high-bit planes | K-quant records                       |
| q8   | Q8_0               | [NT, NG, 16, 128] int8             | factor (0)                            |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pagedserve.kernels.group_scales import super_record_bytes
from pagedserve.kernels.quant_matmul import (
    NIBBLE_CODES_FOR_8BIT_ACTIVATIONS, TILE, matmul_q4, matmul_q4_a8, matmul_q5, matmul_q5_a8, matmul_q6, matmul_q6_a8,
    matmul_q8,
)
from pagedserve.model.gguf_file import GGUFTensor, ModelLoadError
from pagedserve.model.weight_formats import (
    AFFINE, FACTOR, FLOAT_FORMATS, QUANT_FORMATS, SUPER_BLOCK, BlockFields, dequantize, split_blocks,
)

# Rows repacked at a time (a multiple of TILE): the decoded codes and their reshuffles take a few
# bytes per weight while a chunk is repacked. 1B Q4_K_M (file 766 MB, weights 793 MB), load peak
# above the imports: 2127 MB repacking whole matrices, 1100 MB in chunks of 4096 rows, 900 MB with
# the chunks' file pages dropped as they go, 859 MB with chunks of 1024 rows; then, with the heap
# trimmed per chunk and the vocabulary strings dropped before the weights (model/loader.py),
# 837-839 MB with chunks of 1024 rows and 833-834 MB with 512 (load time the same, ~6 s).
REPACK_ROWS = 8 * TILE
NIBBLE_KINDS = ("q4", "q5", "q6")  # codes in nibbles, plus 0, 1 or 2 high-bit planes
QUANT_KINDS = NIBBLE_KINDS + ("q8",)
_KIND_OF_BITS = {4: "q4", 5: "q5", 6: "q6", 8: "q8"}


@dataclass(frozen=True)
class LinearWeight:
    """A [N, K] weight matrix ready for `matmul`. kind: one of QUANT_KINDS, or "f32"."""

    kind: str
    num_out: int  # N
    num_in: int  # K
    format: str  # the GGUF type it came from
    # q4/q5/q6: [NT, NG, B] uint8 (kernels/nibble_dot.py); q8: [NT, NG, G/2, 2*TILE] int8; f32: [N, K]
    codes: np.ndarray
    # [NT, NG, TILE] uint16 half bits (or float32), or [NT, K/256, record] uint8 K-quant records
    scale: np.ndarray
    # [NT, NG, TILE] like scale (affine mins), [1] float32 (min = minv[0] * scale), or [0] (K-quants)
    minv: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes + self.minv.nbytes


def _tile_rows(a: np.ndarray, num_tiles: int) -> np.ndarray:
    """[N, ...] -> [NT, TILE, ...] with zero rows padding N up to a multiple of TILE."""
    n = a.shape[0]
    pad = num_tiles * TILE - n
    if pad:
        a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], dtype=a.dtype)], axis=0)
    return a.reshape((num_tiles, TILE) + a.shape[1:])


def _per_tile(values: np.ndarray, num_tiles: int) -> np.ndarray:
    """[N, X] -> [NT, X, TILE]: a row's value of column x at [t, x, row % TILE]."""
    return np.ascontiguousarray(_tile_rows(values, num_tiles).transpose(0, 2, 1))


def nibble_codes(codes: np.ndarray, group_size: int, high_bits: int, num_tiles: int) -> np.ndarray:
    """[N, K] unsigned codes -> [NT, NG, B] uint8: per group of a tile the nibble bytes
    [Q quads d][4 row blocks c][16 rows r][4 bytes b] (kernels/nibble_dot.py), then for 5- and 6-bit
    codes the high-bit bytes [4 c][16 r][4 b], field 2d + half of high_bits bits (kernels/high_bits.py)."""
    n, k = codes.shape
    ng, nq = k // group_size, group_size // 8
    q = _tile_rows(codes.reshape(n, ng, group_size), num_tiles)  # [NT, TILE, NG, G]
    q = q.reshape(num_tiles, 4, 16, ng, 2, nq, 4)  # [t, c, r, g, half, d, b]
    low = q & 15
    packed = low[:, :, :, :, 0] | (low[:, :, :, :, 1] << 4)  # [t, c, r, g, d, b]
    packed = packed.transpose(0, 3, 4, 1, 2, 5)  # [t, g, d, c, r, b]
    parts = [packed.reshape(num_tiles, ng, 32 * group_size)]
    if high_bits:
        high = (q >> 4).transpose(0, 3, 1, 2, 6, 5, 4)  # [t, g, c, r, b, d, half]: field i = 2d + half
        high = high.reshape(num_tiles, ng, 4, 16, 4, 2 * nq)
        byte = np.zeros(high.shape[:-1], np.uint8)
        for i in range(2 * nq):
            byte |= high[..., i] << np.uint8(high_bits * i)
        parts.append(byte.reshape(num_tiles, ng, 256))
    return np.ascontiguousarray(np.concatenate(parts, axis=-1))


def _int8_codes(codes: np.ndarray, group_size: int, num_tiles: int) -> np.ndarray:
    """[N, K] int8 codes -> [NT, NG, G/2, 2*TILE]: pairs of inputs, 64 rows (kernels/int16_dot.py)."""
    n, k = codes.shape
    ng = k // group_size
    pairs = _tile_rows(codes.reshape(n, ng, group_size // 2, 2), num_tiles)  # [NT, r, NG, p, e]
    return np.ascontiguousarray(pairs.transpose(0, 2, 3, 1, 4)).reshape(
        num_tiles, ng, group_size // 2, 2 * TILE)


def super_records(f: BlockFields, num_tiles: int) -> np.ndarray:
    """K-quant scale fields -> [NT, K/256, record] uint8 (layout in kernels/group_scales.py)."""
    nsb = f.super_d.shape[1]
    per_super = SUPER_BLOCK // f.group_size
    halves = [_per_tile(f.super_d, num_tiles)]  # [NT, NSB, TILE] uint16
    subs = [f.scale.view(np.uint8)]
    if f.group_size == 32:
        halves.append(_per_tile(f.super_dmin, num_tiles))
        subs.append(f.minv)
    parts = [h.view(np.uint8).reshape(num_tiles, nsb, 2 * TILE) for h in halves]
    for s in subs:  # [N, NG] -> [NT, NSB, per_super, TILE]
        tiled = _tile_rows(s.reshape(-1, nsb, per_super), num_tiles).transpose(0, 2, 3, 1)
        parts.append(tiled.reshape(num_tiles, nsb, per_super * TILE))
    records = np.ascontiguousarray(np.concatenate(parts, axis=-1))
    assert records.shape[2] == super_record_bytes(f.group_size)
    return records


def _scales(f: BlockFields, num_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    if f.mode == AFFINE:
        return _per_tile(f.scale, num_tiles), _per_tile(f.minv, num_tiles)
    if f.mode == FACTOR:
        return _per_tile(f.scale, num_tiles), np.array([f.min_factor], np.float32)
    return super_records(f, num_tiles), np.zeros(0, np.float32)


def _check_matrix(tensor: GGUFTensor) -> None:
    if len(tensor.shape) != 2:
        raise ModelLoadError(f"tensor {tensor.name} should be a matrix, has shape {tensor.shape}")
    if tensor.type_name not in FLOAT_FORMATS + QUANT_FORMATS:
        raise ModelLoadError(f"tensor {tensor.name} has unsupported weight type {tensor.type_name}")


def _stack_fields(parts: list[BlockFields]) -> BlockFields:
    """Fields of matrices of one format stacked along N."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    joined = {name: np.concatenate([getattr(p, name) for p in parts], axis=0)
              for name in ("codes", "scale", "minv", "super_d", "super_dmin")}
    return BlockFields(code_bits=first.code_bits, code_offset=first.code_offset, group_size=first.group_size,
                       mode=first.mode, min_factor=first.min_factor, **joined)


def build_linear(tensor: GGUFTensor, release: Callable[[np.ndarray], None] | None = None) -> LinearWeight:
    """Repack one GGUF matrix tensor (numpy shape [N, K]) for the matmul kernels."""
    return build_linear_fused([tensor], release)


def build_linear_fused(tensors: list[GGUFTensor], release: Callable[[np.ndarray], None] | None = None
                       ) -> LinearWeight:
    """Repack matrices of one format and one K, stacked along N (e.g. q, k, v -> qkv), REPACK_ROWS
    rows at a time; `release`, if given, gets each chunk's raw rows once they are repacked (the
    loader drops their file pages, so a vocabulary-sized matrix is never resident twice)."""
    for t in tensors:
        _check_matrix(t)
    fmt = tensors[0].type_name
    k = tensors[0].shape[1]
    if any(t.type_name != fmt or t.shape[1] != k for t in tensors):
        raise ModelLoadError("fused matrices must share weight type and input size")
    n = sum(t.shape[0] for t in tensors)
    if fmt in FLOAT_FORMATS:
        # concatenate copies even a single part: no view may keep the memory-mapped file alive
        w = np.concatenate([dequantize(fmt, t.data, k) for t in tensors], axis=0)
        empty = np.zeros((0, 0, 0), dtype=np.float32)
        return LinearWeight("f32", n, k, fmt, w, empty, empty)
    nt = -(-n // TILE)
    codes = scale = minv = kind = None
    for r0 in range(0, n, REPACK_ROWS):
        r1 = min(n, r0 + REPACK_ROWS)
        raw_rows = _row_slices(tensors, r0, r1)
        f = _stack_fields([split_blocks(fmt, raw, k) for raw in raw_rows])
        kind = _KIND_OF_BITS[f.code_bits]
        part_tiles = -(-(r1 - r0) // TILE)
        if kind == "q8":
            part_codes = _int8_codes(f.codes, f.group_size, part_tiles)
        else:
            part_codes = nibble_codes(f.codes, f.group_size, f.code_bits - 4, part_tiles)
        part_scale, part_minv = _scales(f, part_tiles)
        if codes is None:  # the whole matrix's arrays, filled chunk by chunk
            codes = np.empty((nt,) + part_codes.shape[1:], part_codes.dtype)
            scale = np.empty((nt,) + part_scale.shape[1:], part_scale.dtype)
            minv = part_minv if part_minv.ndim == 1 else np.empty((nt,) + part_minv.shape[1:], part_minv.dtype)
        t0 = r0 // TILE
        codes[t0:t0 + part_tiles] = part_codes
        scale[t0:t0 + part_tiles] = part_scale
        if minv.ndim > 1:
            minv[t0:t0 + part_tiles] = part_minv
        del f, part_codes, part_scale, part_minv  # freed before `release`, which may trim the heap
        if release is not None:
            for raw in raw_rows:
                release(raw)
    return LinearWeight(kind, n, k, fmt, codes, scale, minv)


def _row_slices(tensors: list[GGUFTensor], r0: int, r1: int) -> list[np.ndarray]:
    """The raw rows r0 .. r1-1 of tensors stacked along N, as views of each tensor's bytes."""
    slices, offset = [], 0
    for t in tensors:
        lo, hi = max(r0, offset), min(r1, offset + t.shape[0])
        if lo < hi:
            slices.append(t.data[lo - offset:hi - offset])
        offset += t.shape[0]
    return slices


def matmul(x: np.ndarray, weight: LinearWeight, out: np.ndarray) -> np.ndarray:
    """out [M, N] = x [M, K] @ W^T, for x float32 C-contiguous."""
    eight_bit = weight.codes.dtype == NIBBLE_CODES_FOR_8BIT_ACTIVATIONS and weight.codes.ndim == 3
    kernel = (_KERNELS_8BIT_ACTIVATIONS if eight_bit else _KERNELS).get(weight.kind)
    if kernel is None:
        np.dot(x, weight.codes.T, out=out)
    else:
        kernel(x, weight.codes, weight.scale, weight.minv, out)
    return out


_KERNELS = {"q4": matmul_q4, "q5": matmul_q5, "q6": matmul_q6, "q8": matmul_q8}
_KERNELS_8BIT_ACTIVATIONS = {"q4": matmul_q4_a8, "q5": matmul_q5_a8, "q6": matmul_q6_a8}
