"""Every option of the engine, with its one default: the fields of `EngineArgs`.

The scheduler's `EngineConfig`, the `KVCacheSpec` and the runner's options are made from these
fields (`create_kv_cache_spec`, `create_engine_config`) and never carry defaults of their own, and
the flags of `serve`, `bench`, `generate` and `perplexity` are generated from them
(`add_cli_args`), help text included. Tests check that the two agree (tests/engine/test_engine_args.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from pagedserve.cache.cache_sizing import parse_memory, resolve_num_blocks
from pagedserve.cache.kv_cache_spec import KV_DTYPE_BYTES, KVCacheSpec
from pagedserve.dataclass_flags import add_dataclass_flags, dataclass_from_cli_args
from pagedserve.sampling_params import MAX_DRAFT_TOKENS
from pagedserve.scheduler.engine_config import SCHEDULING_POLICIES, EngineConfig

SPECULATIVE_METHODS = ("off", "ngram")


@dataclass(frozen=True)
class EngineArgs:
    """Engine options: the model, the KV cache, batching limits, threads and scheduling.

    Each field is a flag of `serve`, `bench`, `generate` and `perplexity` (`--kv-dtype` ...).
    """

    model: str | None = field(default=None, metadata={
        "help": "GGUF path or known model name (unset: SmolLM2-135M-Instruct Q4_1)"})
    kv_dtype: str = field(default="f16", metadata={
        "choices": tuple(KV_DTYPE_BYTES),
        # As llama.cpp: half the memory of f32, KL to f32 ~4e-7 (tests/cache).
        "help": "KV-cache element type: f16 (IEEE half stored as uint16), f32 (exact), "
                "int8 (per-token, per-head scales)"})
    kv_cache_memory: str | None = field(default="512MiB", metadata={
        "help": "KV-cache size in bytes (1GiB, 512MiB, 2GB, 1e9); --num-kv-blocks wins when given"})
    num_kv_blocks: int | None = field(default=None, metadata={
        "help": "KV-cache size in blocks per group, the null block included"})
    block_size: int = field(default=16, metadata={"help": "tokens per KV-cache block"})
    sliding_window: int = field(default=0, metadata={
        "help": "limit attention of every layer to the last W tokens (0 = off)"})
    enable_prefix_caching: bool = field(default=True, metadata={
        "negative_aliases": ("--no-prefix-cache",),
        "help": "reuse the KV blocks of prompt prefixes computed before"})
    # 256 vs 512 at 32 streams: ITL p99 237 vs 530 ms, +11% tok/s.
    max_num_batched_tokens: int = field(default=256, metadata={
        "help": "tokens per step (prefill chunks + decodes); smaller = shorter decode stalls"})
    # 250 ms: under llama-server's ITL p99 of 229-ish ms at 16 streams on 1B (issue 14) with a
    # margin for the decodes sharing the step; at 135M it keeps ~200 of the 256 tokens (~1.2 ms each).
    max_step_ms: float = field(default=250.0, metadata={
        "help": "target time of one step in ms: at warm-up the model's cost per token is measured and "
                "the tokens per step set so a step (a prefill chunk with the running decodes) takes about "
                "this long, at most --max-num-batched-tokens; while serving, measured step times correct "
                "it (0 = off: that fixed budget alone)"})
    max_num_seqs: int = field(default=64, metadata={"help": "running requests at most"})
    max_waiting: int = field(default=1024, metadata={
        "help": "queued requests at most; more are refused (RESOURCE_EXHAUSTED)"})
    long_prefill_token_threshold: int = field(default=0, metadata={
        "help": "cap on one request's prefill chunk per step (0 = only the step budget)"})
    max_model_len: int | None = field(default=None, metadata={
        "help": "longest prompt + output in tokens (unset: the model's context length)"})
    threads: int | None = field(default=None, metadata={"help": "compute threads (unset: all cores)"})
    scheduling_policy: str = field(default="fcfs", metadata={
        "choices": SCHEDULING_POLICIES,
        "help": "waiting-queue order: first come first served, or by request priority (lower first)"})
    activation_bits: int = field(default=16, metadata={
        "choices": (16, 8),
        "help": "bits the matmuls round activations to: 16 (exact default: top-1 agreement with float32) or 8 "
                "(opt-in, as llama.cpp: 1.5-1.9x faster prefill and large batches on 4/5/6-bit weights, "
                "coarser; `python -m pagedserve.bench.fidelity` measures it)"})
    speculative: str = field(default="off", metadata={
        "choices": SPECULATIVE_METHODS,
        "help": "speculative decoding: ngram = prompt-lookup drafts (the request's own earlier tokens), "
                "verified exactly (the output equals that without speculation); off = none"})
    num_draft_tokens: int = field(default=4, metadata={
        "help": f"draft tokens verified per request and step at most, in [1, {MAX_DRAFT_TOKENS}] "
                "(with --speculative)"})
    # 32: a 1B model's step is still bound by reading the weights at about this many tokens here.
    speculative_max_batch_tokens: int = field(default=32, metadata={
        "help": "steps with this many running requests or more verify no drafts (a large batch is "
                "compute-bound: drafts would cost more than they save)"})
    prompt_lookup_min: int = field(default=2, metadata={
        "help": "shortest n-gram of the latest tokens the ngram proposer looks up in the request's context"})
    prompt_lookup_max: int = field(default=4, metadata={
        "help": "longest n-gram the ngram proposer tries first"})
    # `--seed` is a request's own sampling seed (generate, client), so this one is --engine-seed.
    seed: int = field(default=0, metadata={
        "flag": "--engine-seed",
        "help": "seed of the sampling streams of requests that bring no seed of their own"})

    def __post_init__(self):
        # What EngineConfig and KVCacheSpec check is left to them; these would fail only after the
        # model has loaded, so they are checked here, where a flag is still at hand.
        if self.kv_cache_memory is not None:
            parse_memory(self.kv_cache_memory)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.activation_bits not in (16, 8):
            raise ValueError(f"activation_bits must be 16 or 8, got {self.activation_bits}")
        if self.max_step_ms < 0:
            raise ValueError(f"max_step_ms must be >= 0, got {self.max_step_ms}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if not 1 <= self.num_draft_tokens <= MAX_DRAFT_TOKENS:
            raise ValueError(f"num_draft_tokens must be in [1, {MAX_DRAFT_TOKENS}], got {self.num_draft_tokens}")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError(f"need 1 <= prompt_lookup_min <= prompt_lookup_max, got "
                             f"{self.prompt_lookup_min} and {self.prompt_lookup_max}")

    # ---- command line ----
    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser, only: Iterable[str] | None = None
                     ) -> argparse._ArgumentGroup:
        """Add a flag per field (or per field named in `only`) to `parser`."""
        return add_dataclass_flags(parser, cls, only=only, title="engine options")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "EngineArgs":
        return dataclass_from_cli_args(cls, ns)

    # ---- what is made from them ----
    def create_kv_cache_spec(self, layer_windows: Sequence[int], *, num_kv_heads: int, head_dim: int
                             ) -> KVCacheSpec:
        """The KV cache's shape (`layer_windows[i]`: layer i's window, 0 = full), sized by
        `num_kv_blocks` when given, else by what fits in `kv_cache_memory`."""
        def spec_of(num_blocks: int) -> KVCacheSpec:
            return KVCacheSpec.from_layer_windows(layer_windows, block_size=self.block_size, num_blocks=num_blocks,
                                                  num_kv_heads=num_kv_heads, head_dim=head_dim,
                                                  kv_dtype=self.kv_dtype)

        num_blocks = resolve_num_blocks(
            self.num_kv_blocks, None if self.num_kv_blocks is not None else self.kv_cache_memory,
            block_size=self.block_size, group_num_layers=[len(g.layer_ids) for g in spec_of(2).groups],
            num_kv_heads=num_kv_heads, head_dim=head_dim, kv_dtype=self.kv_dtype,
        )
        return spec_of(num_blocks)

    def create_engine_config(self, kv_cache_spec: KVCacheSpec, *, context_length: int,
                             stop_ids: Iterable[int]) -> EngineConfig:
        """The scheduler's config over `kv_cache_spec` for a model of `context_length` tokens."""
        return EngineConfig(
            kv_cache_spec=kv_cache_spec,
            max_model_len=min(self.max_model_len or context_length, context_length),
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_num_seqs=self.max_num_seqs,
            max_waiting=self.max_waiting,
            long_prefill_token_threshold=self.long_prefill_token_threshold,
            enable_prefix_caching=self.enable_prefix_caching,
            scheduling_policy=self.scheduling_policy,
            stop_ids=frozenset(stop_ids),
            num_speculative_tokens=self.num_draft_tokens if self.speculative != "off" else 0,
            speculative_max_batch_tokens=self.speculative_max_batch_tokens,
            max_step_ms=self.max_step_ms,
            step_fixed_ms=0.0,  # measured at warm-up (engine_factory.calibrated_config), not flags
            step_per_token_ms=0.0,
        )
