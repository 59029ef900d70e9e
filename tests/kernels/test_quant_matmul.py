"""The tiled int16-activation matmul against NumPy references.

Two references per case: the exact arithmetic of the scheme (activations rounded to int16 per 32
inputs, exact products with the weight codes, float finish) which the kernel must match to float32
rounding; and the float64 product with the unrounded activations, which it must match within the
error that the activation rounding can cause (computed per output, not a fixed tolerance).
"""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pagedserve.kernels.int16_dot import HAS_VNNI
from pagedserve.kernels.activation_codes import quantize_activations
from pagedserve.model.forward import embed
from pagedserve.model.weight_formats import QUANT_FORMATS, decode_blocks, dequantize
from pagedserve.model.weight_layout import build_linear, matmul
from tests.kernels.helpers import assert_rows_batch_invariant, make_tensor, matmul_layouts_case, numpy_quantize
from tests.kernels.widened_layout import widened_linear


def test_quantize_activations_matches_numpy():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 96)) * rng.uniform(0.01, 100, (5, 1))).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero block: scale 0, codes 0
    x[2, 40] = 1e-30  # tiny values still round sanely
    xq = np.empty(x.shape, np.int16)
    dx = np.empty((5, 3), np.float32)
    xsum = np.empty((5, 6), np.float32)
    quantize_activations(x, 16, xq, dx, xsum)
    ref_q, ref_d = numpy_quantize(x)
    np.testing.assert_array_equal(xq, ref_q.astype(np.int16))
    np.testing.assert_array_equal(dx, ref_d)
    assert np.abs(xq.astype(np.int32)).max() <= 32767
    np.testing.assert_allclose(xsum, x.reshape(5, 6, 16).sum(axis=2), rtol=1e-5, atol=1e-6)


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
    exact = x.astype(np.float64) @ w.T
    size = np.abs(exact).max()
    if weight.kind == "f32":
        np.testing.assert_allclose(out, exact, rtol=0, atol=2e-6 * size * np.sqrt(num_in / 32))
        return
    # 1) the scheme's own arithmetic: scale * code * (xq * dx) + min * x, summed in float64
    dec = decode_blocks(fmt, tensor.data, num_in)
    g = dec.group_size
    xq, dx = numpy_quantize(x)
    x_rounded = xq * np.repeat(dx, 32, axis=1)  # [M, K]
    w_codes = dec.q.astype(np.float64) * np.repeat(dec.scale, g, axis=1)  # [N, K] scale * code
    w_min = np.repeat(dec.min, g, axis=1).astype(np.float64)
    scheme = x_rounded @ w_codes.T + x.astype(np.float64) @ w_min.T
    np.testing.assert_allclose(out, scheme, rtol=0, atol=2e-6 * size * np.sqrt(num_in / 32))
    # 2) against the unrounded product: off by at most sum_k |scale * code| * |x - xq * dx|
    bound = np.abs(x.astype(np.float64) - x_rounded) @ np.abs(w_codes).T
    assert np.all(np.abs(out - exact) <= bound + 2e-6 * size * np.sqrt(num_in / 32))
    assert np.all(bound <= 2e-5 * np.abs(x).sum(axis=1, keepdims=True) * np.abs(w_codes).max())


def test_matmul_is_batch_invariant():
    """A row's output is bit-identical alone and inside batches of other sizes (every pass size)."""
    for fmt in ("Q4_1", "Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"):
        num_in = 512 if fmt.endswith("_K") else 160
        assert_rows_batch_invariant(build_linear(make_tensor(fmt, 130, num_in, seed=3)), num_in)


_PORTABLE_SCRIPT = """
import sys
import numpy as np
from pagedserve.kernels.int16_dot import HAS_VNNI
from tests.kernels.helpers import matmul_layouts_case
assert not HAS_VNNI
np.save(sys.argv[1], matmul_layouts_case())
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VNNI, reason="this CPU has no AVX-512 VNNI: its native path is the portable "
                    "path, so the comparison would compare the portable path with itself")
def test_portable_integer_path_gives_identical_results(tmp_path):
    """The path for CPUs without AVX-512 VNNI (forced in a subprocess with its own kernel cache)
    computes the same integer sums, so the same bits, as the path this machine runs."""
    env = dict(os.environ, PAGEDSERVE_PORTABLE_INT="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    result = tmp_path / "portable.npy"
    subprocess.run([sys.executable, "-c", _PORTABLE_SCRIPT, str(result)], env=env, check=True,
                   cwd=Path(__file__).resolve().parents[2], timeout=1800)
    np.testing.assert_array_equal(np.load(result), matmul_layouts_case())


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_half_scales_give_the_bits_of_float32_scales(fmt):
    """Legacy formats keep their f16 scales (and Q4_1/Q5_1 mins) as half bits; the kernel's result
    is the same bit for bit as with the float32 values (half -> float32 is exact)."""
    weight = build_linear(make_tensor(fmt, 70, 96, seed=21))
    assert weight.scale.dtype == np.uint16
    as_f32 = replace(weight, scale=weight.scale.view(np.float16).astype(np.float32))
    if weight.minv.ndim == 3:  # affine: a half min per group; else a float32 factor [1]
        as_f32 = replace(as_f32, minv=weight.minv.view(np.float16).astype(np.float32))
    x = np.random.default_rng(22).standard_normal((6, 96)).astype(np.float32)
    a, b = np.empty((6, 70), np.float32), np.empty((6, 70), np.float32)
    np.testing.assert_array_equal(matmul(x, weight, a), matmul(x, as_f32, b))


# ---- the file-size layouts against the widened layouts they replaced --------------------------

_ODD_ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 33)


@pytest.mark.parametrize("fmt", QUANT_FORMATS)
@pytest.mark.parametrize("num_out", [70, 200])
def test_file_size_layout_gives_the_widened_layouts_bits(fmt, num_out):
    """Same weights, two layouts: the matmul outputs and the embedding rows are bit-identical (the
    integer sums are exact and the float finish, with scales computed in the kernel, is the same)."""
    for num_in in ((256, 768) if fmt.endswith("_K") else (32, 96, 544)):
        tensor = make_tensor(fmt, num_out, num_in, seed=num_out + num_in)
        new, old = build_linear(tensor), widened_linear(fmt, tensor.data, num_out, num_in)
        assert new.nbytes < old.nbytes or fmt == "Q4_1"
        rng = np.random.default_rng(num_in)
        for num_rows in _ODD_ROWS:
            x = rng.standard_normal((num_rows, num_in)).astype(np.float32)
            a = np.full((num_rows, num_out), np.nan, np.float32)
            b = np.full((num_rows, num_out), np.nan, np.float32)
            np.testing.assert_array_equal(matmul(x, new, a).view(np.uint32), matmul(x, old, b).view(np.uint32))
        ids = np.array([0, 63, 64, num_out - 1], np.int32)
        e1, e2 = np.empty((4, num_in), np.float32), np.empty((4, num_in), np.float32)
        embed(new, ids, 0.5, e1)
        embed(old, ids, 0.5, e2)
        np.testing.assert_array_equal(e1.view(np.uint32), e2.view(np.uint32))
        np.testing.assert_array_equal(e1, 0.5 * dequantize(fmt, tensor.data, num_in)[ids])
