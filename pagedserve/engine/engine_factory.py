"""Build a ready engine (model + KV cache + scheduler) from `EngineArgs`, warmed up."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numba
import numpy as np

from pagedserve.engine.engine_args import EngineArgs
from pagedserve.engine.step_budget import calibration_sizes, measure_step_cost
from pagedserve.scheduler.step_time_budget import token_budget
from pagedserve.model.activation_width import with_activation_bits
from pagedserve.model.incremental_detokenizer import IncrementalDetokenizer
from pagedserve.model.loader import LoadedModel, load_model
from pagedserve.model.model_fetch import resolve_model_path
from pagedserve.spec.ngram_proposer import NgramProposer
from pagedserve.worker.model_runner import ModelRunnerImpl
from pagedserve.scheduler.engine import EngineConfig, LLMEngine
from pagedserve.scheduler.step_io import SchedulerOutput
from pagedserve.sampling_params import SamplingParams

log = logging.getLogger("pagedserve")


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
    model = dataclasses.replace(model, weights=with_activation_bits(model.weights, args.activation_bits))
    cfg = model.config
    spec = args.create_kv_cache_spec(layer_windows_for(model, args.sliding_window),
                                     num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
    config = args.create_engine_config(spec, context_length=cfg.context_length,
                                       stop_ids=model.tokenizer.stop_ids)
    proposer = NgramProposer(args.prompt_lookup_min, args.prompt_lookup_max) if args.speculative == "ngram" else None
    runner = ModelRunnerImpl(model, spec, seed=args.seed, proposer=proposer)
    tokenizer = model.tokenizer
    engine = LLMEngine(runner, config, lambda: IncrementalDetokenizer(tokenizer))
    log.info("KV cache: %d blocks x %d tokens per group, %d groups, %s, %.1f MiB",
             spec.num_blocks, spec.block_size, spec.num_groups, args.kv_dtype,
             runner.kv_store.nbytes / 2**20)
    if warm_up:
        warm_up_engine(engine)
        if args.max_step_ms > 0:
            config = calibrated_config(engine, args.max_step_ms, cfg.vocab_size)
            # The warm-up and calibration requests are done; the runner drops them before it serves
            # an engine whose scheduler never knew them.
            runner.execute(SchedulerOutput(finished_request_ids=tuple(runner.states.request_ids())))
            engine = LLMEngine(runner, config, lambda: IncrementalDetokenizer(tokenizer))
    return engine, model


def calibrated_config(engine: LLMEngine, max_step_ms: float, vocab_size: int,
                      timer: Callable[[], float] = time.perf_counter) -> EngineConfig:
    """`engine.config` with the tokens per step that take about `max_step_ms` on this model, timed
    on the (idle, warm) `engine`: at least a block (or the configured budget, when smaller), at
    most the configured budget; and with `max_step_ms` and the measured cost line, which the
    scheduler corrects while serving and speculation weighs drafts by. `timer`: seconds, as
    perf_counter (tests give a fake one)."""
    config = engine.config
    if config.max_num_batched_tokens <= config.block_size:
        return config  # no budget below the configured one is allowed: nothing to calibrate
    # One step computes the whole prompt, which fits in the cache with its 2 generated tokens.
    max_chunk = min(config.max_num_batched_tokens, config.max_model_len - 2,
                    (config.num_blocks - 1) * config.block_size - 2)
    if config.long_prefill_token_threshold > 0:
        max_chunk = min(max_chunk, config.long_prefill_token_threshold)
    sizes = calibration_sizes(max_chunk)
    if not sizes:
        return config
    cost, points = measure_step_cost(engine, vocab_size, sizes, timer=timer)
    budget = token_budget(cost, max_step_ms, min_tokens=config.block_size,
                          max_tokens=config.max_num_batched_tokens)
    log.info("step cost %.1f ms + %.2f ms/token (best of 3: %s); step budget: %d tokens per step "
             "for max_step_ms=%g (at most %d)", cost.fixed_ms, cost.per_token_ms,
             ", ".join(f"{t} tok {ms:.1f} ms" for t, ms in points), budget, max_step_ms,
             config.max_num_batched_tokens)
    return dataclasses.replace(config, max_num_batched_tokens=budget, max_step_ms=max_step_ms,
                               step_fixed_ms=cost.fixed_ms, step_per_token_ms=cost.per_token_ms)


def warm_up_engine(engine: LLMEngine) -> None:
    """Compile (or load from Numba's disk cache) every kernel before the first real request."""
    start = time.perf_counter()
    log.info("compiling kernels (cached on disk after the first run) ...")
    greedy = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True, logprobs=1, prompt_logprobs=1)
    sampled = SamplingParams(temperature=0.8, top_p=0.9, top_k=5, max_tokens=2, ignore_eos=True,
                             repetition_penalty=1.1, seed=1)
    engine.generate([[1, 2, 3], [4, 5]], [greedy, sampled])
    proposer = getattr(engine.runner, "proposer", None)
    if proposer is not None:  # speculative decoding: compile the draft lookup too
        proposer.propose(["warm-up"], [np.array([1, 2, 3, 1, 2], np.int32)], [2])
    log.info("kernels ready in %.1f s", time.perf_counter() - start)
