"""The model runner: one scheduler step in, sampled tokens out. Keeps nothing between steps.

It flattens a `SchedulerOutput` into the packed arrays the kernels take (token ids, positions,
slot mappings, block tables, query offsets), runs the forward pass, computes logits only for the
rows that need them and samples.
"""

from __future__ import annotations

import zlib

import numpy as np

from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.cache.kv_store import KVStore
from pagedserve.model.forward import AttentionMetadata, Transformer
from pagedserve.model.loader import LoadedModel
from pagedserve.model.sampler import Sampler
from pagedserve.scheduler.step_io import RunnerOutput, SchedulerOutput


def build_metadata(scheduler_output: SchedulerOutput, block_size: int, num_groups: int
                   ) -> tuple[np.ndarray, AttentionMetadata]:
    """token_ids [T] int32 and the attention metadata of a step."""
    reqs = scheduler_output.scheduled
    num_seqs = len(reqs)
    lens = np.fromiter((len(r.new_token_ids) for r in reqs), np.int64, num_seqs)
    qsl = np.zeros(num_seqs + 1, dtype=np.int32)
    np.cumsum(lens, out=qsl[1:])
    num_tokens = int(qsl[-1])
    token_ids = np.empty(num_tokens, dtype=np.int32)
    positions = np.empty(num_tokens, dtype=np.int64)
    seq_lens = np.empty(num_seqs, dtype=np.int32)
    for s, r in enumerate(reqs):
        a, b = qsl[s], qsl[s + 1]
        token_ids[a:b] = r.new_token_ids
        positions[a:b] = np.arange(r.start_position, r.start_position + (b - a))
        seq_lens[s] = r.start_position + (b - a)
    tables, slots = [], []
    for g in range(num_groups):
        width = max(1, max(len(r.block_tables[g]) for r in reqs))
        table = np.zeros((num_seqs, width), dtype=np.int32)
        for s, r in enumerate(reqs):
            table[s, :len(r.block_tables[g])] = r.block_tables[g]
        seq_of_token = np.repeat(np.arange(num_seqs), lens)
        blocks = table[seq_of_token, positions // block_size].astype(np.int64)
        slots.append(blocks * block_size + positions % block_size)
        tables.append(table)
    meta = AttentionMetadata(positions, qsl, seq_lens, tuple(tables), tuple(slots))
    return token_ids, meta


class ModelRunnerImpl:
    """Implements `scheduler.step_io.ModelRunner` for a loaded GGUF model."""

    def __init__(self, model: LoadedModel, kv_spec: KVCacheSpec, seed: int):
        self.model = model
        self.kv_spec = kv_spec
        self.kv_store = KVStore(kv_spec)
        self.transformer = Transformer(model.config, model.weights, self.kv_store)
        self.sampler = Sampler(model.config.vocab_size, rng_seed=seed)
        self.seed = seed

    def _default_seed(self, request_id: str) -> int:
        # Stateless yet stable per request: an unseeded request draws from its own stream.
        return zlib.crc32(request_id.encode()) ^ (self.seed * 0x9E3779B97F4A7C15 & ((1 << 63) - 1))

    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        reqs = scheduler_output.scheduled
        if not reqs:
            return RunnerOutput(sampled={})
        token_ids, meta = build_metadata(scheduler_output, self.kv_spec.block_size,
                                         self.kv_spec.num_groups)
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
            chosen = [reqs[s] for s in sample_idx]
            sampled = self.sampler.sample(
                np.ascontiguousarray(logits[:len(sample_idx)]),
                [r.sampling_params for r in chosen],
                [r.prompt_token_ids for r in chosen],
                [r.output_token_ids for r in chosen],
                [self._default_seed(r.request_id) for r in chosen],
            )
            for r, tok in zip(chosen, sampled):
                output.sampled[r.request_id] = tok
        for s, (start, n) in prompt_rows.items():
            k = max(1, reqs[s].sampling_params.prompt_logprobs)
            block = np.ascontiguousarray(logits[start:start + n])
            output.prompt_logprobs[reqs[s].request_id] = Sampler.prompt_logprobs(block, k)
        return output
