"""A snapshot of the engine after a step: what `service` turns into metrics (it alone knows Prometheus).

Per-group block figures are tuples indexed by KV-cache group; cached-but-free blocks count as free.
Counters (`num_*` totals) only grow; `*_last_step` figures describe the most recent step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    num_preemptions: int  # total so far
    num_blocks_used: tuple[int, ...]  # per group
    num_blocks_free: tuple[int, ...]  # per group
    num_blocks_total: tuple[int, ...]  # per group, usable blocks (the null block excluded)
    kv_bytes_per_token: int
    num_prefix_queried_tokens: int  # total tokens of admitted requests looked up in the prefix cache
    num_prefix_hit_tokens: int  # total of those served from the cache
    num_window_freed_blocks: int  # total blocks dropped behind a sliding window
    num_prefill_tokens_last_step: int
    num_decode_tokens_last_step: int
    last_step_time_s: float
    num_steps: int
    step_token_budget: int  # tokens the next step may compute (follows max_step_ms when measured)
    num_finished_by_reason: Mapping[str, int] = field(default_factory=dict)  # "stop"/"length"/"abort"/"error"
    # Total prompt tokens computed (recomputes after preemption included, prefix-cache hits not):
    # the n choices of one request compute their prompt once.
    num_prefill_tokens: int = 0
    # Speculative decoding (totals): draft tokens verified, those the model accepted, and
    # acceptance_length_counts[a] = verify steps (one request, one step) that accepted exactly a drafts.
    num_draft_tokens: int = 0
    num_accepted_draft_tokens: int = 0
    acceptance_length_counts: tuple[int, ...] = ()

    @property
    def num_blocks_used_all_groups(self) -> int:
        return sum(self.num_blocks_used)

    @property
    def num_blocks_total_all_groups(self) -> int:
        return sum(self.num_blocks_total)

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of usable blocks in use, over all groups."""
        return self.num_blocks_used_all_groups / self.num_blocks_total_all_groups

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.num_prefix_hit_tokens / self.num_prefix_queried_tokens if self.num_prefix_queried_tokens else 0.0
