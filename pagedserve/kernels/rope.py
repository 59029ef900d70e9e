"""Rotary position embedding (RoPE), applied in place.

Promise (matches PyTorch/transformers float32 semantics): for token t at position p and frequency i,
``angle = float32(p) * inv_freq[i]`` is computed in float32 (as transformers' ``inv_freq @ pos``),
cos/sin of that float32 angle are evaluated in float64 and rounded to float32 (correctly rounded
where torch's float32 cos is within an ulp), and the rotation is done in float32:

    a' = a*cos - b*sin ;  b' = b*cos + a*sin

where (a, b) = (x[2i], x[2i+1]) in the normal (GPT-J / llama.cpp LLAMA_ROPE_TYPE_NORM) layout and
(x[i], x[i + R/2]) in the NeoX layout.  Only the first R = 2*len(inv_freq) dims of each head are
rotated (partial rotary); dims R..Dh-1 are untouched.  Each token is independent (batch invariant).

The cos/sin table of a step (`rope_table`) depends only on the positions and the frequencies, so
callers compute it once and reuse it for q and k and for every layer with the same frequencies:
the libm cos/sin calls were most of RoPE's cost.
"""

from __future__ import annotations

import math

import numpy as np

from pagedserve.kernels.jit import jit


@jit
def rope_table(positions, inv_freq, cos, sin):
    """cos, sin [T, R/2] f32 <- the rotation of every token (positions [T]) and frequency (inv_freq [R/2])."""
    for t in range(positions.shape[0]):
        pos = np.float32(positions[t])
        for i in range(inv_freq.shape[0]):
            ang = pos * inv_freq[i]  # float32 product, like torch
            cos[t, i] = np.float32(math.cos(np.float64(ang)))
            sin[t, i] = np.float32(math.sin(np.float64(ang)))


@jit
def apply_rope_table(x, cos, sin, neox):
    """Rotate x [T, H, Dh] f32 in place by the table cos, sin [T, R/2] of `rope_table`."""
    n_tok = x.shape[0]
    n_head = x.shape[1]
    half = cos.shape[1]  # R / 2, with R <= Dh
    for t in range(n_tok):
        for h in range(n_head):
            for i in range(half):
                if neox:
                    ia = i
                    ib = i + half
                else:
                    ia = 2 * i
                    ib = 2 * i + 1
                c = cos[t, i]
                s = sin[t, i]
                a = x[t, h, ia]
                b = x[t, h, ib]
                x[t, h, ia] = a * c - b * s
                x[t, h, ib] = b * c + a * s
