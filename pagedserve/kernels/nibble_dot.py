"""Integer dot products of 4-bit weight codes against int16 activations, straight from the nibbles.

Why: `kernels/int16_dot.py` widens every weight byte to int16 before `vpdpwssd`; at batch 1 those
widening shuffles are a third of the instructions and keep the kernel at ~20 GB/s per core, below
the memory bandwidth. Here the nibbles are used as bytes: `vpdpbusd` multiplies 64 unsigned bytes
by 64 signed bytes and adds each run of four products into one int32 lane. An int16 activation x
is split into its bytes, x = 256 * xh + xl (xh = x >> 8 signed, xl = x & 255 unsigned), and both
halves meet the same nibble vector w (0..15, valid as unsigned or signed bytes):
    accL += dpbusd(xl (unsigned), w (signed));   accH += dpbusd(w (unsigned), xh (signed))
and sum = 256 * accH + accL, exactly the int32 sum int16_dot computes (|accL| <= 32 * 15 * 255,
|256 accH| <= 2^24: no overflow). The float finish per group is int16_dot's, so results are
bit-identical to it.

Tiled layout of 4-bit codes (built by `model/weight_layout.py`), tile t of 64 rows, group g of G
inputs (G = 32, or 16 for Q6_K), Q = G / 8 quads; quad d = inputs 4d..4d+3 (low nibbles) and
G/2+4d..G/2+4d+3 (high nibbles); row block c = rows 16c..16c+15:
    codes[t, g] = [Q quads d][4 row blocks c][16 rows][4 bytes], byte b of row 16c + r
        = code(4d + b) | code(G/2 + 4d + b) << 4
so one 64-byte load is 16 rows x 4 inputs: each int32 lane is one output row. 5- and 6-bit codes
follow with their high-bit planes (`kernels/high_bits.py`, 256 more bytes per group); the codes
are rebuilt as bytes (0..31, 0..63) before the same dot products (|accL| <= 32 * 63 * 255,
|256 accH| <= 2^26). Q6_K's codes are stored + 32: the low sums start at xqsum = -32 times the
exact integer sum of the group's int16 activations, so isum is the sum with the signed codes.
Activations: xl [M, K+] uint8 and xh [M, K+] int8 (`byte_operands_row`; rows padded), dx [M, K/32]
f32, xsum [M, K/G] f32 as for int16_dot, xqsum [M, K/G] int32 (Q6_K only, see above).

Passes: part 0 = the whole tile for up to 2 rows (1 row: separate accumulators for low and high
nibbles, so 16 independent chains hide vpdpbusd's latency); part 1 / 2 = rows 0-31 / 32-63 for up
to 4 rows; part 3 + c = rows 16c..16c+15 for up to 8 rows (each code vector, rebuilt from high-bit
planes or not, then serves 8 activation rows). Without AVX-512 VNNI the same IR uses widening
multiplies (identical sums; tested).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue
from numba.extending import intrinsic

from pagedserve.kernels.group_scales import GroupScales
from pagedserve.kernels.high_bits import nibbles, with_high_bits
from pagedserve.kernels.int16_dot import HAS_VNNI, finish_group, store_accumulators
from pagedserve.kernels.llvm_ir import F32, I8, I32, declare, i64, pointer_at, splat

MAX_FULL_ROWS = 2  # activation rows per pass over a whole tile
MAX_HALF_ROWS = 4  # activation rows per pass over half a tile
MAX_QUARTER_ROWS = 8  # activation rows per pass over a quarter tile

_V64I8 = ir.VectorType(I8, 64)
_V16I32 = ir.VectorType(I32, 16)
_V16F32 = ir.VectorType(F32, 16)
_V64I32 = ir.VectorType(I32, 64)


def _dpbusd(builder, acc, unsigned_bytes, signed_bytes):
    """acc [16 x i32] += per lane l: sum_j u[4l+j] * s[4l+j] (u unsigned, s signed bytes)."""
    if HAS_VNNI:
        fn = declare(builder.module, "llvm.x86.avx512.vpdpbusd.512", _V16I32, [_V16I32, _V64I8, _V64I8])
        return builder.call(fn, [acc, unsigned_bytes, signed_bytes])
    prod = builder.mul(builder.zext(unsigned_bytes, _V64I32), builder.sext(signed_bytes, _V64I32))
    for j in range(4):
        acc = builder.add(acc, builder.shuffle_vector(prod, prod, ir.Constant(_V16I32, list(range(j, 64, 4)))))
    return acc


def _splat_bytes(builder, row_ptr, offset):
    """The 4 bytes at row_ptr[offset] repeated in all 16 lanes, as [64 x i8]."""
    word = builder.load(pointer_at(builder, row_ptr, offset, I32), align=1)
    return builder.bitcast(splat(builder, word, _V16I32), _V64I8)


@intrinsic
def nibble_tile_pass(typingctx, codes_addr, scale, minv, xl_addr, xh_addr, dx_addr, xsum_addr, xqsum_addr,
                     out_addr, num_groups, x_stride, xs_stride, dx_stride, out_stride, group_size, high_bits,
                     rows, part, act_bits):
    """One tile (part 0), half tile (part 1 / 2) or quarter tile (part 3 + c) of 64 output rows
    against `rows` activation rows.

    Addresses (int64): codes[t, 0] (num_groups * group_bytes(group_size, high_bits) bytes),
    xl[m0, 0] / xh[m0, 0] (bytes, row stride x_stride), dx[m0, 0] / xsum[m0, 0] (float32, row
    strides dx_stride / xs_stride), xqsum[m0, 0] (int32, -32 x the group's activation sum, row
    stride xs_stride; read for high_bits = 2 only), out[m0, 0] (float32, row stride out_stride;
    part 0 writes 64 columns, part 1 / 2 columns 0-31 / 32-63, part 3 + c columns 16c..16c+15).
    scale, minv: the tile's scales in a mode of `kernels/group_scales.py`. group_size (32, or 16
    with high_bits 2), high_bits (0, 1 or 2), rows and part must be literals.
    """
    for lit in (group_size, high_bits, rows, part, act_bits):
        if not isinstance(lit, types.IntegerLiteral):
            raise RequireLiteralValue(lit)
    # 8: the activations are int8 codes in xh alone (xl is not read): one dot product per code vector
    eight_bit = act_bits.literal_value == 8
    g_size = group_size.literal_value
    n_high = high_bits.literal_value
    n_rows = rows.literal_value
    tile_part = part.literal_value
    if tile_part == 0:
        cs, max_rows = (0, 1, 2, 3), MAX_FULL_ROWS
    elif tile_part <= 2:
        cs, max_rows = (2 * tile_part - 2, 2 * tile_part - 1), MAX_HALF_ROWS
    else:
        cs, max_rows = (tile_part - 3,), MAX_QUARTER_ROWS
    assert 1 <= n_rows <= max_rows and tile_part <= 6
    assert (g_size, n_high) in ((32, 0), (32, 1), (16, 2))
    n_quads = g_size // 8
    # 1 row, groups of 32: more independent accumulator chains (with 16 inputs they are short)
    split_nibbles = n_rows == 1 and tile_part == 0 and g_size == 32

    def codegen(context, builder, signature, args):
        (codes_a, scale_arr, minv_arr, xl_a, xh_a, dx_a, xsum_a, xqsum_a, out_a, ngroups, x_stride_v,
         xs_stride_v, dx_stride_v, out_stride_v) = args[:14]
        codes_p = builder.inttoptr(codes_a, I8.as_pointer())
        scales = GroupScales(context, builder, signature.args[1], signature.args[2], scale_arr, minv_arr,
                             g_size)
        xl_p = builder.inttoptr(xl_a, I8.as_pointer())
        xh_p = builder.inttoptr(xh_a, I8.as_pointer())
        dx_p = builder.inttoptr(dx_a, F32.as_pointer())
        xsum_p = builder.inttoptr(xsum_a, F32.as_pointer())
        xqsum_p = builder.inttoptr(xqsum_a, I32.as_pointer())
        out_p = builder.inttoptr(out_a, F32.as_pointer())
        zero = ir.Constant(_V16I32, None)
        acc_slots = [{c: cgutils.alloca_once_value(builder, ir.Constant(_V16F32, None)) for c in cs}
                     for _ in range(n_rows)]
        n_sets = 2 if split_nibbles else 1  # accumulator sets: (low, high nibbles) or one
        with cgutils.for_range(builder, ngroups) as loop:
            g = loop.index
            start = [zero] * n_rows
            if n_high == 2:  # Q6_K: codes stored + 32; low sums start at -32 * (sum of the inputs)
                for m in range(n_rows):
                    offset = builder.gep(xqsum_p, [builder.add(builder.mul(i64(m), xs_stride_v), g)])
                    start[m] = splat(builder, builder.load(offset), _V16I32)
            acc_l = [[{c: start[m] if s == 0 else zero for c in cs} for s in range(n_sets)]
                     for m in range(n_rows)]
            acc_h = [[{c: zero for c in cs} for _ in range(n_sets)] for _ in range(n_rows)]
            group_codes = builder.gep(codes_p, [builder.mul(g, i64(group_bytes(g_size, n_high)))])
            highs = {c: builder.load(pointer_at(builder, group_codes, i64(32 * g_size + 64 * c), _V64I8),
                                     align=1) for c in cs} if n_high else {}
            x_off = builder.mul(g, i64(g_size))
            xl_rows = [builder.gep(xl_p, [builder.add(builder.mul(i64(m), x_stride_v), x_off)])
                       for m in range(n_rows)]
            xh_rows = [builder.gep(xh_p, [builder.add(builder.mul(i64(m), x_stride_v), x_off)])
                       for m in range(n_rows)]
            for d in range(n_quads):
                xs = [[(None if eight_bit else _splat_bytes(builder, xl_rows[m], i64(g_size // 2 * half + 4 * d)),
                        _splat_bytes(builder, xh_rows[m], i64(g_size // 2 * half + 4 * d))) for half in (0, 1)]
                      for m in range(n_rows)]
                for c in cs:
                    w = builder.load(pointer_at(builder, group_codes, i64(d * 256 + c * 64), _V64I8), align=1)
                    codes = nibbles(builder, w)
                    if n_high:
                        codes = [with_high_bits(builder, codes[half], highs[c], 2 * d + half, n_high)
                                 for half in (0, 1)]
                    for m in range(n_rows):
                        for half in (0, 1):
                            s = half if split_nibbles else 0
                            xl, xh = xs[m][half]
                            if not eight_bit:
                                acc_l[m][s][c] = _dpbusd(builder, acc_l[m][s][c], xl, codes[half])
                            acc_h[m][s][c] = _dpbusd(builder, acc_h[m][s][c], codes[half], xh)
            eight = ir.Constant(_V16I32, [8] * 16)
            group_scales = {c: scales.vectors(builder, g, c) for c in cs}
            for m in range(n_rows):
                stat = builder.add(builder.mul(i64(m), xs_stride_v), g)
                dx_idx = builder.add(builder.mul(i64(m), dx_stride_v),
                                     g if g_size == 32 else builder.udiv(g, i64(2)))
                dxm = splat(builder, builder.load(builder.gep(dx_p, [dx_idx])), _V16F32)
                xsm = splat(builder, builder.load(builder.gep(xsum_p, [stat])), _V16F32)
                for c in cs:
                    isum = zero
                    for s in range(n_sets):
                        high = acc_h[m][s][c] if eight_bit else builder.shl(acc_h[m][s][c], eight)
                        isum = builder.add(isum, builder.add(high, acc_l[m][s][c]))
                    finish_group(builder, isum, acc_slots[m][c], *group_scales[c], dxm, xsm)
        store_accumulators(builder, acc_slots, out_p, out_stride_v)
        return context.get_dummy_value()

    sig = types.void(types.int64, scale, minv, *([types.int64] * 11), group_size, high_bits, rows, part, act_bits)
    return sig, codegen


def group_bytes(group_size: int, high_bits: int) -> int:
    """Bytes of one group of one tile: the nibbles, then the high-bit vectors (if any)."""
    return 32 * group_size + (4 * 64 if high_bits else 0)
