"""Build a ready engine (model + KV cache + scheduler) from `EngineArgs`, warmed up."""

from __future__ import annotations

import logging
import time

import numba

from pagedserve.engine.engine_args import EngineArgs
from pagedserve.model.incremental_detokenizer import IncrementalDetokenizer
from pagedserve.model.loader import LoadedModel, load_model
from pagedserve.model.model_fetch import resolve_model_path
from pagedserve.worker.model_runner import ModelRunnerImpl
from pagedserve.scheduler.engine import LLMEngine
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
    cfg = model.config
    spec = args.create_kv_cache_spec(layer_windows_for(model, args.sliding_window),
                                     num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
    config = args.create_engine_config(spec, context_length=cfg.context_length,
                                       stop_ids=model.tokenizer.stop_ids)
    runner = ModelRunnerImpl(model, spec, seed=args.seed)
    tokenizer = model.tokenizer
    engine = LLMEngine(runner, config, lambda: IncrementalDetokenizer(tokenizer))
    log.info("KV cache: %d blocks x %d tokens per group, %d groups, %s, %.1f MiB",
             spec.num_blocks, spec.block_size, spec.num_groups, args.kv_dtype,
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
