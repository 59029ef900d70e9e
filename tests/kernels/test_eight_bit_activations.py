"""The opt-in 8-bit-activation kernels (an int8 view of the nibble codes) against NumPy: the
documented rounding (int8 per 32 inputs, scale = max|x| / 127), then the rounded activations
times the dequantized weights (codes and minimum alike)."""

from dataclasses import replace

import numpy as np
import pytest

from pagedserve.model.weight_formats import decode_blocks
from pagedserve.model.weight_layout import build_linear, matmul
from tests.kernels.helpers import assert_rows_batch_invariant, make_tensor

# Every nibble layout (4, 5 and 6-bit codes) and every scale mode (affine, factor, K-quant records),
# each compiled once: Q4_0 and Q5_K add no new combination (and each costs a compile in the suite).
FORMATS = ("Q4_1", "Q5_0", "Q4_K", "Q6_K")


def numpy_quantize_8bit(x: np.ndarray) -> np.ndarray:
    """x rounded as the kernels round it, in float64: per 32 inputs int8 codes times max|x| / 127."""
    m, k = x.shape
    blocks = x.reshape(m, k // 32, 32)
    dx = np.abs(blocks).max(axis=2) / np.float32(127.0)  # float32, as the kernel divides
    with np.errstate(divide="ignore"):
        inv = np.where(dx > 0, np.float32(1.0) / dx, np.float32(0.0)).astype(np.float32)
    codes = np.clip(np.rint(blocks * inv[:, :, None]), -127, 127)
    return (codes * dx[:, :, None].astype(np.float64)).reshape(m, k)


def eight_bit(weight):
    return replace(weight, codes=weight.codes.view(np.int8))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("num_rows", [1, 3, 13])  # 13 rows: passes of 8, 4 and 1
def test_matches_the_numpy_scheme(fmt, num_rows):
    num_in = 512 if fmt.endswith("_K") else 96
    num_out = 70  # not a multiple of the 64-row tile
    tensor = make_tensor(fmt, num_out, num_in, seed=num_rows)
    weight = eight_bit(build_linear(tensor))
    x = np.random.default_rng(7).standard_normal((num_rows, num_in)).astype(np.float32)
    out = np.full((num_rows, num_out), np.nan, dtype=np.float32)
    matmul(x, weight, out)
    dec = decode_blocks(fmt, tensor.data, num_in)
    w_codes = dec.q.astype(np.float64) * np.repeat(dec.scale, dec.group_size, axis=1)  # [N, K]
    w_min = np.repeat(dec.min, dec.group_size, axis=1).astype(np.float64)
    scheme = numpy_quantize_8bit(x) @ (w_codes + w_min).T
    size = np.abs(scheme).max()
    np.testing.assert_allclose(out, scheme, rtol=0, atol=2e-6 * size * np.sqrt(num_in / 32))
    # and it is the 8-bit rounding, not the 16-bit one: the exact kernels' result is elsewhere
    exact = np.empty_like(out)
    matmul(x, build_linear(tensor), exact)
    assert np.abs(exact - out).max() > 100 * 2e-6 * size


def test_rows_are_independent_of_the_batch():
    """Batch invariance holds within the 8-bit mode: a row alone equals that row in any batch."""
    for fmt in ("Q4_1", "Q4_K", "Q6_K"):
        num_in = 512 if fmt.endswith("_K") else 160
        assert_rows_batch_invariant(eight_bit(build_linear(make_tensor(fmt, 130, num_in, seed=3))), num_in)
