"""Repacking a matrix in chunks of rows (model/weight_layout.REPACK_ROWS) gives the arrays of
repacking it whole, for every quantized format, single and fused (stacked) matrices."""

from __future__ import annotations

import numpy as np
import pytest

from pagedserve.model import weight_layout
from pagedserve.model.weight_formats import QUANT_FORMATS
from pagedserve.model.weight_layout import build_linear_fused
from tests.kernels.helpers import make_tensor


@pytest.mark.parametrize("fmt", QUANT_FORMATS)
def test_chunked_repack_equals_whole_repack(fmt, monkeypatch):
    num_in = 256 if fmt.endswith("_K") else 96
    # 3 matrices stacked: chunk boundaries fall inside the first and across the second and third;
    # 200 + 70 + 130 rows also leave a padded last tile
    tensors = [make_tensor(fmt, rows, num_in, seed=rows) for rows in (200, 70, 130)]
    whole = build_linear_fused(tensors)
    monkeypatch.setattr(weight_layout, "REPACK_ROWS", 2 * weight_layout.TILE)
    chunked = build_linear_fused(tensors)
    assert (chunked.kind, chunked.num_out, chunked.num_in) == (whole.kind, whole.num_out, whole.num_in)
    for name in ("codes", "scale", "minv"):
        a, b = getattr(chunked, name), getattr(whole, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
