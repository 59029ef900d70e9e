"""Stack the per-layer weights of a uniform model into [num_layers, ...] arrays, one layer at a time.

Why: `kernels/decoder_layer.decoder_layers` runs every layer of a step in one compiled call, and
compiled code indexes layers in stacked arrays, not in Python objects. Each layer is copied into
the stack as soon as it is repacked and handed back as views into it, so its own arrays are freed
before the next layer loads: stacking whole models after the load held the weights twice (1B Q4_0:
load peak 1231 MB above the imports for a 666 MB file; Q8_0: 2283 MB for 1255 MB).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from pagedserve.kernels.decoder_layer import LayerParams, Linear
from pagedserve.model.weight_layout import QUANT_KINDS, LinearWeight

if TYPE_CHECKING:  # weights.py builds the stack while it loads: no import cycle at run time
    from pagedserve.model.weights import LayerWeights

MATRIX_ROLES = ("qkv", "attn_output", "gate_up", "ffn_down")
_VECTORS = ("attn_norm", "qkv_bias", "q_norm", "k_norm", "post_attn_norm", "ffn_norm", "post_ffn_norm")


def _same_layout(w: LinearWeight, first: LinearWeight) -> bool:
    return w.kind == first.kind and w.num_out == first.num_out and all(
        getattr(w, name).shape == getattr(first, name).shape
        and getattr(w, name).dtype == getattr(first, name).dtype for name in ("codes", "scale", "minv")
    ) and (w.minv.ndim != 1 or np.array_equal(w.minv, first.minv))


def _stacked_vector(layers: list[LayerWeights], name: str) -> np.ndarray:
    """[L, n], or [L, 0] when the layers have no such vector."""
    if getattr(layers[0], name) is None:
        return np.zeros((len(layers), 0), dtype=np.float32)
    return np.stack([getattr(lw, name) for lw in layers])


class LayerStack:
    """The [L, ...] matrices of a model whose layers share one quantized layout per role, filled as
    the layers load (`adopt`), and the stacked `LayerParams` once all are in (`params`)."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self._first: dict[str, LinearWeight] = {}
        self._matrices: dict[str, Linear] = {}

    def adopt(self, index: int, layer: LayerWeights) -> LayerWeights:
        """Copy layer `index`'s matrices into the stack; returns the layer as views into it.
        Raises ValueError when the layer's layout differs from layer 0's (the caller checked the
        file's formats, so this means a corrupt file)."""
        if layer.qkv_split or layer.gate_up_split:
            raise ValueError("stacked layers need fused q/k/v and gate/up matrices")
        changes = {}
        for role in MATRIX_ROLES:
            w = getattr(layer, role)
            if role not in self._matrices:
                if w.kind not in QUANT_KINDS:
                    raise ValueError(f"{role} is not quantized: layers cannot be stacked")
                self._matrices[role] = Linear(*(np.empty((self.num_layers,) + a.shape, a.dtype)
                                                for a in (w.codes, w.scale, w.minv)), w.num_out)
            elif not _same_layout(w, self._first[role]):
                raise ValueError(f"layer {index}'s {role} differs in layout from layer 0's")
            m = self._matrices[role]
            m.codes[index], m.scale[index], m.minv[index] = w.codes, w.scale, w.minv
            changes[role] = replace(w, codes=m.codes[index], scale=m.scale[index], minv=m.minv[index])
            # the first layer's layout, held as views: its own arrays must not stay alive
            self._first.setdefault(role, changes[role])
        return replace(layer, **changes)

    def params(self, layers: list[LayerWeights]) -> LayerParams | None:
        """The whole model as one LayerParams of [L, ...] arrays (layers: every adopted layer, in
        order), or None when an optional vector is present in some layers only."""
        if any(len({getattr(lw, name) is None for lw in layers}) != 1 for name in _VECTORS):
            return None
        vectors = {name: _stacked_vector(layers, name) for name in _VECTORS}
        return LayerParams(**vectors, **{role: (m,) for role, m in self._matrices.items()})
