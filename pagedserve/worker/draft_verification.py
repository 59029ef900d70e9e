"""Verification of draft tokens in the runner: sampler rows for every draft position, acceptance.

A request scheduled with d drafts has d + 1 logits rows (its last known position and each draft
position, in order). Row j is sampled exactly as a request without speculation would sample that
position once the drafts before it were its outputs: same parameters, same seed, its output
history extended by drafts[:j] (penalties, and the sampler's counter = number of outputs before
it). Drafts are accepted while each equals the token sampled before it; the first token that
differs (or the token after the last draft) is kept too. See pagedserve/spec/__init__.py for why
this is the exact rejection rule for point-mass drafts and why the output equals the one without
speculation token for token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from pagedserve.sampled_token import SampledToken


@dataclass
class SamplingRows:
    """Parallel lists, one entry per sampler row (what `Sampler.sample` takes, plus the logits row)."""

    row_of: list[int] = field(default_factory=list)  # the logits row it samples from
    ids: list[str] = field(default_factory=list)  # the request (or forked choice) it samples for
    params: list = field(default_factory=list)
    prompts: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def add(self, row: int, request_id: str, params, prompt, outputs, seed: int) -> None:
        self.row_of.append(row)
        self.ids.append(request_id)
        self.params.append(params)
        self.prompts.append(prompt)
        self.outputs.append(outputs)
        self.seeds.append(seed)


def first_rows(num_drafts: Sequence[int]) -> list[int]:
    """The first logits row of each sampled request when request i has num_drafts[i] + 1 rows."""
    starts, row = [], 0
    for d in num_drafts:
        starts.append(row)
        row += d + 1
    return starts


def sampling_rows(states, draft_ids: Sequence[Sequence[int]], fork_ids: Sequence[tuple[str, ...]],
                  seed_for: Callable[[str], int]) -> SamplingRows:
    """Sampler rows for the sampled requests `states` (in order; request i has len(draft_ids[i])
    drafts and its rows start at first_rows(...)[i]), then one row per forked choice.

    Choice c of a fork samples from its parent's row with `for_choice(c)` params and the seed its
    own id gives it (`seed_for`), as a request of that id would.
    """
    rows = SamplingRows()
    starts = first_rows([len(d) for d in draft_ids])
    for state, drafts, start in zip(states, draft_ids, starts):
        outputs = state.output_token_ids  # [num_output_tokens] int32 view
        for j in range(len(drafts) + 1):
            history = outputs if j == 0 else np.concatenate((outputs, np.asarray(drafts[:j], np.int32)))
            rows.add(start + j, state.request_id, state.sampling_params, state.prompt_token_ids, history,
                     state.seed)
    for state, forks, start in zip(states, fork_ids, starts):
        for index, choice_id in enumerate(forks, start=1):
            rows.add(start, choice_id, state.sampling_params.for_choice(index), state.prompt_token_ids,
                     state.output_token_ids, seed_for(choice_id))  # outputs: empty, the prompt was just done
    return rows


def accept(sampled: Sequence[SampledToken], start: int, drafts: Sequence[int]
           ) -> tuple[SampledToken, list[SampledToken]]:
    """One request's result from its sampler rows sampled[start:start + len(drafts) + 1]: the
    token at its last known position, and the tokens after each accepted draft (one per draft
    accepted: draft j is accepted iff it equals the token sampled at the position before it)."""
    num_accepted = 0
    while num_accepted < len(drafts) and sampled[start + num_accepted].token_id == drafts[num_accepted]:
        num_accepted += 1
    return sampled[start], list(sampled[start + 1:start + 1 + num_accepted])
