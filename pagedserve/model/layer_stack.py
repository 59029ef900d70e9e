"""Stack the per-layer weights of a uniform model into [num_layers, ...] arrays.

Why: the fused decoder (`model/fused_decoder.py`) runs every layer of a step in one compiled call,
and a compiled function indexes layers in stacked arrays instead of Python objects. Stacking does
not duplicate memory: the per-layer weights are rebuilt as views into the stacks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pagedserve.model.weight_layout import LinearWeight
from pagedserve.model.weights import LayerWeights

_ROLES = ("qkv", "attn_output", "gate_up", "ffn_down")


@dataclass(frozen=True)
class StackedLinear:
    codes: np.ndarray  # [L, NT, NG, ...] uint8: a LinearWeight's codes stacked (see weight_layout)
    scale: np.ndarray  # [L, NT, NG, TILE] float32
    minv: np.ndarray  # [L, NT, NG, TILE] float32


@dataclass(frozen=True)
class LayerStack:
    attn_norm: np.ndarray  # [L, D]
    ffn_norm: np.ndarray  # [L, D]
    qkv_bias: np.ndarray  # [L, q_size + 2 kv_size], or [L, 0] without bias
    qkv: StackedLinear
    attn_output: StackedLinear
    gate_up: StackedLinear
    ffn_down: StackedLinear


def _uniform(weights: list[LinearWeight]) -> bool:
    first = weights[0]
    return first.kind in ("q4", "q8") and all(
        w.kind == first.kind and w.codes.shape == first.codes.shape and w.codes.dtype == first.codes.dtype
        and w.scale.dtype == first.scale.dtype for w in weights
    )


def stack_layers(layers: tuple[LayerWeights, ...]) -> tuple[LayerStack | None, tuple[LayerWeights, ...]]:
    """(stack, layers as views into it), or (None, layers unchanged) when the model is not uniform.

    Uniform means: plain pre-norm blocks (no QK-norm or post-norms), q/k/v and gate/up fused, and
    every role quantized with one layout across all layers.
    """
    if any(lw.qkv_split or lw.gate_up_split or lw.q_norm is not None or lw.post_attn_norm is not None
           or lw.post_ffn_norm is not None for lw in layers):
        return None, layers
    if not all(_uniform([getattr(lw, role) for lw in layers]) for role in _ROLES):
        return None, layers
    if len({lw.qkv_bias is None for lw in layers}) != 1:
        return None, layers
    stacked = {}
    for role in _ROLES:
        parts = [getattr(lw, role) for lw in layers]
        stacked[role] = StackedLinear(np.stack([w.codes for w in parts]), np.stack([w.scale for w in parts]),
                                      np.stack([w.minv for w in parts]))
    has_bias = layers[0].qkv_bias is not None
    bias = (np.stack([lw.qkv_bias for lw in layers]) if has_bias
            else np.zeros((len(layers), 0), dtype=np.float32))
    stack = LayerStack(
        attn_norm=np.stack([lw.attn_norm for lw in layers]),
        ffn_norm=np.stack([lw.ffn_norm for lw in layers]),
        qkv_bias=bias,
        **stacked,
    )
    views = []
    for i, lw in enumerate(layers):
        changes = {
            role: replace(getattr(lw, role), codes=stacked[role].codes[i], scale=stacked[role].scale[i],
                          minv=stacked[role].minv[i])
            for role in _ROLES
        }
        changes["attn_norm"] = stack.attn_norm[i]
        changes["ffn_norm"] = stack.ffn_norm[i]
        if has_bias:
            changes["qkv_bias"] = bias[i]
        views.append(replace(lw, **changes))
    return stack, tuple(views)
