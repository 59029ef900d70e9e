"""Element-wise kernels of the MLP and residual stream.

All are pure element-wise maps computed in float32 (no reductions), so the result for an element
never depends on the rest of the batch nor on how the work is split among threads.  Work is split
into (token, column-chunk) items so a single decode token still uses all cores on wide MLPs.
Inputs may be strided views (e.g. the two halves of a fused gate_up projection [T, 2F]).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from kernels.fast_exp import exp_f32
from kernels.jit import jit, parallel_jit


@jit
def _n_chunks(n_col):
    # 2048 columns per work item: big enough to amortise the prange dispatch, small enough that a
    # single decode token's MLP row (F ~ 8-16k) is spread over all cores.
    return (n_col + 2047) // 2048


@jit
def _silu(g):
    # exp_f32 is plain arithmetic, so the loops calling this vectorise (a libm exp would not)
    return g / (np.float32(1.0) + exp_f32(-g))


@jit
def _span(w, n_chunk, n_col):
    # Work item w -> (token, first column, end column).
    t = w // n_chunk
    c0 = (w % n_chunk) * 2048
    return t, c0, min(c0 + 2048, n_col)


@parallel_jit
def silu_mul(gate, up, out):
    """SwiGLU: out [T, F] f32 = silu(gate [T, F]) * up [T, F]; silu(g) = g / (1 + exp(-g)).

    Parallel over (token, column chunk); `silu_mul_serial` gives identical values on one thread."""
    n_tok, n_col = gate.shape
    n_chunk = _n_chunks(n_col)
    for w in numba.prange(n_tok * n_chunk):
        t, c0, c1 = _span(w, n_chunk, n_col)
        for c in range(c0, c1):
            out[t, c] = _silu(gate[t, c]) * up[t, c]


@jit
def silu_mul_serial(gate, up, out):
    """silu_mul on the calling thread: for a few tokens a parallel region costs more than it saves."""
    n_tok, n_col = gate.shape
    for t in range(n_tok):
        for c in range(n_col):
            out[t, c] = _silu(gate[t, c]) * up[t, c]


@parallel_jit
def gelu_tanh_mul(gate, up, out):
    """GeGLU (Gemma): out [T, F] = gelu_tanh(gate [T, F]) * up [T, F], with the tanh approximation
    gelu(g) = 0.5 * g * (1 + tanh(sqrt(2/pi) * (g + 0.044715 g^3)))."""
    k0 = np.float32(math.sqrt(2.0 / math.pi))
    k1 = np.float32(0.044715)
    half = np.float32(0.5)
    one = np.float32(1.0)
    n_tok, n_col = gate.shape
    n_chunk = _n_chunks(n_col)
    for w in numba.prange(n_tok * n_chunk):
        t, c0, c1 = _span(w, n_chunk, n_col)
        for c in range(c0, c1):
            g = gate[t, c]
            inner = k0 * (g + k1 * g * g * g)
            out[t, c] = (half * g * (one + np.tanh(inner))) * up[t, c]


@jit
def add_inplace(x, y):
    """Residual add: x [T, D] += y [T, D] (float32)."""
    n_tok, n_col = x.shape
    n_chunk = _n_chunks(n_col)
    for w in range(n_tok * n_chunk):
        t, c0, c1 = _span(w, n_chunk, n_col)
        for c in range(c0, c1):
            x[t, c] += y[t, c]


@parallel_jit
def scale_inplace(x, s):
    """x [T, D] f32 *= s (scalar, cast to float32 first, e.g. Gemma's sqrt(d_model) embedding scale)."""
    n_tok, n_col = x.shape
    sc = np.float32(s)
    n_chunk = _n_chunks(n_col)
    for w in numba.prange(n_tok * n_chunk):
        t, c0, c1 = _span(w, n_chunk, n_col)
        for c in range(c0, c1):
            x[t, c] *= sc
