"""One KV block of paged attention for a few query rows, in explicit 16-lane vector code.

Why: the Numba loops of `kernels/attention_block.py` are vectorised by LLVM one statement at a
time, so every query head re-converts the block's K and V, the online softmax (max, exp, sum)
runs lane by lane, and each step goes through memory. Written directly as LLVM IR (Numba cannot
express vectors), one call takes a block of 16 keys through the whole update for up to 4 query
rows at once: scores in registers, one converted K row or V row serving every query row, the max
and the weights as vector operations, and the V accumulators in registers across the block's keys.
It is used when block_size == 16 and head_dim is a multiple of 64 (SmolLM2, Llama, Qwen2, Gemma 3);
other shapes keep the Numba loops.

Per query row r, against the block's keys o in [o0, o1) (other lanes are never used: unwritten
slots may hold anything, NaN included):
  s[o]  = sum over d ascending of fma(q[r, d], K[d, o])            (q already scaled)
          (times k_scale[o] for int8 caches)
  m'    = max(m, max over o of s[o]);  alpha = exp(m - m') if m' > m and lsum > 0, else 1
  w[o]  = exp(s[o] - m')                                            (kernels/fast_exp.py's exp)
  lsum  = lsum * alpha + (sum of w over o, float64, fixed pairwise order)
  acc[d] = acc[d] * alpha + sum over o ascending of fma(w[o] (times v_scale[o]), V[o, d])
Every row gets this exact sequence of operations whatever the other rows of the call, so results
stay batch invariant. The exp is the same operation sequence as `exp_f32` (bit-identical, tested).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue
from numba.extending import intrinsic

from pagedserve.kernels.llvm_ir import F32, F64, I8, I16, I32, declare, half_to_f32, i64, splat

LANES = 16  # keys per block on this path (block_size must equal it)
CHUNK = 64  # head dims per pass of the V accumulation (4 vectors per row)
MAX_ROWS = 4  # query rows per call: 4 rows x 4 vectors of V accumulators

_VF = ir.VectorType(F32, LANES)
_VD = ir.VectorType(F64, LANES)
_VI = ir.VectorType(I32, LANES)


def _vconst(value):
    return ir.Constant(_VF, [value] * LANES)


def _load_row(builder, base, offset, elem):
    """16 consecutive cache elements from base[offset] as float32 (exact conversions)."""
    ptr = builder.gep(base, [offset])
    if elem == "f32":
        return builder.load(builder.bitcast(ptr, _VF.as_pointer()), align=4)
    if elem == "f16":
        bits = builder.load(builder.bitcast(ptr, ir.VectorType(I16, LANES).as_pointer()), align=2)
        return half_to_f32(builder, bits)
    raw = builder.load(builder.bitcast(ptr, ir.VectorType(I8, LANES).as_pointer()), align=1)
    return builder.sitofp(raw, _VF)


def vector_exp(builder, x):
    """`kernels.fast_exp.exp_f32` on 16 lanes, operation for operation (no contraction)."""
    lo, hi = _vconst(-87.3), _vconst(88.0)
    x = builder.select(builder.fcmp_ordered(">", x, lo), x, lo)  # max(x, lo), as Numba's max
    x = builder.select(builder.fcmp_ordered("<", x, hi), x, hi)
    floor = declare(builder.module, "llvm.floor.v16f32", _VF, [_VF])
    n = builder.call(floor, [builder.fadd(builder.fmul(x, _vconst(1.44269504088896341)), _vconst(0.5))])
    r = builder.fsub(x, builder.fmul(n, _vconst(0.693359375)))
    r = builder.fsub(r, builder.fmul(n, _vconst(-2.12194440e-4)))
    p = _vconst(1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = builder.fadd(builder.fmul(p, r), _vconst(c))
    p = builder.fadd(builder.fadd(builder.fmul(p, builder.fmul(r, r)), r), _vconst(1.0))
    bits = builder.shl(builder.add(builder.fptosi(n, _VI), ir.Constant(_VI, [127] * LANES)),
                       ir.Constant(_VI, [23] * LANES))
    return builder.fmul(p, builder.bitcast(bits, _VF))


def _halves_sum(builder, v, count, op):
    """Fold a vector of `count` lanes in halves (lanes i and i + count/2) down to lane 0."""
    while count > 1:
        count //= 2
        idx = ir.VectorType(I32, count)
        a = builder.shuffle_vector(v, v, ir.Constant(idx, list(range(count))))
        b = builder.shuffle_vector(v, v, ir.Constant(idx, list(range(count, 2 * count))))
        v = op(a, b)
    return builder.extract_element(v, ir.Constant(I32, 0))


def _maxnum(builder, a, b):
    """Lane-wise max that ignores NaN (as the scalar loop's `if s > m: m = s` does)."""
    vec = a.type
    fn = declare(builder.module, f"llvm.maxnum.v{vec.count}f32", vec, [vec, vec])
    return builder.call(fn, [a, b])


@intrinsic
def attend_block(typingctx, k_cache, k_addr, v_cache, v_addr, qs_addr, acc_addr, m_addr, lsum_addr,
                 ks_addr, vs_addr, o0, o1, head_dim, rows, quant):
    """Fold one block of 16 keys into the running softmax state of `rows` query rows.

    k_cache / v_cache: the cache arrays (float32, uint16 half bits or int8; only their element type
    is used). Addresses (int64): k / v, the block's K tile [head_dim, 16] and V tile [16, head_dim]
    of one kv head (contiguous); qs [rows, head_dim] f32 scaled queries, acc [rows, head_dim] f32, m [rows]
    f32, lsum [rows] f64 (all updated in place), and when quant, k/v scales [16] f32 of the block.
    Keys o0 <= o < o1 (0 <= o0 < o1 <= 16) are visible to every row. head_dim: a multiple of 64.
    rows (1..4) and quant must be compile-time constants.
    """
    for lit in (rows, quant):
        if not isinstance(lit, (types.IntegerLiteral, types.BooleanLiteral)):
            raise RequireLiteralValue(lit)
    n_rows = rows.literal_value
    is_quant = bool(quant.literal_value)
    assert 1 <= n_rows <= MAX_ROWS
    elems = {}
    for name, arr in (("k", k_cache), ("v", v_cache)):
        elems[name] = {types.float32: "f32", types.uint16: "f16", types.int8: "i8"}[arr.dtype]

    def codegen(context, builder, signature, args):
        (k_arr, k_o, v_arr, v_o, qs_a, acc_a, m_a, ls_a, ks_a, vs_a, lo_key, hi_key, dh) = args[:13]
        k_p = builder.inttoptr(k_o, context.get_data_type(k_cache.dtype).as_pointer())
        v_p = builder.inttoptr(v_o, context.get_data_type(v_cache.dtype).as_pointer())
        qs_p = builder.inttoptr(qs_a, F32.as_pointer())
        acc_p = builder.inttoptr(acc_a, F32.as_pointer())
        m_p = builder.inttoptr(m_a, F32.as_pointer())
        ls_p = builder.inttoptr(ls_a, F64.as_pointer())
        fma = declare(builder.module, "llvm.fma.v16f32", _VF, [_VF] * 3)
        row_off = [builder.mul(i64(r), dh) for r in range(n_rows)]

        # 1) scores: lanes = keys; one converted K row serves every query row.
        s_slots = [cgutils.alloca_once_value(builder, _vconst(0.0)) for _ in range(n_rows)]
        with cgutils.for_range(builder, dh) as loop:
            d = loop.index
            k_row = _load_row(builder, k_p, builder.mul(d, i64(LANES)), elems["k"])
            for r in range(n_rows):
                qd = builder.load(builder.gep(qs_p, [builder.add(row_off[r], d)]))
                builder.store(builder.call(fma, [splat(builder, qd, _VF), k_row, builder.load(s_slots[r])]),
                              s_slots[r])
        lane = ir.Constant(_VI, list(range(LANES)))
        lo_v = splat(builder, builder.trunc(lo_key, I32), _VI)
        hi_v = splat(builder, builder.trunc(hi_key, I32), _VI)
        valid = builder.and_(builder.icmp_signed(">=", lane, lo_v), builder.icmp_signed("<", lane, hi_v))
        neg_inf = _vconst(float("-inf"))
        if is_quant:
            k_scales = builder.load(builder.inttoptr(ks_a, _VF.as_pointer()), align=4)
            v_scales = builder.load(builder.inttoptr(vs_a, _VF.as_pointer()), align=4)

        # 2) online softmax per row; the weights go to a stack buffer for the V pass.
        w_buf = cgutils.alloca_once(builder, ir.ArrayType(F32, n_rows * LANES))
        w_p = builder.bitcast(w_buf, F32.as_pointer())
        alphas = []
        for r in range(n_rows):
            s = builder.load(s_slots[r])
            if is_quant:
                s = builder.fmul(s, k_scales)
            s = builder.select(valid, s, neg_inf)
            bm = _halves_sum(builder, s, LANES, lambda a, b: _maxnum(builder, a, b))
            m_ptr = builder.gep(m_p, [i64(r)])
            ls_ptr = builder.gep(ls_p, [i64(r)])
            m_old = builder.load(m_ptr)
            lsum = builder.load(ls_ptr)
            grew = builder.fcmp_ordered(">", bm, m_old)
            m_new = builder.select(grew, bm, m_old)
            rescale = builder.and_(grew, builder.fcmp_ordered(">", lsum, ir.Constant(F64, 0.0)))
            e = builder.extract_element(vector_exp(builder, splat(builder, builder.fsub(m_old, m_new), _VF)),
                                        ir.Constant(I32, 0))
            alpha = builder.select(rescale, e, ir.Constant(F32, 1.0))
            builder.store(m_new, m_ptr)
            w = vector_exp(builder, builder.fsub(s, splat(builder, m_new, _VF)))
            w = builder.select(valid, w, _vconst(0.0))
            total = _halves_sum(builder, builder.fpext(w, _VD), LANES, builder.fadd)
            lsum = builder.fadd(builder.fmul(lsum, builder.fpext(alpha, F64)), total)
            builder.store(lsum, ls_ptr)
            if is_quant:
                w = builder.fmul(w, v_scales)
            builder.store(w, builder.bitcast(builder.gep(w_p, [i64(r * LANES)]), _VF.as_pointer()), align=4)
            alphas.append(splat(builder, alpha, _VF))

        # 3) V: acc rows (4 vectors each) stay in registers across the visible keys.
        n_vec = CHUNK // LANES
        with cgutils.for_range_slice(builder, i64(0), dh, i64(CHUNK)) as (c, _):
            acc_slots = []
            for r in range(n_rows):
                row = []
                for j in range(n_vec):
                    ptr = builder.bitcast(builder.gep(acc_p, [builder.add(row_off[r], builder.add(c, i64(16 * j)))]),
                                          _VF.as_pointer())
                    row.append(cgutils.alloca_once_value(builder, builder.fmul(builder.load(ptr, align=4), alphas[r])))
                acc_slots.append(row)
            with cgutils.for_range_slice(builder, lo_key, hi_key, i64(1)) as (o, _):
                v_rows = [_load_row(builder, v_p, builder.add(builder.mul(o, dh), builder.add(c, i64(16 * j))),
                                    elems["v"]) for j in range(n_vec)]
                for r in range(n_rows):
                    wo = splat(builder, builder.load(builder.gep(w_p, [builder.add(i64(r * LANES), o)])), _VF)
                    for j in range(n_vec):
                        builder.store(builder.call(fma, [wo, v_rows[j], builder.load(acc_slots[r][j])]),
                                      acc_slots[r][j])
            for r in range(n_rows):
                for j in range(n_vec):
                    ptr = builder.bitcast(builder.gep(acc_p, [builder.add(row_off[r], builder.add(c, i64(16 * j)))]),
                                          _VF.as_pointer())
                    builder.store(builder.load(acc_slots[r][j]), ptr, align=4)
        return context.get_dummy_value()

    sig = types.void(k_cache, types.int64, v_cache, *([types.int64] * 10), rows, quant)
    return sig, codegen
