"""Quantized matrix multiply: out[M, N] = x[M, K] @ W[N, K]^T with int16 activations.

Each activation row is rounded to int16 per 32 inputs (`kernels/activation_codes.py`); the
kernels then sum weight code * activation code exactly in int32 per weight group and finish each
group in float32 with the weight's scale and minimum: `kernels/nibble_dot.py` for codes in nibbles
(4-bit codes, and 5-/6-bit codes rebuilt from nibbles and high-bit planes; the activations split
into bytes, `vpdpbusd`), `kernels/int16_dot.py` for 8-bit codes (`vpdpwssd`). The rounding adds at
most 2^-16 of each block's largest magnitude per input (tests/kernels/test_quant_matmul.py bounds
the output error by it), far below the weights' own quantization error. 8-bit activations (per 32
inputs, as llama.cpp's Q8 activations) failed the fidelity bar as the default; they are an opt-in
for the nibble layouts (`matmul_q4_a8` etc., selected by an int8 view of the codes): one
`vpdpbusd` per code vector instead of two.

Tiled weight layout (built once at load by `model/weight_layout.py`), tile t = output rows
64t .. 64t+63, group g = inputs G*g .. G*g+G-1:
    nibbles: codes [NT, NG, B] uint8      nibble-packed quads of inputs (nibble_dot.py), B = 1024
                                          (4-bit codes, G = 32), 1280 (5-bit: + a high-bit plane,
                                          G = 32) or 768 (6-bit: + 2 planes, G = 16; high_bits.py)
    int8:    codes [NT, NG, G/2, 128] int8  one signed code per byte, pairs of inputs (G = 16, 32)
    scale, minv                           w = scale * code + min per group, stored in one of the
                                          modes of `kernels/group_scales.py`: [NT, NG, 64] scale and
                                          min (float32 or half bits); [NT, NG, 64] half scale and a
                                          factor minv [1] (min = factor * scale); or K-quant records
                                          [NT, K/256, bytes] uint8 (minv unused)
(see the kernels' files for the byte order). A row's result depends only on that row: integer
sums are exact and the float finish is the same sequence for every row (batch invariance; tested).
"""

from __future__ import annotations

import numba
import numba.extending
import numpy as np

from pagedserve.kernels.activation_codes import (
    byte_operands_row, empty_activation_codes, empty_byte_operands, int8_operands_row, quantize_row,
)
from pagedserve.kernels.int16_dot import MAX_HALF_ROWS, MAX_ROWS, TILE, tile_pass
from pagedserve.kernels.jit import jit, parallel_jit
from pagedserve.kernels.nibble_dot import group_bytes, nibble_tile_pass
from pagedserve.kernels.stack_array import stack_f32

def tile_of(values, t):
    """A weight's per-tile array of tile t: values[t], or values itself when 1-D (a factor)."""
    raise NotImplementedError("call from compiled code only")


@numba.extending.overload(tile_of, jit_options={"cache": True, "nogil": True})
def _tile_of_overload(values, t):
    if values.ndim == 1:
        return lambda values, t: values
    return lambda values, t: values[t]


@jit
def _rows_pass(codes_t, scale_t, minv_t, xq, dx, xsum, m0, buf, group_size, rows, part):
    # `rows` and `part` must be literals: one compiled pass per (row count, part).
    tile_pass(codes_t.ctypes.data, scale_t, minv_t, xq[m0].ctypes.data,
              dx[m0].ctypes.data, xsum[m0].ctypes.data, buf.ctypes.data, codes_t.shape[0],
              xq.shape[1], xsum.shape[1], dx.shape[1], TILE, group_size, rows, part)


@jit
def _tile(codes, scale, minv, xq, dx, xsum, out, t, m_start, m_end, group_size):
    """Output columns of tile t for rows m_start .. m_end-1: passes of 8 rows over each half of
    the tile (each weight vector serves 8 rows), then passes of up to 4 rows over the whole tile."""
    buf = numba.carray(stack_f32(512), (MAX_HALF_ROWS, TILE))  # results before the column clip
    M = m_end
    n0 = t * TILE
    n = min(TILE, out.shape[1] - n0)
    cs = codes[t]
    ss = tile_of(scale, t)
    ms = tile_of(minv, t)
    m0 = m_start
    while m0 < M:
        rows = min(MAX_ROWS, M - m0)
        if M - m0 >= MAX_HALF_ROWS:
            rows = MAX_HALF_ROWS
            _rows_pass(cs, ss, ms, xq, dx, xsum, m0, buf, group_size, 8, 1)
            _rows_pass(cs, ss, ms, xq, dx, xsum, m0, buf, group_size, 8, 2)
        elif rows == 4:
            _rows_pass(cs, ss, ms, xq, dx, xsum, m0, buf, group_size, 4, 0)
        elif rows == 3:
            _rows_pass(cs, ss, ms, xq, dx, xsum, m0, buf, group_size, 3, 0)
        elif rows == 2:
            _rows_pass(cs, ss, ms, xq, dx, xsum, m0, buf, group_size, 2, 0)
        else:
            _rows_pass(cs, ss, ms, xq, dx, xsum, m0, buf, group_size, 1, 0)
        _copy_rows(buf, rows, n, out, m0, n0)
        m0 += rows


@jit
def _copy_rows(buf, rows, n, out, m0, n0):
    # a pass's results -> out[m0 : m0+rows, n0 : n0+n] (n < 64 only at the padded last tile)
    for mi in range(rows):
        for r in range(n):
            out[m0 + mi, n0 + r] = buf[mi, r]


@jit
def _nibble_pass(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, rows, part,
                 act_bits):
    # group_size, high_bits, rows and part must be literals: one compiled pass per combination.
    nibble_tile_pass(codes_t.ctypes.data, scale_t, minv_t, xl[m0].ctypes.data, xh[m0].ctypes.data,
                     dx[m0].ctypes.data, xsum[m0].ctypes.data, xqsum.ctypes.data + 4 * m0 * xsum.shape[1],
                     buf.ctypes.data, codes_t.shape[0], xl.shape[1], xsum.shape[1], dx.shape[1], TILE,
                     group_size, high_bits, rows, part, act_bits)


def _quarter_passes(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, act_bits):
    """8 rows from m0 over the 4 quarters of a tile when the codes have high-bit planes (returns
    True: each rebuilt code vector serves 8 rows); 4-bit codes keep passes of up to 4 rows (False,
    and nothing is compiled)."""
    raise NotImplementedError("call from compiled code only")


@numba.extending.overload(_quarter_passes, jit_options={"cache": True, "nogil": True})
def _quarter_passes_overload(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits,
                             act_bits):
    if not isinstance(high_bits, numba.types.IntegerLiteral):
        raise numba.core.errors.RequireLiteralValue(high_bits)
    if high_bits.literal_value == 0:
        return lambda codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, act_bits: False

    def impl(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, act_bits):
        _nibble_pass(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, 8, 3, act_bits)
        _nibble_pass(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, 8, 4, act_bits)
        _nibble_pass(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, 8, 5, act_bits)
        _nibble_pass(codes_t, scale_t, minv_t, xl, xh, dx, xsum, xqsum, m0, buf, group_size, high_bits, 8, 6, act_bits)
        return True

    return impl


@jit
def _nibble_tile(codes, scale, minv, xl, xh, dx, xsum, xqsum, out, t, m_start, m_end, group_size, high_bits,
                 act_bits):
    """Output columns of tile t for rows m_start .. m_end-1 (codes in nibbles): for 5- and 6-bit
    codes, passes of 8 rows over each quarter of the tile while 8 or more rows are left (a rebuilt
    code vector then serves 8 rows); then passes of up to 4 rows over each half of the tile while
    3 or more rows are left; then one pass of 1 or 2 rows over the whole tile."""
    buf = numba.carray(stack_f32(512), (8, TILE))  # results before the column clip
    M = m_end
    n0 = t * TILE
    n = min(TILE, out.shape[1] - n0)
    cs = codes[t]
    ss = tile_of(scale, t)
    ms = tile_of(minv, t)
    g, hb = group_size, high_bits
    m0 = m_start
    while m0 < M:
        rows = min(4, M - m0)
        if M - m0 >= 8 and _quarter_passes(cs, ss, ms, xl, xh, dx, xsum, xqsum, m0, buf, g, hb, act_bits):
            rows = 8
        elif rows == 4:
            _nibble_pass(cs, ss, ms, xl, xh, dx, xsum, xqsum, m0, buf, g, hb, 4, 1, act_bits)
            _nibble_pass(cs, ss, ms, xl, xh, dx, xsum, xqsum, m0, buf, g, hb, 4, 2, act_bits)
        elif rows == 3:
            _nibble_pass(cs, ss, ms, xl, xh, dx, xsum, xqsum, m0, buf, g, hb, 3, 1, act_bits)
            _nibble_pass(cs, ss, ms, xl, xh, dx, xsum, xqsum, m0, buf, g, hb, 3, 2, act_bits)
        elif rows == 2:
            _nibble_pass(cs, ss, ms, xl, xh, dx, xsum, xqsum, m0, buf, g, hb, 2, 0, act_bits)
        else:
            _nibble_pass(cs, ss, ms, xl, xh, dx, xsum, xqsum, m0, buf, g, hb, 1, 0, act_bits)
        _copy_rows(buf, rows, n, out, m0, n0)
        m0 += rows


@jit
def row_chunk(num_rows):
    """Rows per work item: a work item is (tile, chunk of rows). Small matrices have 9 or 15 tiles,
    which two threads cannot split evenly; chunks of rows even them out from 9 rows on (each
    chunk reads its tile's weights again, from pagedserve.cache at these batch sizes)."""
    if num_rows <= 8:
        return max(num_rows, 1)
    if num_rows <= 16:
        return 8
    return 16


@parallel_jit
def _matmul_nibbles(x, codes, scale, minv, out, group_size, high_bits, act_bits):
    # group_size, high_bits and act_bits must be literals (see matmul_q4)
    M, K = x.shape
    xq, dx, xsum = empty_activation_codes(M, K, group_size)
    offset = 32 if high_bits == 2 else 0  # Q6_K: codes stored + 32
    xl, xh, xqsum = empty_byte_operands(M, K, xsum.shape[1], offset)
    for m in range(M):
        if act_bits == 8:
            int8_operands_row(x, m, group_size, offset, dx, xsum, xh, xqsum)
        else:
            byte_operands_row(x, m, group_size, offset, xq, dx, xsum, xl, xh, xqsum)
    rc = row_chunk(M)
    n_chunks = (M + rc - 1) // rc
    for item in numba.prange(codes.shape[0] * n_chunks):  # tile-major: a thread's chunks share tiles
        m0 = (item % n_chunks) * rc
        _nibble_tile(codes, scale, minv, xl, xh, dx, xsum, xqsum, out, item // n_chunks, m0, min(m0 + rc, M),
                     group_size, high_bits, act_bits)


@jit
def matmul_q4(x, codes, scale, minv, out):
    """out [M, N] = x [M, K] f32 @ W^T; codes [NT, NG, 1024] uint8: 4-bit codes in nibbles, G = 32."""
    _matmul_nibbles(x, codes, scale, minv, out, 32, 0, 16)


@jit
def matmul_q5(x, codes, scale, minv, out):
    """Like matmul_q4 for 5-bit codes: codes [NT, NG, 1280] (nibbles + a high-bit plane, G = 32)."""
    _matmul_nibbles(x, codes, scale, minv, out, 32, 1, 16)


@jit
def matmul_q6(x, codes, scale, minv, out):
    """Like matmul_q4 for Q6_K's 6-bit codes: codes [NT, NG, 768] (nibbles + 2 planes, G = 16)."""
    _matmul_nibbles(x, codes, scale, minv, out, 16, 2, 16)


@jit
def matmul_q4_a8(x, codes, scale, minv, out):
    """matmul_q4 with 8-bit activations (`int8_operands_row`): one dot product per code vector
    instead of two, about 1.5-1.9x at 32-64 rows; results differ from the exact kernels by the
    coarser rounding of the activations (opt-in, see model/activation_width.py)."""
    _matmul_nibbles(x, codes, scale, minv, out, 32, 0, 8)


@jit
def matmul_q5_a8(x, codes, scale, minv, out):
    """matmul_q5 with 8-bit activations (see matmul_q4_a8)."""
    _matmul_nibbles(x, codes, scale, minv, out, 32, 1, 8)


@jit
def matmul_q6_a8(x, codes, scale, minv, out):
    """matmul_q6 with 8-bit activations (see matmul_q4_a8)."""
    _matmul_nibbles(x, codes, scale, minv, out, 16, 2, 8)


def _nibble_layouts(x, codes, scale, minv, out):
    raise NotImplementedError("call from compiled code only")


@numba.extending.overload(_nibble_layouts, jit_options={"cache": True, "nogil": True})
def _nibble_layouts_overload(x, codes, scale, minv, out):
    # The group's byte count picks the layout at run time. Only K-quant records (uint8 scales)
    # come with 6-bit codes, so other scale modes do not compile that layout. The codes' dtype
    # picks the activation width at compile time: uint8 (as repacked) the exact int16 kernels,
    # an int8 view of the same bytes the 8-bit ones (NIBBLE_CODES_FOR_8BIT_ACTIVATIONS).
    with_six_bits = scale.dtype == numba.types.uint8
    four_bits, five_bits, six_bits = group_bytes(32, 0), group_bytes(32, 1), group_bytes(16, 2)
    q4, q5, q6 = ((matmul_q4_a8, matmul_q5_a8, matmul_q6_a8) if codes.dtype == numba.types.int8
                  else (matmul_q4, matmul_q5, matmul_q6))

    def impl(x, codes, scale, minv, out):
        b = codes.shape[2]
        if b == four_bits:
            q4(x, codes, scale, minv, out)
        elif b == five_bits:
            q5(x, codes, scale, minv, out)
        elif with_six_bits and b == six_bits:
            q6(x, codes, scale, minv, out)
        else:
            raise ValueError("nibble codes must be [NT, NG, 1024], [NT, NG, 1280] or (K-quants) [NT, NG, 768]")

    return impl


@parallel_jit
def matmul_q8(x, codes, scale, minv, out):
    """out [M, N] = x [M, K] f32 @ W^T; codes [NT, NG, G/2, 128] int8 (G = 16 or 32)."""
    assert codes.shape[3] == 2 * TILE, "q8 codes must be [NT, NG, G/2, 128]"
    M = x.shape[0]
    rc = row_chunk(M)
    n_chunks = (M + rc - 1) // rc
    if codes.shape[2] == 16:
        xq, dx, xsum = _int16_operands(x, 32)
        for item in numba.prange(codes.shape[0] * n_chunks):
            m0 = (item % n_chunks) * rc
            _tile(codes, scale, minv, xq, dx, xsum, out, item // n_chunks, m0, min(m0 + rc, M), 32)
    else:
        assert codes.shape[2] == 8, "q8 groups must hold 16 or 32 inputs"
        xq, dx, xsum = _int16_operands(x, 16)
        for item in numba.prange(codes.shape[0] * n_chunks):
            m0 = (item % n_chunks) * rc
            _tile(codes, scale, minv, xq, dx, xsum, out, item // n_chunks, m0, min(m0 + rc, M), 16)


@jit
def _int16_operands(x, group_size):
    # The int16 kernels' operands (`quantize_row`).
    M, K = x.shape
    xq, dx, xsum = empty_activation_codes(M, K, group_size)
    for m in range(M):
        quantize_row(x, m, group_size, xq, dx, xsum)
    return xq, dx, xsum


# The dtype of nibble codes that selects 8-bit activations: the repacked uint8 codes viewed as int8.
NIBBLE_CODES_FOR_8BIT_ACTIVATIONS = np.int8


def matmul_codes(x, codes, scale, minv, out):
    """Compiled-code dispatcher: the codes' rank picks the kernel family (3 = nibbles, 4 = int8),
    the bytes per group the nibble layout."""
    raise NotImplementedError("call from compiled code only")


@numba.extending.overload(matmul_codes, jit_options={"cache": True, "nogil": True})
def _matmul_codes_overload(x, codes, scale, minv, out):
    if codes.ndim == 3:
        return lambda x, codes, scale, minv, out: _nibble_layouts(x, codes, scale, minv, out)
    return lambda x, codes, scale, minv, out: matmul_q8(x, codes, scale, minv, out)
