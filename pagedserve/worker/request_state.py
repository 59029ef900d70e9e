"""What the runner keeps of each request between steps, updated by the scheduler's diffs.

The scheduler sends a request's history once (`NewRequestData`) and then, per step, only what
changed (`ScheduledRequest`: new block ids, newly nulled window blocks, new output ids). The runner
keeps the history here in arrays that grow in place, so applying a step and handing the sampler its
penalty history (NumPy views, no copies) cost O(new tokens + new blocks), not O(context).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pagedserve.cache.block_pool import NULL_BLOCK_ID
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.step_io import NewRequestData, ScheduledRequest, SchedulerOutput


class GrowingIds:
    """An int32 array that grows in place (capacity doubles): appends cost O(new ids), amortized."""

    def __init__(self, initial: Sequence[int] = ()):
        self._len = len(initial)
        self._buf = np.empty(max(16, self._len), np.int32)  # [capacity]
        self._buf[:self._len] = initial

    def __len__(self) -> int:
        return self._len

    @property
    def ids(self) -> np.ndarray:
        """The ids so far: a view [len], valid until the next `extend`."""
        return self._buf[:self._len]

    def extend(self, ids: Sequence[int]) -> None:
        num_total = self._len + len(ids)
        if num_total > len(self._buf):
            grown = np.empty(max(num_total, 2 * len(self._buf)), np.int32)
            grown[:self._len] = self._buf[:self._len]
            self._buf = grown
        self._buf[self._len:num_total] = ids
        self._len = num_total


class CachedRequestState:
    """One request as the runner holds it: prompt then output ids, a block table per KV group."""

    def __init__(self, new: NewRequestData, num_groups: int, seed: int, matcher=None):
        self.request_id = new.request_id
        self.sampling_params: SamplingParams = new.sampling_params
        self.seed = seed  # the sampler's stream when the request brought no seed of its own
        self.num_prompt_tokens = len(new.prompt_token_ids)
        self.token_ids = GrowingIds(new.prompt_token_ids)  # prompt, then outputs
        self.token_ids.extend(new.output_token_ids)
        self.block_tables = [GrowingIds() for _ in range(num_groups)]
        self.num_null_blocks = [0] * num_groups  # per group: leading entries freed by a window
        # structured output: an llguidance matcher past the outputs so far (None: unconstrained)
        self.matcher = matcher
        if matcher is not None and len(new.output_token_ids):  # resumed after a preemption
            matcher.consume_tokens([int(t) for t in new.output_token_ids])

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def prompt_token_ids(self) -> np.ndarray:
        return self.token_ids.ids[:self.num_prompt_tokens]  # [num_prompt_tokens] int32 view

    @property
    def output_token_ids(self) -> np.ndarray:
        return self.token_ids.ids[self.num_prompt_tokens:]  # [num_output_tokens] int32 view

    def block_table_rows(self) -> tuple[np.ndarray, ...]:
        return tuple(table.ids for table in self.block_tables)  # per group: [num_blocks] int32

    def apply(self, scheduled: ScheduledRequest) -> None:
        """Take one step's diff; afterwards the state covers the step's chunk."""
        self.token_ids.extend(scheduled.new_output_token_ids)
        for g, (table, new_block_ids) in enumerate(zip(self.block_tables, scheduled.new_block_ids)):
            table.extend(new_block_ids)
            num_null = scheduled.num_null_blocks[g]
            if num_null > self.num_null_blocks[g]:
                table.ids[self.num_null_blocks[g]:num_null] = NULL_BLOCK_ID
                self.num_null_blocks[g] = num_null
        end = scheduled.start_position + scheduled.num_known_tokens  # drafts are not the request's yet
        if end > self.num_tokens or (scheduled.draft_token_ids and end != self.num_tokens):
            raise ValueError(f"request {self.request_id}: a chunk up to position {end} but the runner "
                             f"holds {self.num_tokens} tokens")


class RequestStates:
    """Every request the runner holds, kept in step with the scheduler's outputs."""

    def __init__(self, num_groups: int, seed_for: Callable[[str], int],
                 matcher_for: Callable[[object], object] | None = None):
        self.num_groups = num_groups
        self.seed_for = seed_for
        self.matcher_for = matcher_for  # a constraint -> a fresh matcher (structured output)
        self._states: dict[str, CachedRequestState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._states

    def __getitem__(self, request_id: str) -> CachedRequestState:
        return self._states[request_id]

    def request_ids(self) -> set[str]:
        return set(self._states)

    def update(self, scheduler_output: SchedulerOutput) -> list[CachedRequestState]:
        """Drop finished/preempted requests, add new ones, apply the diffs.

        Returns the states of `scheduler_output.scheduled`, in batch order.
        """
        for request_id in scheduler_output.finished_request_ids:
            self._states.pop(request_id, None)
        for new in scheduler_output.new_requests:
            constraint = new.sampling_params.constraint
            matcher = None if constraint is None or self.matcher_for is None else self.matcher_for(constraint)
            self._states[new.request_id] = CachedRequestState(
                new, self.num_groups, self.seed_for(new.request_id), matcher)
        states = []
        for scheduled in scheduler_output.scheduled:
            state = self._states.get(scheduled.request_id)
            if state is None:
                raise ValueError(f"the step has a diff for request {scheduled.request_id}, "
                                 "which the runner does not hold")
            state.apply(scheduled)
            states.append(state)
        return states
