"""Small builders shared by the kernels written directly in LLVM IR (int16_dot.py, nibble_dot.py,
group_scales.py, high_bits.py, attention_simd.py, prefetch.py).

Why: Numba cannot express SIMD vectors or call target intrinsics, so those kernels are Numba
intrinsics that emit IR through llvmlite. The pieces they all need - scalar types, an i64 constant,
declaring an intrinsic once per module, broadcasting a scalar to every lane, a typed pointer at an
element offset, widening half bits to float32 - live here once.
"""

from __future__ import annotations

from llvmlite import ir

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()


def i64(value: int) -> ir.Constant:
    """An i64 constant (offsets and loop bounds)."""
    return ir.Constant(I64, value)


def declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The function `name` of `module` (e.g. an LLVM intrinsic), declared on first use."""
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


def splat(builder: ir.IRBuilder, value: ir.Value, vec_type: ir.VectorType) -> ir.Value:
    """`value` in every lane of a vector of vec_type."""
    undef = ir.Constant(vec_type, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(I32, vec_type.count),
                                                          [0] * vec_type.count))


def pointer_at(builder: ir.IRBuilder, base_ptr: ir.Value, offset: ir.Value, elem_type: ir.Type) -> ir.Value:
    """Pointer to an elem_type at element `offset` (i64) of base_ptr."""
    return builder.bitcast(builder.gep(base_ptr, [offset]), elem_type.as_pointer())


def half_to_f32(builder: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    """A vector of IEEE half bits ([n x i16]) as [n x float] (exact: F16C's vcvtph2ps)."""
    count = bits.type.count
    return builder.fpext(builder.bitcast(bits, ir.VectorType(ir.HalfType(), count)), ir.VectorType(F32, count))
