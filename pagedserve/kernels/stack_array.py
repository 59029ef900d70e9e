"""Fixed-size float32 scratch arrays on the stack of a Numba kernel.

Why: LLVM cannot keep a heap array (np.empty inside a kernel) in registers, because it cannot prove
that the array does not alias the kernel's input arrays; every update then goes through memory. A
stack allocation of constant size is provably private, so LLVM vectorizes and register-allocates
accumulator tiles held in it. This one trick makes the matmul kernels several times faster.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue
from numba.extending import intrinsic


@intrinsic
def stack_f32(typingctx, size):
    """Pointer to `size` float32 values on the caller's stack (size must be a literal constant).

    Wrap with `numba.carray(stack_f32(N), shape)`. The values start uninitialised.
    """
    if not isinstance(size, types.IntegerLiteral):
        raise RequireLiteralValue(size)
    count = size.literal_value

    def codegen(context, builder, signature, args):
        f32 = context.get_value_type(types.float32)
        storage = cgutils.alloca_once(builder, ir.ArrayType(f32, count))
        return builder.bitcast(storage, f32.as_pointer())

    return types.CPointer(types.float32)(size), codegen
