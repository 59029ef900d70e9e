"""What the runner already holds of each request, so that a step sends it only what changed.

The scheduler's Request and the KV cache manager's block tables are the truth; this module keeps,
per request the runner holds, how much of that truth has been sent (table entries and null entries
per KV group, output ids). Every count only grows while the runner holds the request, so a step's
diff costs O(new tokens + new blocks), never O(context).
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedserve.cache.block_pool import NULL_BLOCK_ID
from pagedserve.cache.kv_cache_manager import KVCacheManager
from pagedserve.scheduler.request import Request
from pagedserve.scheduler.step_io import NewRequestData, ScheduledRequest


@dataclass
class _Sent:
    num_blocks: list[int]  # per group: table entries the runner holds
    num_null_blocks: list[int]  # per group: leading entries the runner knows are null
    num_output_tokens: int


class RunnerSync:
    def __init__(self, kv: KVCacheManager):
        self.kv = kv
        self._sent: dict[str, _Sent] = {}
        self._dropped: list[str] = []  # held by the runner, then finished or preempted

    def holds(self, request_id: str) -> bool:
        return request_id in self._sent

    def forget(self, request_id: str) -> None:
        """The request finished or was preempted: the runner drops it at the next step."""
        if self._sent.pop(request_id, None) is not None:
            self._dropped.append(request_id)

    def step_failed(self, dropped: tuple[str, ...]) -> None:
        """The runner raised, perhaps before dropping these: send the drops again (a repeat is harmless)."""
        self._dropped[:0] = dropped

    def take_dropped(self) -> tuple[str, ...]:
        dropped, self._dropped = tuple(self._dropped), []
        return dropped

    def new_request(self, request: Request) -> NewRequestData:
        """The request's history, once; its block ids follow in `scheduled`."""
        num_groups = self.kv.num_groups
        self._sent[request.request_id] = _Sent([0] * num_groups, [0] * num_groups, request.num_output_tokens)
        return NewRequestData(
            request_id=request.request_id,
            prompt_token_ids=tuple(request.prompt_token_ids),
            output_token_ids=tuple(request.output_token_ids),
            sampling_params=request.sampling_params,
        )

    def scheduled(self, request: Request, num_new_tokens: int, sample: bool,
                  want_prompt_logprobs: bool, fork_request_ids: tuple[str, ...] = (),
                  draft_token_ids: tuple[int, ...] = (), num_drafts_to_propose: int = 0) -> ScheduledRequest:
        """The diff for a granted request the runner holds (call `new_request` first if not)."""
        sent = self._sent[request.request_id]
        new_block_ids = []
        for g, table in enumerate(self.kv.block_tables(request.request_id)):
            new_block_ids.append(tuple(table[sent.num_blocks[g]:]))
            sent.num_blocks[g] = len(table)
            num_null = sent.num_null_blocks[g]
            # A window nulls a growing run of leading entries; walk only past the newly nulled.
            while num_null < len(table) and table[num_null] == NULL_BLOCK_ID:
                num_null += 1
            sent.num_null_blocks[g] = num_null
        new_output_token_ids = tuple(request.output_token_ids[sent.num_output_tokens:])
        sent.num_output_tokens = request.num_output_tokens
        return ScheduledRequest(
            request_id=request.request_id,
            start_position=request.num_computed_tokens,
            num_new_tokens=num_new_tokens,
            new_block_ids=tuple(new_block_ids),
            num_null_blocks=tuple(sent.num_null_blocks),
            new_output_token_ids=new_output_token_ids,
            sample=sample,
            want_prompt_logprobs=want_prompt_logprobs,
            fork_request_ids=fork_request_ids,
            draft_token_ids=draft_token_ids,
            num_drafts_to_propose=num_drafts_to_propose,
        )
