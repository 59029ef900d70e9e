"""Dequantization of every GGUF weight format equals the gguf package's own NumPy implementation."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from pagedserve.model.weight_formats import QUANT_FORMATS, dequantize
from tests.kernels.helpers import random_blocks

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
