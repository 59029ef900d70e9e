"""What passes between the scheduler and the model runner in one step.

The runner keeps a state per request it is running (prompt ids, output ids, block tables), so a
step sends only what changed, as vLLM v1's NewRequestData / CachedRequestData do:
- `NewRequestData` carries a request's history once: when it is first admitted, and again when it
  resumes after a preemption (the runner dropped it when it was preempted).
- `ScheduledRequest` (one per request in the batch) carries the diffs since the runner last saw
  the request: block ids appended per KV group, how many leading entries a sliding window has
  since replaced by the null block, and the output ids the scheduler appended.
- `finished_request_ids` lists requests finished or preempted since the last output: the runner
  drops their state.
A step therefore costs the same whatever the requests' context lengths.

Speculative decoding (see pagedserve/spec/__init__.py for the whole design): a decoding request may
carry `draft_token_ids`, guessed tokens after its last known one. They are computed in the same
chunk (`num_new_tokens` = 1 + number of drafts) but are not the request's tokens yet: the runner
appends them to the chunk itself, samples at every position of the chunk, and returns the tokens up
to the first draft the model disagrees with (`RunnerOutput.extra_sampled`). A request with
`num_drafts_to_propose` > 0 also gets fresh drafts for its next step (`RunnerOutput.draft_token_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from pagedserve.sampled_token import SampledToken
from pagedserve.sampling_params import SamplingParams


@dataclass(frozen=True)
class NewRequestData:
    """A request the runner holds nothing for. Its block ids follow in its `ScheduledRequest`.

    `output_token_ids` is empty at first admission and holds the kept outputs on a resume after
    preemption.
    """

    request_id: str
    prompt_token_ids: Sequence[int]
    output_token_ids: Sequence[int]
    sampling_params: SamplingParams


@dataclass(frozen=True)
class ScheduledRequest:
    """One request's share of a step: compute `num_new_tokens` tokens from `start_position` on.

    The tokens are the request's own (prompt then outputs) at those positions, which the runner
    holds once it has applied this step's diffs:
    - `new_block_ids[g]`: block ids appended to the request's block table of KV group g, so that
      the table covers positions [0, start_position + num_new_tokens);
    - `num_null_blocks[g]`: how many leading entries of that table are now the null block 0
      (blocks a sliding window freed; never decreases while the runner holds the request);
    - `new_output_token_ids`: output ids the scheduler appended since the runner last saw it.
    `sample` is True when the chunk ends at the last known token, so the runner samples one new
    token for it. `fork_request_ids` (only with `sample`, on the step that completes the prompt of
    an n-choice request) names choices 1..n-1: from the same logits row the runner also samples
    one first token for each, with `sampling_params.for_choice(i)` and the seed it would give a
    request of that id, and returns them under those ids.
    """

    request_id: str
    start_position: int
    num_new_tokens: int
    new_block_ids: tuple[Sequence[int], ...]
    num_null_blocks: tuple[int, ...]
    new_output_token_ids: Sequence[int]
    sample: bool
    want_prompt_logprobs: bool = False  # return prompt logprobs for the positions of this chunk
    fork_request_ids: tuple[str, ...] = ()  # choice i's id at [i - 1]
    # Speculative decoding: guessed tokens after the request's last known token, computed at the
    # end of this chunk (counted in num_new_tokens; only with `sample`, never with forks).
    draft_token_ids: tuple[int, ...] = ()
    num_drafts_to_propose: int = 0  # after sampling, propose up to this many drafts for the next step

    @property
    def num_known_tokens(self) -> int:
        """Tokens of the chunk that are the request's own (the rest are drafts)."""
        return self.num_new_tokens - len(self.draft_token_ids)


@dataclass(frozen=True)
class SchedulerOutput:
    """One step: `scheduled` in batch order; `new_requests` for those the runner must first add.

    The runner applies, in this order: drop `finished_request_ids`, add `new_requests`, apply the
    diffs of `scheduled`, copy `blocks_to_copy`, then runs the forward. An output with nothing
    scheduled carries nothing (its drops wait for the next one), so a caller may skip running it.
    `blocks_to_copy[g]` lists (src, dst) block ids of KV group g whose whole KV (every layer of the
    group) is copied, in order: a forked choice's own copy of its parent's partial block.
    """

    scheduled: tuple[ScheduledRequest, ...] = ()
    new_requests: tuple[NewRequestData, ...] = ()
    finished_request_ids: tuple[str, ...] = ()
    blocks_to_copy: tuple[tuple[tuple[int, int], ...], ...] = ()  # per group: (src, dst) pairs

    @property
    def num_batched_tokens(self) -> int:
        return sum(r.num_new_tokens for r in self.scheduled)


@dataclass
class RunnerOutput:
    """`sampled[request_id]` for every scheduled request with sample=True, and for every id of
    its `fork_request_ids`.

    Speculative decoding: for a request scheduled with drafts, `sampled[request_id]` is the token
    sampled at its last known position (as without drafts) and `extra_sampled[request_id]` the
    tokens sampled at the positions of its drafts, for as long as each draft equals the token
    sampled before it: entry i was sampled after draft i, which equals the token before it. Its
    length is the number of accepted drafts (0..number of drafts). `draft_token_ids[request_id]`:
    new drafts for a request that asked for them (`num_drafts_to_propose`), following its tokens
    of this step; absent or empty when the proposer found none.

    `prompt_logprobs[request_id]` (when asked): one SampledToken per position of the chunk, for
    the distribution that predicts the *next* token at that position: that next prompt token
    (-1 with a NaN logprob past the prompt), its logprob, and the top-K (id, logprob) pairs.
    """

    sampled: dict[str, SampledToken]
    prompt_logprobs: dict[str, list[SampledToken]] = field(default_factory=dict)
    extra_sampled: dict[str, list[SampledToken]] = field(default_factory=dict)
    draft_token_ids: dict[str, list[int]] = field(default_factory=dict)


class ModelRunner(Protocol):
    """What the scheduler needs of a model: run one step's batch."""

    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput: ...
