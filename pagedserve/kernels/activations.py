"""Element-wise kernels of the MLP and residual stream.

All are pure element-wise maps computed in float32 (no reductions), so the result for an element
never depends on the rest of the batch nor on how the work is split among threads.  Work is split
into (token, column-chunk) items so a single decode token still uses all cores on wide MLPs.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pagedserve.kernels.fast_exp import exp_f32
from pagedserve.kernels.jit import jit, parallel_jit


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
def silu_mul(gate_up, out):
    """SwiGLU: out [T, F] f32 = silu(gate) * up for gate_up [T, 2F] = [gate | up] (a fused
    projection's output); silu(g) = g / (1 + exp(-g)).

    Parallel over (token, column chunk); `silu_mul_serial` gives identical values on one thread.
    One C-contiguous input, not two half views: LLVM vectorises the loop only when it knows the
    column stride (on views of the halves, one thread took 7.6 ns per value instead of 0.45)."""
    n_tok, n_col = out.shape
    assert gate_up.shape[1] == 2 * n_col, "gate_up must be [T, 2F] for out [T, F]"
    n_chunk = _n_chunks(n_col)
    for w in numba.prange(n_tok * n_chunk):
        t, c0, c1 = _span(w, n_chunk, n_col)
        _silu_mul_span(gate_up, out, t, c0, c1)


@jit
def _silu_mul_span(gate_up, out, t, c0, c1):
    # Contiguous 1-D slices and a loop from 0 in a function of its own: the forms LLVM vectorises
    # (2-D indexing in the prange body ran 3x slower).
    n_col = out.shape[1]
    g = gate_up[t, c0:c1]
    u = gate_up[t, n_col + c0:n_col + c1]
    o = out[t, c0:c1]
    for c in range(c1 - c0):
        o[c] = _silu(g[c]) * u[c]


@jit
def silu_mul_serial(gate_up, out):
    """silu_mul on the calling thread: for a few tokens a parallel region costs more than it saves."""
    n_tok, n_col = out.shape
    assert gate_up.shape[1] == 2 * n_col, "gate_up must be [T, 2F] for out [T, F]"
    for t in range(n_tok):
        _silu_mul_span(gate_up, out, t, 0, n_col)


@parallel_jit
def gelu_tanh_mul(gate_up, out):
    """GeGLU (Gemma): out [T, F] = gelu_tanh(gate) * up for gate_up [T, 2F] = [gate | up], with the
    tanh approximation gelu(g) = 0.5 * g * (1 + tanh(sqrt(2/pi) * (g + 0.044715 g^3)))."""
    k0 = np.float32(math.sqrt(2.0 / math.pi))
    k1 = np.float32(0.044715)
    half = np.float32(0.5)
    one = np.float32(1.0)
    n_tok, n_col = out.shape
    assert gate_up.shape[1] == 2 * n_col, "gate_up must be [T, 2F] for out [T, F]"
    n_chunk = _n_chunks(n_col)
    for w in numba.prange(n_tok * n_chunk):
        t, c0, c1 = _span(w, n_chunk, n_col)
        for c in range(c0, c1):
            g = gate_up[t, c]
            inner = k0 * (g + k1 * g * g * g)
            out[t, c] = (half * g * (one + np.tanh(inner))) * gate_up[t, n_col + c]


@jit
def add_inplace(x, y):
    """Residual add: x [T, D] += y [T, D] (float32)."""
    for t in range(x.shape[0]):
        _add_row(x[t], y[t])


@jit
def _add_row(a, b):
    # 1-D rows and a loop from 0: vectorised (2-D indexing over column chunks was not)
    for c in range(a.shape[0]):
        a[c] += b[c]
