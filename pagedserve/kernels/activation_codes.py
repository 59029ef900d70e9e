"""Activations as integer codes for the integer-dot matmul kernels (`kernels/quant_matmul.py`).

Each activation row is rounded to int16 per 32 inputs (scale = max|x| / 32767, round to nearest);
alongside: the float sum of each weight group's inputs (for the weights' minimum), the int16 codes
split into bytes (for `kernels/nibble_dot.py`) and, for Q6_K's codes stored + 32, -32 times the
exact integer sum of each group's codes. The opt-in 8-bit activations (`int8_operands_row`) are
rounded the same way to int8 (scale = max|x| / 127). Rows are padded (ROW_PAD_BYTES) and made on one thread
(a parallel loop here sits in every matmul specialisation and slowed the cold compile more than it
sped up prefill).
"""

from __future__ import annotations

import numpy as np

from pagedserve.kernels.fast_exp import f32_from_bits
from pagedserve.kernels.jit import jit

ACT_BLOCK = 32  # activation inputs per int16 scale
# Bytes added to every row of the activation codes: with rows K bytes apart and K a multiple of
# 4096 (FFN widths), the 8 rows of a pass all map to one set of the 8-way L1 cache and evict each
# other on every group; one extra line per row spreads them over 8 sets. (A 1B model's ffn_down,
# Q6_K, K = 8192, 32 rows: 0.58x -> 1.07x the widened layout in one process, but the same
# comparison swings between 0.6x and 2x from process to process, so no steady gain is claimed.)
ROW_PAD_BYTES = 64
# The per-row float32 (and int32) arrays beside them (dx, xsum, xqsum: 1-2 KB a row at K = 8192)
# aliased the same way: one line more per row.
ROW_PAD_VALUES = ROW_PAD_BYTES // 4


@jit
def quantize_activations(x, group_size, xq, dx, xsum):
    """x [M, K] f32 -> xq [M, >= K] int16 and dx [M, K/32] f32 (xq * dx ~ x, |xq| <= 32767), and
    xsum [M, K/G] f32: the float sum of x over each group of group_size inputs (ascending).
    An all-zero block gets scale 0 and codes 0."""
    for m in range(x.shape[0]):
        quantize_row(x, m, group_size, xq, dx, xsum)


@jit
def quantize_row(x, m, group_size, xq, dx, xsum):
    """Row m of `quantize_activations` (rows are independent: any thread may take any row)."""
    row = np.ascontiguousarray(x[m])  # no copy for the C-contiguous inputs of the model
    _quantize_row(row, row.view(np.int32), xq[m], dx[m], np.float32(32767.0))
    _group_sums(row, group_size, xsum[m])


@jit
def _quantize_row(row, bits, codes, scales, top_code):
    # codes = round(x / scale) per block, scale = max|x| / top_code, |codes| <= top_code (float32).
    # Loops of a constant 32 over 1-D rows: LLVM unrolls and vectorises them (slices per block or
    # 2-D indexing ran 3-5x slower). max |x| is taken as the largest sign-cleared bit pattern: for
    # floats that are not NaN the integer order of the bits is the order of the magnitudes, and an
    # integer max vectorises (a float max does not without fastmath); a NaN makes its block NaN.
    for b in range(row.shape[0] // ACT_BLOCK):
        k0 = b * ACT_BLOCK
        top = np.int32(0)
        for k in range(ACT_BLOCK):
            top = max(top, bits[k0 + k] & np.int32(0x7FFFFFFF))
        d = f32_from_bits(top) / top_code
        scales[b] = d
        inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
        for k in range(ACT_BLOCK):
            v = np.rint(row[k0 + k] * inv)
            # x * (32767 / amax) can round to 32767.002: the clip keeps |xq| <= 32767
            codes[k0 + k] = min(max(v, -top_code), top_code)


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
def empty_activation_codes(num_rows, num_cols, group_size):
    """Uninitialised xq [M, K + 32] int16, dx [M, K/32 + 16] and xsum [M, K/G + 16] f32, for
    `quantize_row` (the last columns are padding: see ROW_PAD_BYTES)."""
    xq = np.empty((num_rows, num_cols + ROW_PAD_BYTES // 2), np.int16)
    dx = np.empty((num_rows, num_cols // ACT_BLOCK + ROW_PAD_VALUES), np.float32)
    xsum = np.empty((num_rows, num_cols // group_size + ROW_PAD_VALUES), np.float32)
    return xq, dx, xsum


@jit
def empty_byte_operands(num_rows, num_cols, xsum_cols, code_offset):
    """Uninitialised xl [M, K + 64] uint8, xh [M, K + 64] int8 (padded rows) and xqsum
    [M, xsum_cols] int32 (rows as wide as xsum's, for one row stride; no rows' worth when
    code_offset is 0), for `byte_operands_row`."""
    xl = np.empty((num_rows, num_cols + ROW_PAD_BYTES), np.uint8)
    xh = np.empty((num_rows, num_cols + ROW_PAD_BYTES), np.int8)
    xqsum = np.empty((num_rows if code_offset != 0 else 0, xsum_cols), np.int32)
    return xl, xh, xqsum


@jit
def byte_operands_row(x, m, group_size, code_offset, xq, dx, xsum, xl, xh, xqsum):
    """Row m of the nibble kernels' operands, in one pass while the row is in cache: the int16
    codes (`quantize_row`), split into bytes xq = 256 * xh + xl, and for codes stored +
    code_offset (Q6_K: 32), -code_offset times the exact integer sum of each group's codes."""
    quantize_row(x, m, group_size, xq, dx, xsum)
    codes, low, high = xq[m], xl[m], xh[m]
    for k in range(x.shape[1]):
        v = np.int32(codes[k])
        low[k] = np.uint8(v & 255)
        high[k] = np.int8(v >> 8)
    if code_offset != 0:
        _offset_sums(codes, x.shape[1], group_size, code_offset, xqsum[m])


@jit
def _code_sum(codes, k0, count):
    # the exact int32 sum of codes[k0 : k0 + count]
    s = np.int32(0)
    for k in range(k0, k0 + count):
        s += np.int32(codes[k])
    return s


@jit
def _offset_sums(codes, num_cols, group_size, code_offset, sums):
    # -code_offset times each group's exact integer code sum (codes stored + code_offset: Q6_K)
    for j in range(num_cols // group_size):
        sums[j] = _code_sum(codes, j * group_size, group_size) * np.int32(-code_offset)


@jit
def int8_operands_row(x, m, group_size, code_offset, dx, xsum, xh, xqsum):
    """Row m as 8-bit activations for the nibble kernels' 8-bit passes: int8 codes per 32 inputs
    (scale = max|x| / 127, round to nearest) in xh, their scales in dx, the sums of each group's
    rounded activations in xsum, and for codes stored + code_offset, -code_offset times each
    group's integer code sum."""
    row = np.ascontiguousarray(x[m])
    _quantize_row(row, row.view(np.int32), xh[m], dx[m], np.float32(127.0))
    _rounded_group_sums(xh[m], dx[m], x.shape[1], group_size, xsum[m])
    if code_offset != 0:
        _offset_sums(xh[m], x.shape[1], group_size, code_offset, xqsum[m])


@jit
def _rounded_group_sums(codes, scales, num_cols, group_size, sums):
    # The sum of each group's rounded activations (scale * integer code sum; a group lies within
    # one 32-input block), so the weights' minimum meets the same rounded inputs as their codes:
    # the product is then rounded inputs times the dequantized weights, whose error scales with
    # the weights themselves. With the exact float sums (as at 16 bits) the error of a Q4_1 or
    # Q4_K matrix scaled with scale * code instead, the uncentred part of the weight, and the
    # 8-bit mode sat twice as far from float32 as llama.cpp (mean |delta logprob| 0.188 vs 0.095).
    for j in range(num_cols // group_size):
        sums[j] = scales[j * group_size // ACT_BLOCK] * np.float32(_code_sum(codes, j * group_size, group_size))
