"""The KV storage arrays: what the forward pass reads and writes, one set per KV-cache group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.kernels.kv_cache_write import kv_cache_shapes

# f16 caches hold IEEE half bits in uint16 words (Numba has no float16 type on the CPU; the kernels
# convert through kernels/half_float.py).
_NUMPY_DTYPE = {"f32": np.float32, "f16": np.uint16, "int8": np.int8}


@dataclass
class LayerKV:
    """One layer's view of its group's arrays (no copy)."""

    # f32: float32; f16: uint16 words holding half bits; int8: int8 with the scales below.
    k: np.ndarray  # [num_blocks, Hkv, Dh, block_size] (K transposed per block: see kernels.kv_cache_write)
    v: np.ndarray  # [num_blocks, Hkv, block_size, Dh]
    k_scale: np.ndarray | None  # [num_blocks, Hkv, block_size] f32 (int8 only)
    v_scale: np.ndarray | None
    group: int  # the group whose block table and slot mapping address this layer
    sliding_window: int  # 0 = full attention


class KVStore:
    """Allocates every block of every group up front: `[layers_in_group, num_blocks, ...]`."""

    def __init__(self, spec: KVCacheSpec):
        if spec.kv_dtype not in _NUMPY_DTYPE:
            raise ValueError(
                f"kv dtype {spec.kv_dtype!r} is not supported by the kernels; use one of {sorted(_NUMPY_DTYPE)}"
            )
        self.spec = spec
        dtype = _NUMPY_DTYPE[spec.kv_dtype]
        k_tail, v_tail, scale_tail = kv_cache_shapes(spec.num_blocks, spec.block_size, spec.num_kv_heads,
                                                     spec.head_dim)
        self.layers: dict[int, LayerKV] = {}
        self._groups: list[tuple[np.ndarray, np.ndarray]] = []
        self._group_scales: list[tuple[np.ndarray, np.ndarray] | None] = []
        for g, group in enumerate(spec.groups):
            n = len(group.layer_ids)
            k = np.zeros((n,) + k_tail, dtype=dtype)
            v = np.zeros((n,) + v_tail, dtype=dtype)
            self._groups.append((k, v))
            ks = vs = None
            if spec.kv_dtype == "int8":
                ks = np.zeros((n,) + scale_tail, dtype=np.float32)
                vs = np.zeros((n,) + scale_tail, dtype=np.float32)
            self._group_scales.append(None if ks is None else (ks, vs))
            for i, layer in enumerate(group.layer_ids):
                self.layers[layer] = LayerKV(
                    k[i], v[i], None if ks is None else ks[i], None if vs is None else vs[i],
                    g, group.sliding_window,
                )

    def group_arrays(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """K and V of every layer of a group, [layers_in_group, ...], in the group's layer order."""
        return self._groups[group]

    def copy_blocks(self, blocks_to_copy) -> None:
        """Copy whole blocks, K and V (and int8 scales) of every layer: `blocks_to_copy[g]` lists
        (src, dst) block ids of group g, applied in order (a forked choice's copy of a shared
        partial block, before the step that writes into it). Blocks are the second axis of every
        group array, whatever the kernels' layout inside a block."""
        for g, pairs in enumerate(blocks_to_copy):
            if not pairs:
                continue
            arrays = list(self._groups[g]) + list(self._group_scales[g] or ())
            for src, dst in pairs:  # one pair per forked choice: never a per-token loop
                for array in arrays:
                    array[:, dst] = array[:, src]

    @property
    def nbytes(self) -> int:
        total = 0
        for layer in self.layers.values():
            total += layer.k.nbytes + layer.v.nbytes
            if layer.k_scale is not None:
                total += layer.k_scale.nbytes + layer.v_scale.nbytes
        return total
