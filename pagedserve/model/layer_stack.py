"""Stack the per-layer weights of a uniform model into [num_layers, ...] arrays.

Why: `kernels/decoder_layer.decoder_layers` runs every layer of a step in one compiled call, and
compiled code indexes layers in stacked arrays, not in Python objects. Stacking does not duplicate
memory: the per-layer weights are rebuilt as views into the stacks.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pagedserve.kernels.decoder_layer import LayerParams, Linear
from pagedserve.model.weight_layout import QUANT_KINDS, LinearWeight
from pagedserve.model.weights import LayerWeights, ModelWeights

_MATRICES = ("qkv", "attn_output", "gate_up", "ffn_down")
_VECTORS = ("attn_norm", "qkv_bias", "q_norm", "k_norm", "post_attn_norm", "ffn_norm", "post_ffn_norm")


def _uniform(weights: list[LinearWeight]) -> bool:
    first = weights[0]
    return first.kind in QUANT_KINDS and all(
        w.kind == first.kind and w.codes.shape == first.codes.shape and w.codes.dtype == first.codes.dtype
        and w.scale.shape == first.scale.shape and w.scale.dtype == first.scale.dtype
        and w.minv.shape == first.minv.shape and w.minv.dtype == first.minv.dtype
        and (w.minv.ndim != 1 or np.array_equal(w.minv, first.minv)) for w in weights
    )


def _stackable(layers: tuple[LayerWeights, ...]) -> bool:
    """q/k/v and gate/up fused, every matrix role quantized with one layout across all layers, and
    each optional vector present in all layers or in none."""
    if any(lw.qkv_split or lw.gate_up_split for lw in layers):
        return False
    if not all(_uniform([getattr(lw, role) for lw in layers]) for role in _MATRICES):
        return False
    return all(len({getattr(lw, name) is None for lw in layers}) == 1 for name in _VECTORS)


def _stacked_vector(layers: tuple[LayerWeights, ...], name: str) -> np.ndarray:
    """[L, n], or [L, 0] when the layers have no such vector."""
    if getattr(layers[0], name) is None:
        return np.zeros((len(layers), 0), dtype=np.float32)
    return np.stack([getattr(lw, name) for lw in layers])


def stack_layers(weights: ModelWeights) -> ModelWeights:
    """The weights with `stack` set and the layers rebuilt as views into it, or unchanged when the
    layers are not uniform (they then run one compiled call each)."""
    layers = weights.layers
    if not _stackable(layers):
        return weights
    matrices = {}
    for role in _MATRICES:
        parts = [getattr(lw, role) for lw in layers]
        matrices[role] = Linear(np.stack([w.codes for w in parts]), np.stack([w.scale for w in parts]),
                                np.stack([w.minv for w in parts]), parts[0].num_out)
    vectors = {name: _stacked_vector(layers, name) for name in _VECTORS}
    stack = LayerParams(**vectors, **{role: (m,) for role, m in matrices.items()})
    views = []
    for i, lw in enumerate(layers):
        changes = {
            role: replace(getattr(lw, role), codes=m.codes[i], scale=m.scale[i], minv=m.minv[i])
            for role, m in matrices.items()
        }
        for name, stacked in vectors.items():
            if getattr(lw, name) is not None:
                changes[name] = stacked[i]
        views.append(replace(lw, **changes))
    return replace(weights, layers=tuple(views), stack=stack)
