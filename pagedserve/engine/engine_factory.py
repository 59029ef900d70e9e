"""Build a ready engine (model + KV cache + scheduler) from command-line options, warmed up."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import numba

from pagedserve.cache.cache_sizing import resolve_num_blocks
from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.model.incremental_detokenizer import IncrementalDetokenizer
from pagedserve.model.loader import LoadedModel, load_model
from pagedserve.model.model_fetch import resolve_model_path
from pagedserve.worker.model_runner import ModelRunnerImpl
from pagedserve.scheduler.engine import LLMEngine
from pagedserve.scheduler.engine_config import EngineConfig
from pagedserve.sampling_params import SamplingParams

log = logging.getLogger("pagedserve")


@dataclass(frozen=True)
class EngineArgs:
    model: str | None = None
    kv_dtype: str = "f16"  # as llama.cpp: half the memory of f32, KL to f32 ~4e-7 (tests/cache)
    kv_cache_memory: str | None = "512MiB"
    num_kv_blocks: int | None = None
    block_size: int = 16
    sliding_window: int = 0
    enable_prefix_caching: bool = True
    max_num_batched_tokens: int = 256  # vs 512 at 32 streams: ITL p99 237 vs 530 ms, +11% tok/s
    max_num_seqs: int = 64
    max_waiting: int = 1024
    max_model_len: int | None = None
    threads: int | None = None
    scheduling_policy: str = "fcfs"
    seed: int = 0


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="GGUF path or known model name (default: SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("--kv-dtype", choices=["f32", "f16", "int8"], default="f16",
                        help="KV-cache element type: f16 (default; IEEE half stored as uint16), "
                             "f32 (exact), int8 (per-token, per-head scales)")
    parser.add_argument("--kv-cache-memory", default=None, help="KV-cache size, e.g. 512MiB (default)")
    parser.add_argument("--num-kv-blocks", type=int, default=None, help="KV-cache size in blocks")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--sliding-window", type=int, default=0,
                        help="limit attention of every layer to the last W tokens (0 = off)")
    parser.add_argument("--no-prefix-cache", action="store_true", help="turn automatic prefix caching off")
    parser.add_argument("--max-num-batched-tokens", type=int, default=256,
                        help="tokens per step (prefill chunks + decodes); smaller = shorter decode stalls")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-waiting", type=int, default=1024)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: all cores)")
    parser.add_argument("--scheduling-policy", choices=["fcfs", "priority"], default="fcfs",
                        help="waiting-queue order: first come first served, or by request priority")


def engine_args_from(ns: argparse.Namespace) -> EngineArgs:
    memory = ns.kv_cache_memory
    if memory is None and ns.num_kv_blocks is None:
        memory = "512MiB"
    return EngineArgs(
        model=ns.model, kv_dtype=ns.kv_dtype, kv_cache_memory=memory, num_kv_blocks=ns.num_kv_blocks,
        block_size=ns.block_size, sliding_window=ns.sliding_window,
        enable_prefix_caching=not ns.no_prefix_cache, max_num_batched_tokens=ns.max_num_batched_tokens,
        max_num_seqs=ns.max_num_seqs, max_waiting=ns.max_waiting, max_model_len=ns.max_model_len,
        threads=ns.threads, scheduling_policy=ns.scheduling_policy,
    )


def layer_windows_for(model: LoadedModel, sliding_window: int) -> list[int]:
    """Each layer's window: the model's own (Gemma 3), capped by --sliding-window when given."""
    cfg = model.config
    windows = []
    for layer in range(cfg.num_layers):
        own = cfg.window_of_layer(layer)
        if sliding_window > 0:
            own = sliding_window if own == 0 else min(own, sliding_window)
        windows.append(own)
    return windows


def build_engine(args: EngineArgs, model: LoadedModel | None = None, warm_up: bool = True
                 ) -> tuple[LLMEngine, LoadedModel]:
    """Load the model (unless given), size the KV cache, build runner + engine, compile kernels."""
    if args.threads is not None:
        numba.set_num_threads(max(1, min(args.threads, numba.config.NUMBA_NUM_THREADS)))
    if model is None:
        model = load_model(resolve_model_path(args.model))
    cfg = model.config
    windows = layer_windows_for(model, args.sliding_window)
    probe = KVCacheSpec.from_layer_windows(windows, block_size=args.block_size, num_blocks=2,
                                           num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                                           kv_dtype=args.kv_dtype)
    num_blocks = resolve_num_blocks(
        args.num_kv_blocks, None if args.num_kv_blocks is not None else args.kv_cache_memory,
        block_size=args.block_size, group_num_layers=[len(g.layer_ids) for g in probe.groups],
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, kv_dtype=args.kv_dtype,
    )
    spec = KVCacheSpec.from_layer_windows(windows, block_size=args.block_size, num_blocks=num_blocks,
                                          num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                                          kv_dtype=args.kv_dtype)
    max_model_len = min(args.max_model_len or cfg.context_length, cfg.context_length)
    config = EngineConfig(
        kv_cache_spec=spec,
        max_model_len=max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        max_waiting=args.max_waiting,
        enable_prefix_caching=args.enable_prefix_caching,
        stop_ids=model.tokenizer.stop_ids,
        scheduling_policy=args.scheduling_policy,
    )
    runner = ModelRunnerImpl(model, spec, seed=args.seed)
    tokenizer = model.tokenizer
    engine = LLMEngine(runner, config, lambda: IncrementalDetokenizer(tokenizer))
    log.info("KV cache: %d blocks x %d tokens per group, %d groups, %s, %.1f MiB",
             num_blocks, args.block_size, spec.num_groups, args.kv_dtype,
             runner.kv_store.nbytes / 2**20)
    if warm_up:
        warm_up_engine(engine)
    return engine, model


def warm_up_engine(engine: LLMEngine) -> None:
    """Compile (or load from Numba's disk cache) every kernel before the first real request."""
    start = time.perf_counter()
    log.info("compiling kernels (cached on disk after the first run) ...")
    greedy = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True, logprobs=1, prompt_logprobs=1)
    sampled = SamplingParams(temperature=0.8, top_p=0.9, top_k=5, max_tokens=2, ignore_eos=True,
                             repetition_penalty=1.1, seed=1)
    engine.generate([[1, 2, 3], [4, 5]], [greedy, sampled])
    log.info("kernels ready in %.1f s", time.perf_counter() - start)
