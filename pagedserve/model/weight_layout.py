"""Repack GGUF weight matrices at load into the tiled layout the matmul kernels stream through.

Quantized formats keep their integer codes (4-bit codes stay nibble-packed), laid out for the
integer dot-product kernels (`kernels/quant_matmul.py`), so the repacked weights take about the size
of the file (Q4_1: 0.625 bytes per weight, its f16 scales and mins kept as half bits). Float formats
become float32 [N, K] matrices used through BLAS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pagedserve.kernels.quant_matmul import TILE, matmul_q4, matmul_q8
from pagedserve.model.gguf_file import GGUFTensor, ModelLoadError
from pagedserve.model.weight_formats import FLOAT_FORMATS, QUANT_FORMATS, decode_blocks, dequantize



@dataclass(frozen=True)
class LinearWeight:
    """A [N, K] weight matrix ready for `matmul`. kind is "q4", "q8" or "f32"."""

    kind: str
    num_out: int  # N
    num_in: int  # K
    format: str  # the GGUF type it came from
    # q4: [NT, NG, 16*TILE] uint8 (kernels/nibble_dot.py); q8: [NT, NG, G/2, 2*TILE] int8; f32: [N, K]
    codes: np.ndarray
    scale: np.ndarray  # [NT, NG, TILE] float32, or uint16 half bits when exact (empty for f32)
    minv: np.ndarray  # [NT, NG, TILE] like scale

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


def _as_half_if_exact(scale: np.ndarray, minv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as uint16 half bits when every value is a half exactly (the legacy formats store f16
    scales and mins: 2 bytes instead of 4 per group, 1/6 of a Q4_1 matmul's memory traffic, which
    bounds decode at batch 1), else both float32 (K-quants: scale = f16 * 6-bit sub-scale)."""
    with np.errstate(over="ignore"):
        s16, m16 = scale.astype(np.float16), minv.astype(np.float16)
    if np.array_equal(s16.astype(np.float32), scale) and np.array_equal(m16.astype(np.float32), minv):
        return s16.view(np.uint16), m16.view(np.uint16)
    return scale, minv


def _check_matrix(tensor: GGUFTensor) -> None:
    if len(tensor.shape) != 2:
        raise ModelLoadError(f"tensor {tensor.name} should be a matrix, has shape {tensor.shape}")
    if tensor.type_name not in FLOAT_FORMATS + QUANT_FORMATS:
        raise ModelLoadError(f"tensor {tensor.name} has unsupported weight type {tensor.type_name}")


def build_linear(tensor: GGUFTensor) -> LinearWeight:
    """Repack one GGUF matrix tensor (numpy shape [N, K]) for the matmul kernels."""
    return build_linear_fused([tensor])


def build_linear_fused(tensors: list[GGUFTensor]) -> LinearWeight:
    """Repack matrices of one format and one K, stacked along N (e.g. q, k, v -> qkv)."""
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
    parts = [decode_blocks(fmt, t.data, k) for t in tensors]
    g = parts[0].group_size
    bits = max(p.bits for p in parts)
    ng = k // g
    nt = -(-n // TILE)
    dec_q = np.concatenate([p.q for p in parts], axis=0) if len(parts) > 1 else parts[0].q
    dec_scale = np.concatenate([p.scale for p in parts], axis=0)
    dec_min = np.concatenate([p.min for p in parts], axis=0)
    scale, minv = _as_half_if_exact(
        np.ascontiguousarray(_tile_rows(dec_scale, nt).transpose(0, 2, 1)),  # [NT, NG, TILE]
        np.ascontiguousarray(_tile_rows(dec_min, nt).transpose(0, 2, 1)))
    q = _tile_rows(dec_q.reshape(n, ng, g), nt)  # [NT, TILE, NG, G]
    if bits == 4 and g == 32:
        q = q.astype(np.uint8)
        lo = q[..., :16].reshape(nt, 4, 16, ng, 4, 4)  # [NT, row block c, row r, NG, quad d, byte b]
        hi = q[..., 16:].reshape(nt, 4, 16, ng, 4, 4)
        packed = (lo | (hi << 4)).transpose(0, 3, 4, 1, 2, 5)  # [NT, NG, d, c, r, b] (nibble_dot.py)
        codes = np.ascontiguousarray(packed).reshape(nt, ng, 16 * TILE)
        return LinearWeight("q4", n, k, fmt, codes, scale, minv)
    if g not in (16, 32):
        raise ModelLoadError(f"weight type {fmt} has groups of {g} inputs; the kernels take 16 or 32")
    # one signed byte per code (every format's codes lie in -128..127), inputs in pairs
    pairs = q.astype(np.int8).reshape(nt, TILE, ng, g // 2, 2)  # [NT, r, NG, p, e]
    codes = np.ascontiguousarray(pairs.transpose(0, 2, 3, 1, 4)).reshape(nt, ng, g // 2, 2 * TILE)
    return LinearWeight("q8", n, k, fmt, codes, scale, minv)


def matmul(x: np.ndarray, weight: LinearWeight, out: np.ndarray) -> np.ndarray:
    """out [M, N] = x [M, K] @ W^T, for x float32 C-contiguous."""
    if weight.kind == "q4":
        matmul_q4(x, weight.codes, weight.scale, weight.minv, out)
    elif weight.kind == "q8":
        matmul_q8(x, weight.codes, weight.scale, weight.minv, out)
    else:
        np.dot(x, weight.codes.T, out=out)
    return out
