"""Helpers shared by kernel tests (and the weight-format tests): random GGUF blocks and weight
matrices of every format, and the NumPy version of the activation rounding."""

from __future__ import annotations

import gguf
import numpy as np
from gguf import GGMLQuantizationType

from pagedserve.model.gguf_file import GGUFTensor
from pagedserve.model.weight_layout import build_linear, matmul

# byte offsets of the f16 scale fields inside one block, per format
_F16_FIELDS = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
}


def random_blocks(fmt: str, num_rows: int, num_blocks: int, seed: int) -> np.ndarray:
    """Random bytes for [num_rows, num_blocks] blocks of `fmt`, with finite f16 scales."""
    rng = np.random.default_rng(seed)
    _, nbytes = gguf.GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    raw = rng.integers(0, 256, size=(num_rows, num_blocks, nbytes), dtype=np.uint8)
    for off in _F16_FIELDS[fmt]:
        halves = rng.uniform(-2, 2, size=(num_rows, num_blocks)).astype(np.float16)
        raw[..., off:off + 2] = halves.view(np.uint8).reshape(num_rows, num_blocks, 2)
    return raw.reshape(num_rows, num_blocks * nbytes)


def make_tensor(fmt: str, num_out: int, num_in: int, seed: int) -> GGUFTensor:
    """A random [num_out, num_in] GGUF matrix of `fmt` (float formats: standard normal values)."""
    if fmt in ("F32", "F16", "BF16"):
        values = np.random.default_rng(seed).standard_normal((num_out, num_in)).astype(np.float32)
        data = values if fmt == "F32" else values.astype(np.float16).view(np.uint8) if fmt == "F16" \
            else (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return GGUFTensor("w", fmt, (num_out, num_in), data)
    per_block, _ = gguf.GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    raw = random_blocks(fmt, num_out, num_in // per_block, seed)
    return GGUFTensor("w", fmt, (num_out, num_in), raw)


def numpy_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented activation rounding in NumPy float32: (xq [M, K] float64, dx [M, K/32])."""
    m, k = x.shape
    blocks = x.reshape(m, k // 32, 32)
    dx = np.abs(blocks).max(axis=2) / np.float32(32767.0)  # float32
    with np.errstate(divide="ignore"):
        inv = np.where(dx > 0, np.float32(1.0) / dx, np.float32(0.0)).astype(np.float32)
    xq = np.clip(np.rint(blocks * inv[:, :, None]), -32767, 32767)
    return xq.reshape(m, k).astype(np.float64), dx


def matmul_layouts_case() -> np.ndarray:
    """Matmul outputs of every code layout (nibbles with 0, 1 and 2 high-bit planes, int8 codes) for
    7 rows, with each scale mode (affine, factor, K-quant records) once: computed once per integer
    path (native VNNI, portable) and compared."""
    outs = []
    for fmt, num_in in (("Q4_1", 160), ("Q4_K", 256), ("Q5_0", 160), ("Q6_K", 256), ("Q8_0", 160)):
        weight = build_linear(make_tensor(fmt, 70, num_in, seed=11))
        x = np.random.default_rng(12).standard_normal((7, num_in)).astype(np.float32)
        out = np.empty((7, 70), np.float32)
        outs.append(matmul(x, weight, out))
    return np.concatenate(outs, axis=1)


def assert_rows_batch_invariant(weight, num_in: int) -> None:
    """A row's matmul output [.., 130] is bit-identical alone and inside batches of other sizes
    (every pass size: 1, 2, 3, 7 and 19 rows)."""
    batch = np.random.default_rng(5).standard_normal((19, num_in)).astype(np.float32)
    full = np.empty((19, 130), np.float32)
    matmul(batch, weight, full)
    for lo, hi in ((0, 1), (7, 9), (16, 19), (5, 12)):
        part = np.empty((hi - lo, 130), np.float32)
        matmul(np.ascontiguousarray(batch[lo:hi]), weight, part)
        np.testing.assert_array_equal(part, full[lo:hi])
