"""The shape of the paged KV cache: block size, block count, and layers grouped by attention window.

Layers that share an attention window share one *group*: one block pool, and one block table per
request. Full attention (window 0) needs every block of a sequence; a sliding window of W only
needs the last ceil(W / block_size) + 1 blocks, so its blocks are dropped as the sequence grows.

- no window:                     one group (window 0) holding all layers
- `--sliding-window W` on all:   one group (window W) holding all layers
- Gemma 3 (5, 11, 17 global):    two groups: (5, 11, 17) with window 0, the rest with window 512

Each group has its own pool of `num_blocks` blocks (block 0 of each pool is the null block); the
KV store (`cache/kv_store.py`) allocates one K and one V array per group holding `len(layer_ids) *
num_blocks * block_size * num_kv_heads * head_dim` values (the axis order is the kernels' choice:
`kernels/kv_cache_write.kv_cache_shapes`), plus one f32 scale per (token, kv head) for int8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

KV_DTYPE_BYTES = {"f32": 4, "f16": 2, "int8": 1}
SCALE_BYTES = 4  # one f32 scale per (token, kv head) for int8 K and for int8 V


@dataclass(frozen=True)
class KVCacheGroupSpec:
    """Layers sharing one attention window. sliding_window 0 means full attention."""

    layer_ids: tuple[int, ...]
    sliding_window: int = 0

    def __post_init__(self):
        object.__setattr__(self, "layer_ids", tuple(int(i) for i in self.layer_ids))
        if not self.layer_ids:
            raise ValueError("a KV-cache group needs at least one layer")
        if any(i < 0 for i in self.layer_ids) or len(set(self.layer_ids)) != len(self.layer_ids):
            raise ValueError(f"layer ids must be distinct and >= 0, got {self.layer_ids}")
        if self.sliding_window < 0:
            raise ValueError(f"sliding_window must be >= 0 (0 = full), got {self.sliding_window}")

    @property
    def is_windowed(self) -> bool:
        return self.sliding_window > 0


def bytes_per_block_of(
    num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, kv_dtype: str
) -> int:
    """Bytes of one block of one group with `num_layers` layers: K and V, plus int8 scales."""
    if kv_dtype not in KV_DTYPE_BYTES:
        raise ValueError(f"kv_dtype must be one of {sorted(KV_DTYPE_BYTES)}, got {kv_dtype!r}")
    num_bytes = 2 * num_layers * block_size * num_kv_heads * head_dim * KV_DTYPE_BYTES[kv_dtype]
    if kv_dtype == "int8":
        num_bytes += 2 * num_layers * block_size * num_kv_heads * SCALE_BYTES
    return num_bytes


@dataclass(frozen=True)
class KVCacheSpec:
    """Everything the cache manager and the runner's KV store must agree on. Checks itself."""

    block_size: int
    num_blocks: int  # per group, including the null block 0
    groups: tuple[KVCacheGroupSpec, ...]
    num_kv_heads: int
    head_dim: int
    kv_dtype: str  # no default here: EngineArgs.kv_dtype is the one (engine/engine_args.py)

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(self.groups))
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is the null block), got {self.num_blocks}")
        if not self.groups:
            raise ValueError("a KV cache needs at least one group")
        all_layers = [i for g in self.groups for i in g.layer_ids]
        if len(set(all_layers)) != len(all_layers):
            raise ValueError(f"a layer belongs to two KV-cache groups: {sorted(all_layers)}")
        if self.num_kv_heads < 1 or self.head_dim < 1:
            raise ValueError(f"num_kv_heads and head_dim must be >= 1, got {self.num_kv_heads}, {self.head_dim}")
        if self.kv_dtype not in KV_DTYPE_BYTES:
            raise ValueError(f"kv_dtype must be one of {sorted(KV_DTYPE_BYTES)}, got {self.kv_dtype!r}")

    @classmethod
    def from_layer_windows(
        cls,
        layer_windows: Sequence[int],
        *,
        block_size: int,
        num_blocks: int,
        num_kv_heads: int,
        head_dim: int,
        kv_dtype: str,
    ) -> "KVCacheSpec":
        """Group layers by window (`layer_windows[i]` is layer i's window, 0 = full).

        Groups come out ordered by window, so a full-attention group (if any) is group 0.
        """
        by_window: dict[int, list[int]] = {}
        for layer_id, window in enumerate(layer_windows):
            by_window.setdefault(int(window), []).append(layer_id)
        groups = tuple(KVCacheGroupSpec(tuple(ids), w) for w, ids in sorted(by_window.items()))
        return cls(block_size, num_blocks, groups, num_kv_heads, head_dim, kv_dtype)

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def num_layers(self) -> int:
        return sum(len(g.layer_ids) for g in self.groups)

    @property
    def bytes_per_block(self) -> tuple[int, ...]:
        """Bytes of one block, one entry per group (index = group id)."""
        return tuple(
            bytes_per_block_of(len(g.layer_ids), self.block_size, self.num_kv_heads, self.head_dim, self.kv_dtype)
            for g in self.groups
        )

    @property
    def bytes_per_token(self) -> int:
        """Bytes of KV one token slot occupies, summed over all groups (all layers)."""
        return sum(self.bytes_per_block) // self.block_size

    @property
    def total_bytes(self) -> int:
        """Bytes of every block of every group (what the runner's KV store allocates)."""
        return self.num_blocks * sum(self.bytes_per_block)


def make_layer_windows(
    num_layers: int, sliding_window: int = 0, global_layer_ids: Sequence[int] = ()
) -> tuple[int, ...]:
    """Per-layer windows: `sliding_window` on every layer except `global_layer_ids` (full)."""
    global_ids = set(global_layer_ids)
    if any(not 0 <= i < num_layers for i in global_ids):
        raise ValueError(f"global layer ids {sorted(global_ids)} out of range for {num_layers} layers")
    return tuple(0 if i in global_ids else sliding_window for i in range(num_layers))
