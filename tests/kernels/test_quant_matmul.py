"""The tiled quantized matmul against a float64 NumPy product of the dequantized weights."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType

from model.gguf_file import GGUFTensor
from model.weight_formats import QUANT_FORMATS, dequantize
from model.weight_layout import build_linear, matmul
from tests.model.test_weight_formats import random_blocks


def make_tensor(fmt: str, num_out: int, num_in: int, seed: int) -> GGUFTensor:
    if fmt in ("F32", "F16", "BF16"):
        values = np.random.default_rng(seed).standard_normal((num_out, num_in)).astype(np.float32)
        data = values if fmt == "F32" else values.astype(np.float16).view(np.uint8) if fmt == "F16" \
            else (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return GGUFTensor("w", fmt, (num_out, num_in), data)
    per_block, _ = gguf.GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    raw = random_blocks(fmt, num_out, num_in // per_block, seed)
    return GGUFTensor("w", fmt, (num_out, num_in), raw)


@pytest.mark.parametrize("fmt", QUANT_FORMATS + ("F32", "F16", "BF16"))
@pytest.mark.parametrize("num_rows", [1, 3, 8, 13])
def test_matmul_every_format(fmt, num_rows):
    num_in = 512 if fmt.endswith("_K") else 96
    num_out = 70  # not a multiple of the 64-row tile: exercises the padded tail
    tensor = make_tensor(fmt, num_out, num_in, seed=num_rows)
    weight = build_linear(tensor)
    w = dequantize(fmt, tensor.data, num_in).astype(np.float64)
    x = np.random.default_rng(7).standard_normal((num_rows, num_in)).astype(np.float32)
    out = np.full((num_rows, num_out), np.nan, dtype=np.float32)
    matmul(x, weight, out)
    expected = x.astype(np.float64) @ w.T
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6 * scale * np.sqrt(num_in / 32))


def test_matmul_is_batch_invariant():
    """A row's output is bit-identical alone and inside batches of other sizes."""
    weight = build_linear(make_tensor("Q4_1", 130, 160, seed=3))
    rng = np.random.default_rng(5)
    batch = rng.standard_normal((19, 160)).astype(np.float32)
    full = np.empty((19, 130), np.float32)
    matmul(batch, weight, full)
    for i in (0, 7, 18):
        alone = np.empty((1, 130), np.float32)
        matmul(np.ascontiguousarray(batch[i:i + 1]), weight, alone)
        np.testing.assert_array_equal(alone[0], full[i])
