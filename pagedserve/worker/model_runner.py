"""The model runner: one scheduler step in, sampled tokens out.

It keeps each running request's history and block tables (`RequestStates`), updated from the
step's diffs, flattens the batch into the packed arrays the kernels take (token ids, positions,
slot mappings, block tables, query offsets), runs the forward pass, computes logits only for the
rows that need them and samples (penalties read the history it holds).

The step's `blocks_to_copy` are copied before the forward. A request whose prompt this step
completes with `fork_request_ids` (its other choices) has its logits row sampled once per choice,
each with the choice's own parameters and seed (`_sampling_rows`).
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
from pagedserve.worker.batch_metadata import SequenceChunk, build_metadata
from pagedserve.worker.request_state import RequestStates


class ModelRunnerImpl:
    """Implements `scheduler.step_io.ModelRunner` for a loaded GGUF model."""

    def __init__(self, model: LoadedModel, kv_spec: KVCacheSpec, seed: int):
        self.model = model
        self.kv_spec = kv_spec
        self.kv_store = KVStore(kv_spec)
        self.transformer = Transformer(model.config, model.weights, self.kv_store)
        self.sampler = Sampler(model.config.vocab_size, rng_seed=seed)
        self.seed = seed
        self.states = RequestStates(kv_spec.num_groups, self._default_seed, self._new_matcher)
        self.mask_stats = token_mask.MaskStats()

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
        chunks = [
            SequenceChunk(state.token_ids.ids[r.start_position:r.start_position + r.num_new_tokens],
                          r.start_position, state.block_table_rows())
            for state, r in zip(states, reqs)
        ]
        token_ids, meta = build_metadata(chunks, self.kv_spec.block_size, self.kv_spec.num_groups)
        self.kv_store.copy_blocks(scheduler_output.blocks_to_copy)
        hidden = self.transformer.forward(token_ids, meta)
        qsl = meta.query_start_loc

        sample_idx = [s for s, r in enumerate(reqs) if r.sample]
        logprob_idx = [s for s, r in enumerate(reqs) if r.want_prompt_logprobs]
        rows: list[int] = [int(qsl[s + 1]) - 1 for s in sample_idx]
        prompt_rows: dict[int, tuple[int, int]] = {}
        for s in logprob_idx:
            prompt_rows[s] = (len(rows), int(qsl[s + 1] - qsl[s]))
            rows.extend(range(int(qsl[s]), int(qsl[s + 1])))
        output = RunnerOutput(sampled={})
        if not rows:
            return output
        logits = self.transformer.logits(hidden[np.asarray(rows)])
        if sample_idx:
            chosen = [states[s] for s in sample_idx]
            row_of, ids, params, prompts, outputs, seeds = self._sampling_rows(
                [(state, reqs[s].fork_request_ids) for state, s in zip(chosen, sample_idx)])
            sample_logits = np.ascontiguousarray(logits[:len(sample_idx)])
            masked = [i for i, state in enumerate(chosen) if state.matcher is not None]
            if masked:  # structured output: disallowed tokens -inf before the sampler (forks inherit it)
                token_mask.apply_masks(sample_logits, masked, [chosen[i].matcher for i in masked],
                                       self.mask_stats)
            # Forked choices repeat their parent's row, so a row is gathered (a copy) when there are any.
            rows_to_sample = sample_logits if len(row_of) == len(sample_idx) else sample_logits[row_of]
            sampled = self.sampler.sample(rows_to_sample, params, prompts, outputs, seeds)
            output.sampled.update(zip(ids, sampled))
            for state, tok in zip(chosen, sampled):  # the first len(chosen) rows are the states' own
                if state.matcher is not None:
                    token_mask.advance(state.matcher, tok.token_id)
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

    def _sampling_rows(self, sampling):
        """One sampler row per (state, fork ids) to sample, then one more per forked choice.

        Returns parallel lists: logits row index, the id the token is returned under, sampling
        params, prompt ids, output ids, seed. Choice i of a fork samples from its parent's row with
        `for_choice(i)` params and the seed its own id gives it, as a request of that id would.
        """
        row_of, ids, params, prompts, outputs, seeds = [], [], [], [], [], []
        for row, (state, fork_request_ids) in enumerate(sampling):
            row_of.append(row)
            ids.append(state.request_id)
            params.append(state.sampling_params)
            prompts.append(state.prompt_token_ids)
            outputs.append(state.output_token_ids)
            seeds.append(state.seed)
        for row, (state, fork_request_ids) in enumerate(sampling):
            for index, choice_id in enumerate(fork_request_ids, start=1):
                row_of.append(row)
                ids.append(choice_id)
                params.append(state.sampling_params.for_choice(index))
                prompts.append(state.prompt_token_ids)
                outputs.append(state.output_token_ids)  # empty: the prompt was just completed
                seeds.append(self.states.seed_for(choice_id))
        return row_of, ids, params, prompts, outputs, seeds
