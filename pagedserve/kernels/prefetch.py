"""Software prefetch: ask the CPU to start loading a cache line before the code reads it.

Why: paged attention walks each sequence's KV blocks in block-table order; the blocks sit anywhere
in a cache of hundreds of MiB, so every block starts with a cache miss the hardware prefetcher
cannot predict. Prefetching block b+1 while block b is computed hides that latency.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from pagedserve.kernels.llvm_ir import declare


@intrinsic
def prefetch(typingctx, address):
    """Prefetch the cache line holding byte `address` (int64) for reading, into all cache levels."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = declare(builder.module, "llvm.prefetch.p0", ir.VoidType(), [i8p, i32, i32, i32])
        # (address, read = 0, locality = 3: keep in all levels, data cache = 1)
        builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(address), codegen
