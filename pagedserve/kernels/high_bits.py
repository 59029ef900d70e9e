"""5- and 6-bit weight codes as nibbles plus high-bit planes, rebuilt in registers (LLVM IR).

Why: the file stores 5- and 6-bit codes in 5 and 6 bits; widening them to a byte each at load
(as before) made Q5_K and Q6_K weights 9-10 bits per weight in memory, and batch-1 decode reads
every weight byte once. The nibble kernel (`kernels/nibble_dot.py`) takes bytes whose values are
the codes; here the bytes are rebuilt from the nibbles and the high bits before the dot products,
one vector of 64 codes at a time, so the integer sums (and all results) are those of full codes.

Layout of a group of a tile (after the nibble bytes of `nibble_dot.py`): one 64-byte high-bit
vector per row block c of 16 rows, byte (c, r, b) = [16 rows r][4 bytes b]. It holds the high
bits of the 2 * Q codes that byte b of row r of row block c carries in the group's Q quads d
(low nibble: half 0, high nibble: half 1): field i = 2 d + half of `bits` bits, at bit
`bits * i`. Q5_0, Q5_1, Q5_K: groups of 32 (Q = 4), 1 bit; Q6_K: groups of 16 (Q = 2), 2 bits:
8 bits either way.
"""

from __future__ import annotations

from llvmlite import ir

from pagedserve.kernels.llvm_ir import I8, I16

_V64I8 = ir.VectorType(I8, 64)
_V32I16 = ir.VectorType(I16, 32)


def _splat8(value):
    return ir.Constant(_V64I8, [value] * 64)


def nibbles(builder, packed):
    """64 packed bytes -> (low nibbles, high nibbles) as two [64 x i8] vectors of 0..15."""
    return builder.and_(packed, _splat8(15)), builder.lshr(packed, _splat8(4))


def with_high_bits(builder, nibble, high, field, bits):
    """Codes nibble | (field `field` of `high`) << 4: the field moved to bit 4 by one 16-bit shift
    (bits carried over from the neighbouring byte land outside the field and are masked off)."""
    shift = 4 - bits * field
    words = builder.bitcast(high, _V32I16)
    if shift > 0:
        words = builder.shl(words, ir.Constant(_V32I16, [shift] * 32))
    elif shift < 0:
        words = builder.lshr(words, ir.Constant(_V32I16, [-shift] * 32))
    mask = ((1 << bits) - 1) << 4
    return builder.or_(nibble, builder.and_(builder.bitcast(words, _V64I8), _splat8(mask)))
