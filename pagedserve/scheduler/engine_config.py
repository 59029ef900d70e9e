"""The engine's configuration: KV-cache shape and the scheduling limits. Checks itself.

Kept apart from engine.py so the scheduler can use it without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.scheduler.request_queue import SCHEDULING_POLICIES


@dataclass(frozen=True)
class EngineConfig:
    """`max_num_batched_tokens`: tokens computed per step (prefill chunks + decodes);
    `max_num_seqs`: running requests; `max_waiting`: queued requests before add_request refuses;
    `long_prefill_token_threshold`: cap on one request's chunk per step (0 = only the budget);
    `stop_ids`: the model's EOS ids; `scheduling_policy`: "fcfs" or "priority" (lower first).
    `num_speculative_tokens`: speculative decoding's k, draft tokens verified per request and step at
    most (0 = speculation off); `speculative_max_batch_tokens`: no drafts past this many tokens of
    running requests in a step (scheduler/spec_policy.py). `max_step_ms`: the target time of a step
    (0 = off); `step_fixed_ms`, `step_per_token_ms`: a step's cost line measured at warm-up (0 =
    not measured); with all three the budget follows time while serving
    (scheduler/step_time_budget.py), and auto-mode speculation weighs drafts by the line.

    No field has a default: the values come from `EngineArgs` (engine/engine_args.py), the one
    place the engine's defaults live.
    """

    kv_cache_spec: KVCacheSpec
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    max_waiting: int
    long_prefill_token_threshold: int
    enable_prefix_caching: bool
    scheduling_policy: str
    stop_ids: frozenset[int]
    num_speculative_tokens: int
    speculative_max_batch_tokens: int
    max_step_ms: float
    step_fixed_ms: float
    step_per_token_ms: float

    def __post_init__(self):
        object.__setattr__(self, "stop_ids", frozenset(int(i) for i in self.stop_ids))
        for name in ("max_model_len", "max_num_batched_tokens", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {self.max_waiting}")
        if self.long_prefill_token_threshold < 0:
            raise ValueError(f"long_prefill_token_threshold must be >= 0, got {self.long_prefill_token_threshold}")
        if self.num_speculative_tokens < 0:
            raise ValueError(f"num_speculative_tokens must be >= 0, got {self.num_speculative_tokens}")
        if self.speculative_max_batch_tokens < 0:
            raise ValueError(f"speculative_max_batch_tokens must be >= 0, got {self.speculative_max_batch_tokens}")
        for name in ("max_step_ms", "step_fixed_ms", "step_per_token_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(f"scheduling_policy must be one of {SCHEDULING_POLICIES}, got {self.scheduling_policy!r}")

    @property
    def step_fixed_tokens(self) -> float:
        """The fixed part of a step's cost in tokens' worth of compute (0 when not measured)."""
        return self.step_fixed_ms / self.step_per_token_ms if self.step_per_token_ms > 0 else 0.0

    @property
    def block_size(self) -> int:
        return self.kv_cache_spec.block_size

    @property
    def num_blocks(self) -> int:
        return self.kv_cache_spec.num_blocks
