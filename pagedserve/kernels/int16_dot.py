"""Integer dot products of one weight tile against a few activation rows (AVX-512 VNNI).

Why: a float32 matmul pays conversions and one multiply-add per weight per activation row.
With activations rounded to int16 per 32 inputs, one `vpdpwssd` multiplies 32 weight codes (as
int16) by 32 activation values and adds them in pairs into 16 int32 lanes: 32 multiply-adds per
instruction instead of 16, and the integer sums are exact, so the order of the additions cannot
change a result (batch invariance for free). int16, not int8: rounding activations to 8 bits (as
llama.cpp does) moved SmolLM2's log-probabilities by 0.27 nats on average over the reference
top-64 (bar 0.05); 16 bits move them by 0.0013 (float32 activations: 1e-5). Numba cannot
express vector instructions, so `tile_pass` builds the LLVM IR of a whole pass (every group of
one tile of 64 output rows against up to 4 activation rows, or of half a tile against up to 8)
with partial sums and accumulators in registers.

Used for 8-bit codes; 4-bit codes have their own kernel (`kernels/nibble_dot.py`), which skips
the widening. Tiled weight layout (built by `model/weight_layout.py`), per tile t of 64 output rows
and group g of G inputs; pair p = inputs 2p, 2p+1 of the group; each 64-byte vector holds 32 rows
x 2 bytes: codes[t, g] = [G/2 pairs][64 rows][2 bytes] = code(2p+e) (signed, G = 16 or 32).
Activations: xq [M, K] int16 with one float32 scale per 32 inputs (dx [M, K/32]), and xsum
[M, NG] float32, the float sum of the unrounded inputs of each group (for the weights' minimum).

Per output value, per group in ascending order, the float work is fixed:
  acc = fma(float(isum), scale * dx, acc);  acc = fma(minv, xsum, acc)
so a row's results are bit-identical whatever the other rows, the pass size or the thread count.

On CPUs without AVX-512 VNNI the same IR uses plain widening multiplies and adds: the integer sums
are exact either way, so the results are identical (tested).
"""

from __future__ import annotations

import os

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue
from numba.extending import intrinsic

from pagedserve.kernels.group_scales import GroupScales
from pagedserve.kernels.llvm_ir import F32, I8, I16, I32, declare, i64, pointer_at, splat

TILE = 64  # output rows per tile: 4 vectors of 16 int32 lanes
MAX_ROWS = 4  # activation rows per pass over a whole tile (4 x 4 int32 + 4 x 4 float accumulators)
MAX_HALF_ROWS = 8  # activation rows per pass over half a tile (same register budget)

# PAGEDSERVE_PORTABLE_INT=1 forces the portable path (tests compare the two); it is part of the
# compile-cache key (kernels/compile_cache.py), so cached code of one path never serves the other.
HAS_VNNI = (bool(llvm_binding.get_host_cpu_features().get("avx512vnni", False))
            and os.environ.get("PAGEDSERVE_PORTABLE_INT") != "1")

_V64I8 = ir.VectorType(I8, 64)
_V32I16 = ir.VectorType(I16, 32)
_V16I32 = ir.VectorType(I32, 16)
_V16F32 = ir.VectorType(F32, 16)
_LOW_HALF = ir.Constant(ir.VectorType(I32, 32), list(range(32)))
_HIGH_HALF = ir.Constant(ir.VectorType(I32, 32), list(range(32, 64)))


def _dot_add(builder, acc, w_words, x_pair):
    """acc [16 x i32] += per lane w[2l] * x0 + w[2l+1] * x1 (int16 x int16); x_pair = (x0, x1) as i32."""
    x_words = builder.bitcast(splat(builder, x_pair, _V16I32), _V32I16)
    if HAS_VNNI:
        fn = declare(builder.module, "llvm.x86.avx512.vpdpwssd.512", _V16I32, [_V16I32, _V32I16, _V32I16])
        return builder.call(fn, [acc, w_words, x_words])
    wide = ir.VectorType(I32, 32)
    prod = builder.mul(builder.sext(w_words, wide), builder.sext(x_words, wide))
    even = builder.shuffle_vector(prod, prod, ir.Constant(_V16I32, list(range(0, 32, 2))))
    odd = builder.shuffle_vector(prod, prod, ir.Constant(_V16I32, list(range(1, 32, 2))))
    return builder.add(acc, builder.add(even, odd))


def _widen(builder, bytes64):
    """64 signed bytes -> two [32 x i16] vectors (bytes 0-31, 32-63): rows 0-15 and 16-31 of a 32-row vector."""
    return [builder.sext(builder.shuffle_vector(bytes64, bytes64, half), _V32I16)
            for half in (_LOW_HALF, _HIGH_HALF)]


def finish_group(builder, isum, acc_slot, sc, mn, dxm, xsm):
    """The float finish of a group for 16 output rows of one activation row, the same in every
    kernel: acc = fma(float(isum), scale * dx, acc); acc = fma(min, xsum, acc). sc, mn: the
    group's scale and min vectors (`kernels/group_scales.py`)."""
    fma = declare(builder.module, "llvm.fma.v16f32", _V16F32, [_V16F32] * 3)
    acc = builder.load(acc_slot)
    acc = builder.call(fma, [builder.sitofp(isum, _V16F32), builder.fmul(sc, dxm), acc])
    builder.store(builder.call(fma, [mn, xsm, acc]), acc_slot)


def store_accumulators(builder, acc_slots, out_p, out_stride_v):
    """out[m, 16c : 16c+16] = the float accumulators acc_slots[m][c] (dicts keyed by c)."""
    for m, row in enumerate(acc_slots):
        for c, slot in row.items():
            off = builder.add(builder.mul(i64(m), out_stride_v), i64(16 * c))
            builder.store(builder.load(slot), pointer_at(builder, out_p, off, _V16F32), align=4)


@intrinsic
def tile_pass(typingctx, codes_addr, scale, minv, xq_addr, dx_addr, xsum_addr, out_addr,
              num_groups, xq_stride, xs_stride, dx_stride, out_stride, group_size, rows, part):
    """One tile of 64 output rows against `rows` activation rows; results -> out.

    part 0: the whole tile (rows <= 4), out[m, 0:64]; part 1 / 2: output rows 0-31 / 32-63 of the
    tile only (rows <= 8: each weight vector then serves twice the activation rows), written to
    out[m, 0:32] / out[m, 32:64]. Every output value gets the same operations whatever the part.

    scale and minv: the tile's scales in one of the modes of `kernels/group_scales.py` (e.g.
    [num_groups, 64] float32 or uint16 half bits, both the same). Addresses (int64) point at:
    codes[t, 0] (num_groups * group_size * 64 codes), xq[m0, 0] (int16, row stride xq_stride
    elements), dx[m0, 0] (float32, one per 32 inputs, row stride dx_stride), xsum[m0, 0] (float32
    per group, row stride xs_stride), out[m0, 0] (float32, row stride out_stride; 64 columns
    written). group_size (16 or 32), rows and part must be compile-time constants.
    """
    for lit in (group_size, rows, part):
        if not isinstance(lit, types.IntegerLiteral):
            raise RequireLiteralValue(lit)
    g_size = group_size.literal_value
    n_rows = rows.literal_value
    tile_part = part.literal_value
    halves = (0, 1) if tile_part == 0 else (tile_part - 1,)
    cs = [2 * h + q for h in halves for q in range(2)]  # accumulator vectors: rows 16c .. 16c+15
    assert g_size in (16, 32) and 1 <= n_rows <= (MAX_ROWS if tile_part == 0 else MAX_HALF_ROWS)
    n_pairs = g_size // 2

    def codegen(context, builder, signature, args):
        (codes_a, scale_arr, minv_arr, xq_a, dx_a, xsum_a, out_a, ngroups, xq_stride_v, xs_stride_v,
         dx_stride_v, out_stride_v) = args[:12]
        codes_p = builder.inttoptr(codes_a, I8.as_pointer())
        scales = GroupScales(context, builder, signature.args[1], signature.args[2], scale_arr, minv_arr, g_size)
        xq_p = builder.inttoptr(xq_a, I16.as_pointer())
        dx_p = builder.inttoptr(dx_a, F32.as_pointer())
        xsum_p = builder.inttoptr(xsum_a, F32.as_pointer())
        out_p = builder.inttoptr(out_a, F32.as_pointer())
        acc_slots = [{c: cgutils.alloca_once_value(builder, ir.Constant(_V16F32, None)) for c in cs}
                     for _ in range(n_rows)]
        with cgutils.for_range(builder, ngroups) as loop:
            g = loop.index
            isum = [{c: ir.Constant(_V16I32, None) for c in cs} for _ in range(n_rows)]
            group_codes = builder.gep(codes_p, [builder.mul(g, i64(g_size * TILE))])
            x_rows = [builder.gep(xq_p, [builder.add(builder.mul(i64(m), xq_stride_v),
                                                     builder.mul(g, i64(g_size)))]) for m in range(n_rows)]
            for p in range(n_pairs):
                x_pair = [builder.load(pointer_at(builder, x_rows[m], i64(2 * p), I32), align=2)
                          for m in range(n_rows)]
                for h in halves:  # rows 0-31, then 32-63 of the tile
                    w = builder.load(pointer_at(builder, group_codes, i64(p * 128 + h * 64), _V64I8), align=1)
                    words = _widen(builder, w)
                    for q in range(2):
                        c = 2 * h + q
                        for m in range(n_rows):
                            isum[m][c] = _dot_add(builder, isum[m][c], words[q], x_pair[m])
            # float finish of the group
            group_scales = {c: scales.vectors(builder, g, c) for c in cs}
            for m in range(n_rows):
                stat = builder.add(builder.mul(i64(m), xs_stride_v), g)
                dx_idx = builder.add(builder.mul(i64(m), dx_stride_v),
                                     g if g_size == 32 else builder.udiv(g, i64(2)))
                dxm = splat(builder, builder.load(builder.gep(dx_p, [dx_idx])), _V16F32)
                xsm = splat(builder, builder.load(builder.gep(xsum_p, [stat])), _V16F32)
                for c in cs:
                    finish_group(builder, isum[m][c], acc_slots[m][c], *group_scales[c], dxm, xsm)
        store_accumulators(builder, acc_slots, out_p, out_stride_v)
        return context.get_dummy_value()

    sig = types.void(types.int64, scale, minv, *([types.int64] * 9), group_size, rows, part)
    return sig, codegen
