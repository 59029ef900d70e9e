"""Activations as integer codes for the integer-dot matmul kernels (`kernels/quant_matmul.py`).

Each activation row is rounded to int16 per 32 inputs (scale = max|x| / 32767, round to nearest);
alongside: the float sum of each weight group's inputs (for the weights' minimum), the int16 codes
split into bytes (for `kernels/nibble_dot.py`) and, for Q6_K's codes stored + 32, -32 times the
exact integer sum of each group's codes.
"""

from __future__ import annotations

import numpy as np

from pagedserve.kernels.fast_exp import f32_from_bits
from pagedserve.kernels.jit import jit

ACT_BLOCK = 32  # activation inputs per int16 scale


@jit
def quantize_activations(x, group_size, xq, dx, xsum):
    """x [M, K] f32 -> xq [M, K] int16 and dx [M, K/32] f32 (xq * dx ~ x, |xq| <= 32767), and
    xsum [M, K/G] f32: the float sum of x over each group of group_size inputs (ascending).
    An all-zero block gets scale 0 and codes 0."""
    M, K = x.shape
    for m in range(M):
        row = np.ascontiguousarray(x[m])  # no copy for the C-contiguous inputs of the model
        _quantize_row(row, row.view(np.int32), xq[m], dx[m])
        _group_sums(row, group_size, xsum[m])


@jit
def _quantize_row(row, bits, codes, scales):
    # Loops of a constant 32 over 1-D rows: LLVM unrolls and vectorises them (slices per block or
    # 2-D indexing ran 3-5x slower). max |x| is taken as the largest sign-cleared bit pattern: for
    # floats that are not NaN the integer order of the bits is the order of the magnitudes, and an
    # integer max vectorises (a float max does not without fastmath); a NaN makes its block NaN.
    for b in range(row.shape[0] // ACT_BLOCK):
        k0 = b * ACT_BLOCK
        top = np.int32(0)
        for k in range(ACT_BLOCK):
            top = max(top, bits[k0 + k] & np.int32(0x7FFFFFFF))
        d = f32_from_bits(top) / np.float32(32767.0)
        scales[b] = d
        inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
        for k in range(ACT_BLOCK):
            v = np.rint(row[k0 + k] * inv)
            # x * (32767 / amax) can round to 32767.002: the clip keeps |xq| <= 32767
            codes[k0 + k] = np.int16(min(max(v, np.float32(-32767.0)), np.float32(32767.0)))


@jit
def _group_sums(row, group_size, sums):
    # Each group summed in ascending order, four groups at a time: one chain of dependent adds per
    # group, but four chains in flight (one chain at a time bounded the whole quantization).
    n_groups = row.shape[0] // group_size
    g = 0
    while g + 4 <= n_groups:
        k0 = g * group_size
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for k in range(group_size):
            s0 += row[k0 + k]
            s1 += row[k0 + group_size + k]
            s2 += row[k0 + 2 * group_size + k]
            s3 += row[k0 + 3 * group_size + k]
        sums[g] = s0
        sums[g + 1] = s1
        sums[g + 2] = s2
        sums[g + 3] = s3
        g += 4
    while g < n_groups:
        s = np.float32(0.0)
        for k in range(g * group_size, (g + 1) * group_size):
            s += row[k]
        sums[g] = s
        g += 1


@jit
def activation_codes(x, group_size):
    M, K = x.shape
    xq = np.empty((M, K), np.int16)
    dx = np.empty((M, K // ACT_BLOCK), np.float32)
    xsum = np.empty((M, K // group_size), np.float32)
    quantize_activations(x, group_size, xq, dx, xsum)
    return xq, dx, xsum


@jit
def split_activation_bytes(xq, xl, xh):
    """xq [M, K] int16 -> its low bytes xl [M, K] uint8 and high bytes xh [M, K] int8 (signed),
    so that xq = 256 * xh + xl (the operands of kernels/nibble_dot.py)."""
    for m in range(xq.shape[0]):
        for k in range(xq.shape[1]):
            v = np.int32(xq[m, k])
            xl[m, k] = np.uint8(v & 255)
            xh[m, k] = np.int8(v >> 8)


@jit
def code_offset_sums(xq, group_size, offset, sums):
    """sums [M, K/G] int32 = offset * the exact sum of the int16 activations of each group (the
    share of codes stored + offset; |offset| * 32767 * G fits in int32)."""
    for m in range(xq.shape[0]):
        for j in range(sums.shape[1]):
            s = np.int32(0)
            for k in range(j * group_size, (j + 1) * group_size):
                s += np.int32(xq[m, k])
            sums[m, j] = s * np.int32(offset)
