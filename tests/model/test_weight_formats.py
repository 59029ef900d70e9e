"""Dequantization of every GGUF weight format equals the gguf package's own NumPy implementation."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from pagedserve.model.weight_formats import QUANT_FORMATS, dequantize

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


@pytest.mark.parametrize("fmt", QUANT_FORMATS)
@pytest.mark.parametrize("num_rows,num_blocks", [(1, 1), (3, 2), (7, 5)])
def test_dequantize_matches_gguf_quants(fmt, num_rows, num_blocks):
    per_block, _ = gguf.GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    raw = random_blocks(fmt, num_rows, num_blocks, seed=num_rows * 31 + num_blocks)
    expected = gguf_dequantize(raw, GGMLQuantizationType[fmt]).reshape(num_rows, -1)
    ours = dequantize(fmt, raw, per_block * num_blocks)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("fmt", ["F16", "BF16", "F32"])
def test_float_formats(fmt):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((5, 9)).astype(np.float32)
    if fmt == "F16":
        raw = values.astype(np.float16).view(np.uint8)
        expected = values.astype(np.float16).astype(np.float32)
    elif fmt == "BF16":
        raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        expected = ((values.view(np.uint32) >> 16) << 16).view(np.float32)
    else:
        raw, expected = values, values
    np.testing.assert_array_equal(dequantize(fmt, raw, 9), expected)
