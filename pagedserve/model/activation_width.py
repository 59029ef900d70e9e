"""Opt-in 8-bit activations: the same weights, viewed so the matmul kernels round activations to
8 bits per 32 inputs instead of 16.

The exact default keeps int16 activations (rounding error at most 2^-16 of each block's largest
magnitude). With 8 bits the nibble kernels do one `vpdpbusd` per code vector instead of two:
1.5-1.9x on 32-64 rows of a 1B model's matrices (prefill, large batches). The price is the
coarser rounding, about llama.cpp's (its Q8 activations); `python -m pagedserve.bench.fidelity`
measures it against the float32 reference. A token's result still depends only on its own row, so
batch invariance and exact speculative decoding hold within the mode.

The switch is the codes' dtype: the repacked uint8 nibble codes viewed as int8 (no copy) select
the 8-bit kernels at compile time (kernels/quant_matmul.py). Matrices with 8-bit codes (Q8_0) and
float weights keep their kernels; the token embedding is a lookup and is left as it is.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pagedserve.kernels.decoder_layer import Linear
from pagedserve.kernels.quant_matmul import NIBBLE_CODES_FOR_8BIT_ACTIVATIONS
from pagedserve.model.weight_layout import LinearWeight
from pagedserve.model.weights import ModelWeights

ACTIVATION_BITS = (16, 8)  # the exact default first
_NIBBLE_KINDS = ("q4", "q5", "q6")
_LAYER_MATRICES = ("qkv", "attn_output", "gate_up", "ffn_down")


def _codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Nibble codes (uint8 as repacked) in the dtype that selects `bits`-bit activations (a view)."""
    return codes.view(NIBBLE_CODES_FOR_8BIT_ACTIVATIONS if bits == 8 else np.uint8)


def _viewed(w: LinearWeight, bits: int) -> LinearWeight:
    return replace(w, codes=_codes(w.codes, bits)) if w.kind in _NIBBLE_KINDS else w


def activation_bits_of(weights: ModelWeights) -> int:
    """The activation width the weights' nibble matrices select (16 when they have none)."""
    for w in (weights.output, *(getattr(lw, role) for lw in weights.layers for role in _LAYER_MATRICES)):
        if w.kind in _NIBBLE_KINDS:
            return 8 if w.codes.dtype == NIBBLE_CODES_FOR_8BIT_ACTIVATIONS else 16
    return 16


def with_activation_bits(weights: ModelWeights, bits: int) -> ModelWeights:
    """`weights` whose matmuls round activations to `bits` bits (8 or the exact 16): views of the
    same arrays, so a model can serve engines of either width (`weights` itself when it already
    has that width)."""
    if bits not in ACTIVATION_BITS:
        raise ValueError(f"activation bits must be one of {ACTIVATION_BITS}, got {bits}")
    if activation_bits_of(weights) == bits:
        return weights
    layers = tuple(replace(lw, qkv=_viewed(lw.qkv, bits), qkv_split=tuple(_viewed(w, bits) for w in lw.qkv_split),
                           attn_output=_viewed(lw.attn_output, bits), gate_up=_viewed(lw.gate_up, bits),
                           gate_up_split=tuple(_viewed(w, bits) for w in lw.gate_up_split),
                           ffn_down=_viewed(lw.ffn_down, bits))
                   for lw in weights.layers)
    stack = weights.stack
    if stack is not None:  # uniform layers: each role has one kind in every layer
        stack = stack._replace(**{
            role: tuple(Linear(_codes(p.codes, bits), p.scale, p.minv, p.num_out) for p in getattr(stack, role))
            for role in _LAYER_MATRICES if getattr(weights.layers[0], role).kind in _NIBBLE_KINDS})
    return replace(weights, layers=layers, stack=stack, output=_viewed(weights.output, bits))
