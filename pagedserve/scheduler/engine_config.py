"""The engine's configuration: KV-cache shape and the scheduling limits. Checks itself.

Kept apart from engine.py so the scheduler can use it without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pagedserve.cache.kv_cache_spec import KVCacheSpec

SCHEDULING_POLICIES = ("fcfs", "priority")


@dataclass(frozen=True)
class EngineConfig:
    """`max_num_batched_tokens`: tokens computed per step (prefill chunks + decodes);
    `max_num_seqs`: running requests; `max_waiting`: queued requests before add_request refuses;
    `long_prefill_token_threshold`: cap on one request's chunk per step (0 = only the budget);
    `stop_ids`: the model's EOS ids; `scheduling_policy`: "fcfs" or "priority" (lower first).
    """

    kv_cache_spec: KVCacheSpec
    max_model_len: int
    max_num_batched_tokens: int = 512
    max_num_seqs: int = 64
    max_waiting: int = 1024
    long_prefill_token_threshold: int = 0
    enable_prefix_caching: bool = True
    stop_ids: frozenset[int] = frozenset()
    scheduling_policy: str = "fcfs"

    def __post_init__(self):
        object.__setattr__(self, "stop_ids", frozenset(int(i) for i in self.stop_ids))
        for name in ("max_model_len", "max_num_batched_tokens", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {self.max_waiting}")
        if self.long_prefill_token_threshold < 0:
            raise ValueError(f"long_prefill_token_threshold must be >= 0, got {self.long_prefill_token_threshold}")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(f"scheduling_policy must be one of {SCHEDULING_POLICIES}, got {self.scheduling_policy!r}")

    @property
    def block_size(self) -> int:
        return self.kv_cache_spec.block_size

    @property
    def num_blocks(self) -> int:
        return self.kv_cache_spec.num_blocks

    @classmethod
    def create(
        cls,
        *,
        block_size: int = 16,
        num_blocks: int,
        max_model_len: int,
        layer_windows: Sequence[int] = (0,),
        num_kv_heads: int = 1,
        head_dim: int = 1,
        kv_dtype: str = "f32",
        **kwargs,
    ) -> "EngineConfig":
        """A config from plain numbers (layer_windows[i] = layer i's window, 0 = full)."""
        spec = KVCacheSpec.from_layer_windows(
            layer_windows,
            block_size=block_size,
            num_blocks=num_blocks,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            kv_dtype=kv_dtype,
        )
        return cls(kv_cache_spec=spec, max_model_len=max_model_len, **kwargs)
