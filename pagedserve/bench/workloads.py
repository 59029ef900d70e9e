"""Workloads behind `pagedserve bench`: drive an engine with a batch of requests and measure it.

Each workload adds all its requests at once and steps the engine until they finish, watching the
engine's stats after every step. Definitions:
- prefill phase: from the start until every request has its first token;
- prefill tokens computed: prompt (and recomputed) tokens the forward pass actually ran, summed from
  the per-step stats, so prefix-cache hits are excluded and preemption recompute is included;
- decode tok/s: tokens generated after the prefill phase / the time after it (every sequence running);
- generated tok/s: all generated tokens / the whole run (prefill included);
- time to first token: from the moment the requests were added to the end of the step that
  produced the request's first token.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pagedserve.cache.cache_sizing import num_blocks_for_memory
from pagedserve.cache.kv_cache_spec import KV_DTYPE_BYTES, KVCacheSpec, bytes_per_block_of
from pagedserve.sampling_params import SamplingParams


def random_prompts(rng: np.random.Generator, n: int, length: int, vocab: int) -> list[list[int]]:
    """Ids from the middle of the vocabulary: ordinary text tokens, no specials."""
    return [rng.integers(1000, min(vocab, 30000), size=length).tolist() for _ in range(n)]


def greedy(new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)


@dataclass
class WorkloadResult:
    num_requests: int
    prompt_tokens: int
    prefill_tokens_computed: int
    generated_tokens: int
    elapsed_s: float
    prefill_phase_s: float
    prefill_phase_tokens: int  # prefill tokens computed during the prefill phase
    decode_phase_tokens: int  # tokens generated after the prefill phase
    ttft_s: list[float] = field(default_factory=list)  # in the order the requests were added
    peak_blocks_used: int = 0  # over all groups, sampled after every step
    num_blocks_total: int = 0
    preemptions: int = 0
    prefix_queried_tokens: int = 0
    prefix_hit_tokens: int = 0
    output_token_ids: list[list[int]] = field(default_factory=list)  # per request, as added; not in to_json

    @property
    def generated_tok_s(self) -> float:
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def prefill_tok_s(self) -> float:
        return self.prefill_phase_tokens / self.prefill_phase_s if self.prefill_phase_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        decode_s = self.elapsed_s - self.prefill_phase_s
        return self.decode_phase_tokens / decode_s if decode_s > 0 else 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_hit_tokens / self.prefix_queried_tokens if self.prefix_queried_tokens else 0.0

    def to_json(self) -> dict:
        return {
            "num_requests": self.num_requests,
            "prompt_tokens": self.prompt_tokens,
            "prefill_tokens_computed": self.prefill_tokens_computed,
            "generated_tokens": self.generated_tokens,
            "elapsed_s": self.elapsed_s,
            "generated_tok_s": self.generated_tok_s,
            "decode_tok_s": self.decode_tok_s,
            "prefill_tok_s": self.prefill_tok_s,
            "ttft_first_s": self.ttft_s[0] if self.ttft_s else None,
            "ttft_mean_s": statistics.fmean(self.ttft_s) if self.ttft_s else None,
            "ttft_max_s": max(self.ttft_s) if self.ttft_s else None,
            "peak_blocks_used": self.peak_blocks_used,
            "num_blocks_total": self.num_blocks_total,
            "preemptions": self.preemptions,
            "prefix_hit_tokens": self.prefix_hit_tokens,
            "prefix_cache_hit_rate": self.prefix_cache_hit_rate,
        }


def drive(engine, prompts: Sequence[Sequence[int]], params: SamplingParams) -> WorkloadResult:
    """Add every prompt at once, step until all are done, and measure (see the module docstring)."""
    before = engine.stats()
    start = time.perf_counter()
    ids = [engine.add_request(p, params) for p in prompts]
    index = {rid: i for i, rid in enumerate(ids)}
    ttft: list[float | None] = [None] * len(ids)
    output_ids: list[list[int]] = [[] for _ in ids]
    num_waiting_first = len(ids)
    generated = prefill = peak = 0
    phase_end, phase_prefill, phase_generated = None, 0, 0
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter()
        stats = engine.stats()
        prefill += stats.num_prefill_tokens_last_step
        peak = max(peak, stats.num_blocks_used_all_groups)
        for out in outputs:
            i = index.get(out.request_id)
            if i is None or not out.new_token_ids:
                continue
            generated += len(out.new_token_ids)
            output_ids[i].extend(out.new_token_ids)
            if ttft[i] is None:
                ttft[i] = now - start
                num_waiting_first -= 1
        if phase_end is None and num_waiting_first == 0:
            phase_end, phase_prefill, phase_generated = now, prefill, generated
    end = time.perf_counter()
    after = engine.stats()
    if phase_end is None:  # some request never produced a token (e.g. max_tokens 0)
        phase_end, phase_prefill, phase_generated = end, prefill, generated
    return WorkloadResult(
        num_requests=len(ids),
        prompt_tokens=sum(len(p) for p in prompts),
        prefill_tokens_computed=prefill,
        generated_tokens=generated,
        elapsed_s=end - start,
        prefill_phase_s=phase_end - start,
        prefill_phase_tokens=phase_prefill,
        decode_phase_tokens=generated - phase_generated,
        ttft_s=[t for t in ttft if t is not None],
        peak_blocks_used=peak,
        num_blocks_total=after.num_blocks_total_all_groups,
        preemptions=after.num_preemptions - before.num_preemptions,
        prefix_queried_tokens=after.num_prefix_queried_tokens - before.num_prefix_queried_tokens,
        prefix_hit_tokens=after.num_prefix_hit_tokens - before.num_prefix_hit_tokens,
        output_token_ids=output_ids,
    )


# ---- the workloads ----
def _require_no_prefix_caching(engine) -> None:
    if engine.config.enable_prefix_caching:
        raise ValueError("throughput sweeps need an engine built with enable_prefix_caching=False "
                         "(a cached prompt would not be computed)")


def measure_prefill(engine, prompt: list[int]) -> float:
    """Prompt tokens per second of one prompt computed from scratch (one token sampled).

    The engine must be built without prefix caching, so that every prompt token is computed."""
    _require_no_prefix_caching(engine)
    result = drive(engine, [prompt], greedy(1))
    return result.prompt_tokens / result.elapsed_s


def measure_decode(engine, prompts: list[list[int]], new_tokens: int) -> WorkloadResult:
    """Batched decode: `.decode_tok_s` counts tokens generated once every sequence is running.

    The engine must be built without prefix caching, so that every prompt token is computed."""
    _require_no_prefix_caching(engine)
    return drive(engine, prompts, greedy(new_tokens))


def concurrency_workload(engine, rng, n: int, prompt_tokens: int, new_tokens: int, vocab: int) -> WorkloadResult:
    """`n` concurrent sequences of `prompt_tokens` random tokens, `new_tokens` generated each."""
    return drive(engine, random_prompts(rng, n, prompt_tokens, vocab), greedy(new_tokens))


def shared_prefix_workload(engine, rng, num_requests: int, prefix_tokens: int, suffix_tokens: int,
                           new_tokens: int, vocab: int) -> WorkloadResult:
    """Requests that all start with one `prefix_tokens`-token system prompt (then a unique suffix).

    The prefix cache is emptied first, so only this workload's own blocks can be hit: with
    chunked prefill, requests admitted after the first prompt's chunks are cached hit them.
    """
    engine.scheduler.kv.reset_prefix_cache()
    system = random_prompts(rng, 1, prefix_tokens, vocab)[0]
    prompts = [system + suffix for suffix in random_prompts(rng, num_requests, suffix_tokens, vocab)]
    return drive(engine, prompts, greedy(new_tokens))


# ---- KV-cache capacity ----
def blocks_per_sequence(spec: KVCacheSpec, seq_len: int) -> tuple[int, ...]:
    """Blocks one decoding sequence of `seq_len` tokens holds, per group (windows bound it)."""
    full = -(-seq_len // spec.block_size)
    return tuple(min(full, -(-g.sliding_window // spec.block_size) + 1) if g.is_windowed else full
                 for g in spec.groups)


def capacity_table(spec: KVCacheSpec, memory_bytes: int, seq_len: int,
                   dtypes: Sequence[str] = tuple(KV_DTYPE_BYTES)) -> dict[str, dict]:
    """Per KV dtype: bytes per token, blocks per group in `memory_bytes`, sequences of `seq_len` that fit.

    max_concurrent_sequences = usable blocks (null block excluded) // blocks per sequence, the
    smallest over the groups.
    """
    per_seq = blocks_per_sequence(spec, seq_len)
    layers = [len(g.layer_ids) for g in spec.groups]
    table = {}
    for dtype in dtypes:
        per_block = sum(bytes_per_block_of(n, spec.block_size, spec.num_kv_heads, spec.head_dim, dtype)
                        for n in layers)
        try:
            num_blocks = num_blocks_for_memory(memory_bytes, block_size=spec.block_size, group_num_layers=layers,
                                               num_kv_heads=spec.num_kv_heads, head_dim=spec.head_dim,
                                               kv_dtype=dtype)
        except ValueError:
            num_blocks = 1  # not even one usable block
        table[dtype] = {
            "bytes_per_token": per_block // spec.block_size,
            "num_blocks": num_blocks - 1,  # usable, per group
            "blocks_per_sequence": list(per_seq),  # per group
            "max_concurrent_sequences": min((num_blocks - 1) // n for n in per_seq),
        }
    return table
