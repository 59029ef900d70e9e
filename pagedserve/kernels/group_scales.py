"""The scale and min of a weight group, for the float finish of the integer-dot kernels (LLVM IR).

Three ways to store them, told apart by the array types the kernel is compiled for:
- affine: `scale`, `minv` the tile's [NG, 64] arrays (float32, or uint16 half bits): loaded.
- factor: `scale` [NG, 64] half bits (or float32), `minv` a 1-D float32 array whose first value
  is a factor c: min = scale * c (c = -8 for Q4_0, -16 for Q5_0, 0 for Q8_0; c * d is exact).
- super (K-quants): `scale` the tile's [NSB, record] uint8 array, one record per 256 inputs:
      group size 32 (Q4_K, Q5_K): [d: 64 half][dmin: 64 half][sc: 8 x 64 uint8][m: 8 x 64 uint8]
      group size 16 (Q6_K):       [d: 64 half][sc: 16 x 64 int8]
  scale = float(sc) * d and min = -(float(m) * dmin) (Q6_K: min 0), each product exact in float32,
  so both equal ggml's float32 values bit for bit. `minv` is not read.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types

from pagedserve.kernels.llvm_ir import F32, I8, I16, I32, half_to_f32, i64, pointer_at, splat

AFFINE, FACTOR, SUPER = "affine", "factor", "super"
SUPER_BLOCK = 256  # inputs per K-quant super-block

_V16F32 = ir.VectorType(F32, 16)
_V16I8 = ir.VectorType(I8, 16)
_V16I16 = ir.VectorType(I16, 16)
_V16I32 = ir.VectorType(I32, 16)


def super_record_bytes(group_size: int) -> int:
    """Bytes per tile of 64 rows and super-block of a K-quant's scale record (see module doc)."""
    groups = SUPER_BLOCK // group_size
    return 64 * (2 + 2 + 2 * groups) if group_size == 32 else 64 * (2 + groups)


def scale_mode(scale, minv) -> str:
    """The storage mode for the Numba array types of a tile's scale and minv arrays."""
    if scale.dtype == types.uint8:
        return SUPER
    if minv.ndim == 1:
        return FACTOR
    assert minv.dtype == scale.dtype and minv.ndim == scale.ndim, "affine scale and minv must match"
    return AFFINE


def _halves_at(builder, ptr, offset):
    """16 float32 values from the half bits at element `offset` of ptr (exact)."""
    return half_to_f32(builder, builder.load(pointer_at(builder, ptr, offset, _V16I16), align=2))


def _load16(builder, base_p, offset, half):
    """16 float32 values from base_p[offset:offset+16] (float32, or half bits when `half`)."""
    if not half:
        return builder.load(pointer_at(builder, base_p, offset, _V16F32), align=4)
    return _halves_at(builder, base_p, offset)


class GroupScales:
    """Emits the scale and min vectors of 16 output rows of a group, in one storage mode."""

    def __init__(self, context, builder, scale_type, minv_type, scale_arr, minv_arr, group_size):
        self.mode = scale_mode(scale_type, minv_type)
        self.group_size = group_size
        self.half = scale_type.dtype == types.uint16
        self.scale_p = context.make_array(scale_type)(context, builder, scale_arr).data
        if self.mode == SUPER:
            self.scale_p = builder.bitcast(self.scale_p, I8.as_pointer())
        elif self.mode == FACTOR:
            minv_p = context.make_array(minv_type)(context, builder, minv_arr).data
            self.factor = splat(builder, builder.load(minv_p), _V16F32)
        else:
            self.minv_p = context.make_array(minv_type)(context, builder, minv_arr).data

    def vectors(self, builder, g, c):
        """(scale, min) [16 x float] of group g (i64), output rows 16c .. 16c+15 of the tile."""
        if self.mode != SUPER:
            off = builder.add(builder.mul(g, i64(64)), i64(16 * c))
            scale = _load16(builder, self.scale_p, off, self.half)
            if self.mode == FACTOR:
                return scale, builder.fmul(scale, self.factor)
            return scale, _load16(builder, self.minv_p, off, self.half)
        groups = SUPER_BLOCK // self.group_size
        sub = builder.and_(g, i64(groups - 1))
        record = builder.gep(self.scale_p, [builder.mul(builder.udiv(g, i64(groups)),
                                                         i64(super_record_bytes(self.group_size)))])
        d = _halves_at(builder, record, i64(32 * c))
        sub_off = builder.add(builder.mul(sub, i64(64)), i64(16 * c))
        if self.group_size == 16:  # Q6_K: signed sub-scales, no min
            sc = builder.load(pointer_at(builder, record, builder.add(sub_off, i64(128)), _V16I8), align=1)
            scale = builder.fmul(builder.sitofp(builder.sext(sc, _V16I32), _V16F32), d)
            return scale, ir.Constant(_V16F32, None)
        dmin = _halves_at(builder, record, i64(128 + 32 * c))
        sc = builder.load(pointer_at(builder, record, builder.add(sub_off, i64(256)), _V16I8), align=1)
        mn = builder.load(pointer_at(builder, record, builder.add(sub_off, i64(256 + 64 * groups)), _V16I8),
                          align=1)
        scale = builder.fmul(builder.sitofp(builder.zext(sc, _V16I32), _V16F32), d)
        mins = builder.fneg(builder.fmul(builder.sitofp(builder.zext(mn, _V16I32), _V16F32), dmin))
        return scale, mins
