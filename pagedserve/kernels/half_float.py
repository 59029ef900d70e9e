"""IEEE half precision (binary16) values held in uint16 arrays.

Why: Numba has no float16 type on the CPU, but LLVM does. A KV cache of uint16 words holding half
bits halves the memory of a float32 cache (the attention kernel reads every cached byte once per
step, so it also halves that traffic), and these two intrinsics convert one value with a single
LLVM instruction (`fpext half` / `fptrunc ... to half`), which the loop vectoriser turns into the
CPU's packed conversions (F16C / AVX-512: vcvtph2ps / vcvtps2ph).

Rounding: float32 -> half rounds to nearest, ties to even (IEEE default), overflowing to +-inf
beyond 65504; half -> float32 is exact. Bit-identical to NumPy's astype(np.float16) (tested).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


@intrinsic
def half_to_f32(typingctx, bits):
    """float32 value of the half whose bits are `bits` (uint16)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def f32_to_half(typingctx, value):
    """Bits (uint16) of float32 `value` rounded to the nearest half."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        half = builder.fptrunc(args[0], ir.HalfType())
        return builder.bitcast(half, ir.IntType(16))

    return types.uint16(types.float32), codegen


def as_f32(value):
    """float32 of a cached value: float32 as is, half bits (uint16) decoded, int8 converted."""
    raise NotImplementedError("only callable from jitted code")


@overload(as_f32, jit_options={"cache": True, "nogil": True})
def _as_f32_overload(value):
    if value == types.uint16:
        return lambda value: half_to_f32(value)
    if isinstance(value, (types.Integer, types.Float)):
        return lambda value: np.float32(value)
    return None


def to_cache_value(value, cache):
    """float32 `value` as an element of array `cache`: half bits for uint16 caches, else a cast."""
    raise NotImplementedError("only callable from jitted code")


@overload(to_cache_value, jit_options={"cache": True, "nogil": True})
def _to_cache_value_overload(value, cache):
    if cache.dtype == types.uint16:
        return lambda value, cache: f32_to_half(np.float32(value))
    return lambda value, cache: value
