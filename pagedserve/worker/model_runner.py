"""The model runner: one scheduler step in, sampled tokens out.

It keeps each running request's history and block tables (`RequestStates`), updated from the
step's diffs, flattens the batch into the packed arrays the kernels take (token ids, positions,
slot mappings, block tables, query offsets), runs the forward pass, computes logits only for the
rows that need them and samples (penalties read the history it holds).

The step's `blocks_to_copy` are copied before the forward. A request whose prompt this step
completes with `fork_request_ids` (its other choices) has its logits row sampled once per choice,
each with the choice's own parameters and seed (`draft_verification.sampling_rows`).

Speculative decoding: a request's drafts are appended to its chunk, it samples at every draft
position and keeps the tokens up to the first draft the model disagrees with
(`draft_verification`); then the proposer guesses the next drafts of the requests that asked.
"""

from __future__ import annotations

import zlib

import numpy as np

from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.cache.kv_store import KVStore
from pagedserve.model.forward import Transformer
from pagedserve.model.loader import LoadedModel
from pagedserve.model.sampler import Sampler
from pagedserve.scheduler.step_io import RunnerOutput, SchedulerOutput
from pagedserve.structured import token_mask
from pagedserve.spec.proposer import DraftProposer
from pagedserve.worker import draft_verification
from pagedserve.worker.batch_metadata import SequenceChunk, build_metadata
from pagedserve.worker.request_state import RequestStates


class ModelRunnerImpl:
    """Implements `scheduler.step_io.ModelRunner` for a loaded GGUF model."""

    def __init__(self, model: LoadedModel, kv_spec: KVCacheSpec, seed: int, proposer: DraftProposer | None = None):
        self.model = model
        self.kv_spec = kv_spec
        self.kv_store = KVStore(kv_spec)
        self.transformer = Transformer(model.config, model.weights, self.kv_store)
        self.sampler = Sampler(model.config.vocab_size, rng_seed=seed)
        self.seed = seed
        self.states = RequestStates(kv_spec.num_groups, self._default_seed, self._new_matcher)
        self.mask_stats = token_mask.MaskStats()
        self.proposer = proposer  # speculative decoding's drafts (None: the runner proposes none)

    def _new_matcher(self, constraint):
        # Cached by the compiler: the front end compiled it already (off the step), this copies it.
        from pagedserve.structured.compiler import compiler_for
        return compiler_for(self.model.tokenizer, self.model.config.vocab_size).compile(constraint)

    def _default_seed(self, request_id: str) -> int:
        # Stable per request id (also across a preemption): an unseeded request draws from its own stream.
        return zlib.crc32(request_id.encode()) ^ (self.seed * 0x9E3779B97F4A7C15 & ((1 << 63) - 1))

    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        states = self.states.update(scheduler_output)
        reqs = scheduler_output.scheduled
        if not reqs:
            return RunnerOutput(sampled={})
        chunks = [SequenceChunk(_chunk_token_ids(state, r), r.start_position, state.block_table_rows())
                  for state, r in zip(states, reqs)]
        token_ids, meta = build_metadata(chunks, self.kv_spec.block_size, self.kv_spec.num_groups)
        self.kv_store.copy_blocks(scheduler_output.blocks_to_copy)
        # Structured output: the masks of this step's constrained samples fill while the forward runs.
        matchers = [state.matcher for state, r in zip(states, reqs) if r.sample and state.matcher is not None]
        pending_masks = (token_mask.start_masks(matchers, self.model.config.vocab_size, self.mask_stats)
                         if matchers else None)
        try:
            return self._forward_and_sample(states, reqs, token_ids, meta, pending_masks)
        finally:
            if pending_masks is not None:
                pending_masks.wait()  # the matchers are never advanced under a running fill

    def _forward_and_sample(self, states, reqs, token_ids, meta, pending_masks) -> RunnerOutput:
        hidden = self.transformer.forward(token_ids, meta)
        qsl = meta.query_start_loc

        sample_idx = [s for s, r in enumerate(reqs) if r.sample]
        logprob_idx = [s for s, r in enumerate(reqs) if r.want_prompt_logprobs]
        # A request with d drafts samples at its last d + 1 positions, in order.
        draft_ids = [reqs[s].draft_token_ids for s in sample_idx]
        rows: list[int] = []
        for s, drafts in zip(sample_idx, draft_ids):
            rows.extend(range(int(qsl[s + 1]) - 1 - len(drafts), int(qsl[s + 1])))
        num_sample_rows = len(rows)
        prompt_rows: dict[int, tuple[int, int]] = {}
        for s in logprob_idx:
            prompt_rows[s] = (len(rows), int(qsl[s + 1] - qsl[s]))
            rows.extend(range(int(qsl[s]), int(qsl[s + 1])))
        output = RunnerOutput(sampled={})
        if not rows:
            return output
        logits = self.transformer.logits(hidden[np.asarray(rows)])
        if sample_idx:
            self._sample(logits[:num_sample_rows], [states[s] for s in sample_idx], [reqs[s] for s in sample_idx],
                         output, pending_masks)
        for s, (start, n) in prompt_rows.items():
            state = states[s]
            k = max(1, state.sampling_params.prompt_logprobs)
            block = np.ascontiguousarray(logits[start:start + n])
            # position p predicts prompt token p + 1; the last prompt position predicts the output
            first = reqs[s].start_position + 1
            targets = np.full(n, -1, np.int32)  # [n]
            num_known = max(0, min(n, state.num_prompt_tokens - first))
            targets[:num_known] = state.token_ids.ids[first:first + num_known]
            output.prompt_logprobs[reqs[s].request_id] = Sampler.prompt_logprobs(block, k, targets)
        return output

    def _sample(self, logits: np.ndarray, chosen, scheduled, output: RunnerOutput, pending_masks) -> None:
        """Sample the requests `chosen` (their rows of logits [num_rows, V] in order, d + 1 rows for
        a request with d drafts), verify drafts, fork choices, propose drafts; results into `output`."""
        draft_ids = [r.draft_token_ids for r in scheduled]
        starts = draft_verification.first_rows([len(d) for d in draft_ids])
        plan = draft_verification.sampling_rows(chosen, draft_ids, [r.fork_request_ids for r in scheduled],
                                                self.states.seed_for)
        sample_logits = np.ascontiguousarray(logits)
        if pending_masks is not None:  # structured output: disallowed tokens -inf before the sampler (forks inherit it)
            pending_masks.apply(sample_logits, [starts[i] for i, state in enumerate(chosen) if state.matcher is not None])
        # Forked choices repeat their parent's row, so a row is gathered (a copy) when there are any.
        rows_to_sample = sample_logits if len(plan.row_of) == len(sample_logits) else sample_logits[plan.row_of]
        sampled = self.sampler.sample(rows_to_sample, plan.params, plan.prompts, plan.outputs, plan.seeds)
        num_own_rows = len(sample_logits)
        output.sampled.update(zip(plan.ids[num_own_rows:], sampled[num_own_rows:]))  # forked choices
        proposing = []
        for state, r, start in zip(chosen, scheduled, starts):
            first, extra = draft_verification.accept(sampled, start, r.draft_token_ids)
            output.sampled[state.request_id] = first
            if r.draft_token_ids:
                output.extra_sampled[state.request_id] = extra
            if state.matcher is not None:  # never with drafts (the scheduler gives constrained requests none)
                token_mask.advance(state.matcher, first.token_id)
            if r.num_drafts_to_propose > 0 and self.proposer is not None:
                new_ids = np.fromiter((t.token_id for t in (first, *extra)), np.int32, 1 + len(extra))
                proposing.append((state, r.num_drafts_to_propose, new_ids))
        if proposing:
            proposals = self.proposer.propose(
                [state.request_id for state, _, _ in proposing],
                [np.concatenate((state.token_ids.ids, new_ids)) for state, _, new_ids in proposing],
                [n for _, n, _ in proposing])
            for (state, _, _), drafts in zip(proposing, proposals):
                if len(drafts):
                    output.draft_token_ids[state.request_id] = [int(t) for t in drafts]


def _chunk_token_ids(state, scheduled) -> np.ndarray:
    """The chunk's tokens: the request's own from start_position on, then its drafts."""
    start, num_known = scheduled.start_position, scheduled.num_known_tokens
    own = state.token_ids.ids[start:start + num_known]  # [num_known] int32 view
    if not scheduled.draft_token_ids:
        return own
    return np.concatenate((own, np.asarray(scheduled.draft_token_ids, np.int32)))
