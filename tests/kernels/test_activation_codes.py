"""The nibble kernels' byte operands (`kernels/activation_codes.byte_operands_row`: int16 codes
split into bytes, Q6_K's offset sums, padded rows) against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from pagedserve.kernels.activation_codes import (
    byte_operands_row, empty_activation_codes, empty_byte_operands,
)
from pagedserve.kernels.jit import jit
from tests.kernels.helpers import numpy_quantize


@jit
def _byte_operands(x, group_size, code_offset):
    M, K = x.shape
    xq, dx, xsum = empty_activation_codes(M, K, group_size)
    xl, xh, xqsum = empty_byte_operands(M, K, xsum.shape[1], code_offset)
    for m in range(M):
        byte_operands_row(x, m, group_size, code_offset, xq, dx, xsum, xl, xh, xqsum)
    return xq, dx, xsum, xl, xh, xqsum


@pytest.mark.parametrize("group_size, code_offset", [(32, 0), (16, 32)])
def test_byte_operands_match_numpy(group_size, code_offset):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 160)) * rng.uniform(0.01, 50, (3, 1))).astype(np.float32)
    xq, dx, xsum, xl, xh, xqsum = _byte_operands(x, group_size, code_offset)
    ref_q, ref_d = numpy_quantize(x)
    k, ng = x.shape[1], x.shape[1] // group_size
    # every row is padded (ROW_PAD_BYTES): its stride is not a multiple of the 4 KB cache way
    assert xq.shape[1] > k and xl.shape[1] > k and dx.shape[1] > k // 32 and xsum.shape[1] > ng
    np.testing.assert_array_equal(xq[:, :k], ref_q.astype(np.int16))
    np.testing.assert_array_equal(dx[:, :k // 32], ref_d)
    np.testing.assert_array_equal(xl[:, :k].astype(np.int32) + 256 * xh[:, :k].astype(np.int32), ref_q)
    assert xl.dtype == np.uint8 and xh.dtype == np.int8
    np.testing.assert_allclose(xsum[:, :ng], x.reshape(3, ng, group_size).sum(axis=2), rtol=1e-5, atol=1e-5)
    if code_offset:
        assert xqsum.shape == xsum.shape  # one row stride for both
        sums = ref_q.reshape(3, ng, group_size).sum(axis=2)
        np.testing.assert_array_equal(xqsum[:, :ng], (-code_offset * sums).astype(np.int32))
    else:
        assert xqsum.size == 0
