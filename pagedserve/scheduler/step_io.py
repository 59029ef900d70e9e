"""What passes between the scheduler and the model runner in one step.

The scheduler owns request state; the runner keeps nothing between steps. It turns a
`SchedulerOutput` into flat arrays, runs the model and returns a `RunnerOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from pagedserve.sampled_token import SampledToken
from pagedserve.sampling_params import SamplingParams


@dataclass(frozen=True)
class ScheduledRequest:
    """One request's share of a step: compute `new_token_ids` at positions start_position...

    `block_tables[g]` lists the physical block ids of KV-cache group g covering positions
    [0, start_position + len(new_token_ids)); entries of blocks freed by a sliding window are the
    null block id (0). `sample` is True when this chunk ends at the last known token, so the
    runner samples one new token for it. `output_token_ids` / `prompt_token_ids` feed the
    penalties; `num_output_tokens` is the seeded generator's counter.
    """

    request_id: str
    new_token_ids: Sequence[int]
    start_position: int
    block_tables: tuple[Sequence[int], ...]
    sample: bool
    sampling_params: SamplingParams
    prompt_token_ids: Sequence[int]
    output_token_ids: Sequence[int]
    want_prompt_logprobs: bool = False  # return prompt logprobs for the positions of this chunk


@dataclass(frozen=True)
class SchedulerOutput:
    scheduled: tuple[ScheduledRequest, ...]

    @property
    def num_batched_tokens(self) -> int:
        return sum(len(r.new_token_ids) for r in self.scheduled)


@dataclass
class RunnerOutput:
    """`sampled[request_id]` for every scheduled request with sample=True.

    `prompt_logprobs[request_id]` (when asked): one entry per position of the chunk, the top-K
    (id, logprob) pairs of the distribution that predicts the *next* token at that position.
    """

    sampled: dict[str, SampledToken]
    prompt_logprobs: dict[str, list[list[tuple[int, float]]]] = field(default_factory=dict)


class ModelRunner(Protocol):
    """What the scheduler needs of a model: run one step's batch."""

    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput: ...
