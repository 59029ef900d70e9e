"""exp for float32 in plain arithmetic, so LLVM vectorises loops that call it.

Why: `math.exp` compiles to a libm call per element, which no loop around it can vectorise; in
paged attention the softmax weights (one exp per key per query head) cost as much as the dot
products. `exp_f32` is Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, a degree-7 polynomial for
e^r, and 2^n built from its exponent bits; about 1 ulp from the correctly rounded value over the
range it serves (tested against NumPy). SiLU uses it too.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from pagedserve.kernels.jit import jit


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of the integer `bits`."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        word = args[0]
        if bits.bitwidth > 32:
            word = builder.trunc(word, ir.IntType(32))
        return builder.bitcast(word, ir.FloatType())

    return types.float32(bits), codegen


@jit
def exp_f32(x):
    """e^x for float32 x, clamped to [-87.3, 88]: below, ~1e-38 instead of 0 or a subnormal;
    above, ~1.65e38 instead of inf (callers divide by 1 + e^x or multiply by e^(x <= 0))."""
    x = min(max(x, np.float32(-87.3)), np.float32(88.0))
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375)
    r = r - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    return p * f32_from_bits((np.int32(n) + 127) << 23)
