"""`pagedserve bench`: prefill and batched-decode throughput, concurrency, shared prefixes, KV capacity.

Default run: prefill tokens/s of one `prefill_tokens` prompt, then aggregate decode tokens/s for
each of `batch_sizes`, in `repeats` rounds (medians reported), on an engine built with prefix
caching off so every prompt is computed. With `compare_llamacpp`, llama.cpp runs once after each
round of ours and each ratio is the median of the per-round ratios. Optional workloads, on an
engine built from the caller's `EngineArgs` as given (prefix caching, KV dtype, window, size ...):
- `concurrency` N: N sequences through the engine at once vs one alone;
- `workload` grounded|free-chat: greedy generation for prompts of a shipped set, one at a time (and
  N at once, in place of the random prompts of `concurrency`): tokens/s and the share of output
  4-grams copied from the prompt (bench/prompt_set_run.py);
- `shared_prefix` N: `shared_requests` requests starting with the same N-token system prompt.
Always: how many sequences of `capacity_tokens` tokens the KV-cache memory holds per KV dtype.
Definitions of the figures: bench/workloads.py. Flags: bench/cli.py; text report: bench/report.py.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field

import numpy as np

from pagedserve.bench.prompt_set_run import run_prompt_set
from pagedserve.bench.workloads import (
    capacity_table,
    concurrency_workload,
    measure_decode,
    measure_prefill,
    random_prompts,
    shared_prefix_workload,
)
from pagedserve.cache.cache_sizing import parse_memory
from pagedserve.engine.engine_args import EngineArgs
from pagedserve.loadtest.prompt_sets import PROMPT_SETS


def parse_int_list(text: str) -> tuple[int, ...]:
    """"1,4,8" -> (1, 4, 8); "" -> ()."""
    return tuple(int(x) for x in text.split(",") if x.strip())


@dataclass(frozen=True)
class BenchOptions:
    """Bench options: what to measure and how often (the engine's options are EngineArgs')."""

    prefill_tokens: int = field(default=512, metadata={"help": "prefill prompt length (0: skip)"})
    decode_tokens: int = field(default=128, metadata={"help": "new tokens per sequence"})
    prompt_tokens: int = field(default=16, metadata={
        "help": "prompt length of decode/concurrency runs (the unique suffix with --shared-prefix)"})
    batch_sizes: tuple[int, ...] = field(default=(1, 4, 8, 16, 32), metadata={
        "type": parse_int_list, "metavar": "B1,B2,...", "help": "decode batch sizes ('': skip)"})
    repeats: int = field(default=3, metadata={"help": "rounds; figures are medians over them"})
    concurrency: int = field(default=0, metadata={
        "metavar": "N", "help": "also run N concurrent sequences through the engine (and one alone, for the ratio)"})
    shared_prefix: int = field(default=0, metadata={
        "metavar": "N", "help": "also run requests that share one N-token system prompt (they arrive together, "
                                "so only blocks computed in earlier steps are hit: N > --max-num-batched-tokens)"})
    shared_requests: int = field(default=16, metadata={"help": "requests of the --shared-prefix workload"})
    workload: str | None = field(default=None, metadata={
        "choices": tuple(PROMPT_SETS),
        "help": "also generate greedily (up to --decode-tokens each) for prompts of this shipped set: grounded "
                "(rewrite, extract, quote or edit a given text or code) or free-chat (open questions), see "
                "loadtest/data/README.md; one at a time, and N at once with --concurrency N (instead of random "
                "prompts). Reports tokens/s and the share of output 4-grams copied from the prompt"})
    workload_prompts: int = field(default=8, metadata={"help": "prompts of the --workload run"})
    workload_seed: int = field(default=0, metadata={"help": "seed of the order the --workload prompts are taken in"})
    capacity_tokens: int = field(default=1024, metadata={
        "help": "sequence length for the 'max concurrent sequences' KV capacity figures"})
    bandwidth_probe_mib: int = field(default=1024, metadata={
        "metavar": "MIB", "help": "buffer read by the memory-bandwidth probe for the rooflines, far above the "
                                  "last-level cache (0: skip the rooflines)"})
    compare_llamacpp: str | None = field(default=None, metadata={
        "metavar": "LLAMA_BENCH",
        "help": "path of llama.cpp's llama-bench (llama-batched-bench beside it): run it on the same model "
                "and thread count after each round of ours and print both side by side"})
    llamacpp_run_time_repack: bool = field(default=False, metadata={
        "help": "for ik_llama.cpp as --compare-llamacpp: pass its run-time repacking (-rtr) to both of its "
                "benchmarks, its fastest CPU setting"})

    def __post_init__(self):
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.bandwidth_probe_mib < 0:
            raise ValueError(f"bandwidth_probe_mib must be >= 0, got {self.bandwidth_probe_mib}")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.workload_prompts < 1:
            raise ValueError(f"workload_prompts must be >= 1, got {self.workload_prompts}")


def run_bench(args: EngineArgs, options: BenchOptions, model=None) -> tuple[dict, object]:
    """Every figure of one bench run as a JSON-ready dict, and the model it ran (loaded unless given)."""
    import numba

    from pagedserve.engine.engine_factory import build_engine

    # The sweep computes every prompt: its engine is built with prefix caching off. It measures
    # throughput, so its steps take the fixed token budget (no --max-step-ms calibration), as before.
    engine, model = build_engine(dataclasses.replace(args, enable_prefix_caching=False, max_step_ms=0.0),
                                 model=model)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    threads = args.threads or numba.get_num_threads()  # what build_engine set
    # Rounds: each measures prefill once and every batch size once (then llama.cpp once, when
    # comparing), so that each ratio pairs two runs taken minutes apart at most on a noisy machine.
    rounds, theirs = [], []
    sweep_peak = sweep_preemptions = 0
    for _ in range(options.repeats):
        ours = {"prefill": None, "decode": {}}
        if options.prefill_tokens > 0:
            ours["prefill"] = measure_prefill(engine, random_prompts(rng, 1, options.prefill_tokens, vocab)[0])
        for b in options.batch_sizes:
            run = measure_decode(engine, random_prompts(rng, b, options.prompt_tokens, vocab), options.decode_tokens)
            ours["decode"][str(b)] = run.decode_tok_s
            sweep_peak = max(sweep_peak, run.peak_blocks_used)
            sweep_preemptions += run.preemptions
        rounds.append(ours)
        if options.compare_llamacpp:
            theirs.append(llamacpp_round(options, model.path, threads))
    spec = engine.config.kv_cache_spec
    # Capacity per dtype in the bytes this run was given (sized in blocks: the bytes they took).
    memory = spec.total_bytes if args.num_kv_blocks is not None else parse_memory(args.kv_cache_memory)
    result = {
        "model": model.path,
        "prefill_tok_s": statistics.median(r["prefill"] for r in rounds) if options.prefill_tokens > 0 else None,
        "decode_tok_s": {str(b): statistics.median(r["decode"][str(b)] for r in rounds)
                         for b in options.batch_sizes},
        "repeats": options.repeats,
        "threads": args.threads,
        "kv_dtype": args.kv_dtype,
        "activation_bits": args.activation_bits,
        "block_size": spec.block_size,
        "sliding_window": args.sliding_window,
        "prefix_caching": args.enable_prefix_caching,
        "kv_cache": {
            "memory_bytes": memory,
            "num_blocks_total": engine.stats().num_blocks_total_all_groups,
            "sweep_peak_blocks_used": sweep_peak,
            "sweep_preemptions": sweep_preemptions,
        },
        "capacity": {
            "seq_tokens": options.capacity_tokens,
            "by_kv_dtype": capacity_table(spec, memory, options.capacity_tokens),
        },
    }
    if options.bandwidth_probe_mib > 0:
        result["roofline"] = roofline_of(result, model, spec.bytes_per_token, threads, options)
    engine_stats = [engine.stats()]
    if options.concurrency > 0 or options.shared_prefix > 0 or options.workload:
        rebuilt = args.enable_prefix_caching
        if rebuilt:  # the workloads run on the engine as configured
            engine = None  # free the sweep's KV cache before allocating the next
            engine, _ = build_engine(args, model=model, warm_up=False)
        result.update(run_workloads(engine, options, rng, vocab, model.tokenizer))
        # The same engine's totals include the sweep's.
        engine_stats = [engine_stats[0], engine.stats()] if rebuilt else [engine.stats()]
    result["speculative"] = speculative_summary(args, engine_stats)
    if options.compare_llamacpp:
        result["llamacpp"] = llamacpp_summary(rounds, theirs, threads)
    return result, model


def speculative_summary(args, engine_stats) -> dict:
    """Speculative decoding's totals over the engines of the run (their EngineStats)."""
    counts: list[int] = []
    for stats in engine_stats:
        for length, count in enumerate(stats.acceptance_length_counts):
            counts.extend([0] * (length + 1 - len(counts)))
            counts[length] += count
    num_drafts = sum(s.num_draft_tokens for s in engine_stats)
    num_accepted = sum(s.num_accepted_draft_tokens for s in engine_stats)
    return {
        "method": args.speculative,
        "num_draft_tokens": args.num_draft_tokens if args.speculative != "off" else 0,
        "draft_tokens": num_drafts,
        "accepted_tokens": num_accepted,
        "acceptance_rate": num_accepted / num_drafts if num_drafts else None,
        "acceptance_length_counts": counts,  # [a]: verify steps that accepted exactly a drafts
    }


def roofline_of(result: dict, model, kv_bytes_per_token: int, threads: int, options: BenchOptions) -> dict:
    """Bytes per weight (loaded and in the file), the measured read bandwidth and the fractions of
    the memory roofline and of the VNNI peak the figures of `result` reach (bench/roofline.py)."""
    from pathlib import Path

    from pagedserve.bench.bandwidth_probe import measure_read_bandwidth
    from pagedserve.bench.roofline import roofline_report, weight_stats
    from pagedserve.model.gguf_file import read_gguf

    stats = weight_stats(model.weights, read_gguf(model.path).tensors)
    bandwidth = measure_read_bandwidth(options.bandwidth_probe_mib * 2**20)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    report = roofline_report(result, stats, kv_bytes_per_token, bandwidth, threads, cpuinfo,
                             options.prompt_tokens, options.decode_tokens)
    return {"weights": stats.to_json(), **report}


def run_workloads(engine, options: BenchOptions, rng: np.random.Generator, vocab: int, tokenizer) -> dict:
    """The optional concurrency (random or --workload prompts) and shared-prefix workloads, as JSON-ready dicts."""
    result = {}
    if options.workload:
        result["workload"] = run_prompt_set(engine, tokenizer, options.workload, options.workload_prompts,
                                            options.decode_tokens, options.concurrency, options.workload_seed)
    elif options.concurrency > 0:
        many = concurrency_workload(engine, rng, options.concurrency, options.prompt_tokens,
                                    options.decode_tokens, vocab)
        one = concurrency_workload(engine, rng, 1, options.prompt_tokens, options.decode_tokens, vocab)
        result["concurrency"] = {
            **many.to_json(),
            "n": options.concurrency,
            "single_decode_tok_s": one.decode_tok_s,
            "single_generated_tok_s": one.generated_tok_s,
            "decode_speedup_vs_single": many.decode_tok_s / one.decode_tok_s if one.decode_tok_s else None,
        }
    if options.shared_prefix > 0:
        shared = shared_prefix_workload(engine, rng, options.shared_requests, options.shared_prefix,
                                        options.prompt_tokens, options.decode_tokens, vocab)
        result["shared_prefix"] = {**shared.to_json(), "prefix_tokens": options.shared_prefix}
    return result


def llamacpp_round(options: BenchOptions, model_path: str, threads: int):
    """One llama.cpp run of the same measurements (prefill, then each batch size)."""
    from pagedserve.bench.llamacpp_compare import run_llamacpp

    return run_llamacpp(options.compare_llamacpp, model_path, threads,
                        prefill_tokens=options.prefill_tokens or 512, decode_tokens=options.decode_tokens,
                        prompt_tokens=128, batch_sizes=list(options.batch_sizes), repeats=1,
                        run_time_repack=options.llamacpp_run_time_repack)


def llamacpp_summary(rounds: list[dict], theirs: list, threads: int) -> dict:
    """llama.cpp's medians and, per measurement, the median over rounds of ours / theirs."""
    def paired(ours_of, theirs_of):
        pairs = [(ours_of(o), theirs_of(t)) for o, t in zip(rounds, theirs)]
        pairs = [(a, b) for a, b in pairs if a is not None and b]
        return statistics.median(a / b for a, b in pairs) if pairs else None

    batch_keys = list(rounds[0]["decode"])
    return {
        "prefill_tok_s": statistics.median(t.prefill_tok_s for t in theirs),
        "decode_tok_s": {b: statistics.median(t.decode_tok_s[b] for t in theirs)
                         for b in batch_keys if all(b in t.decode_tok_s for t in theirs)},
        "ratio_prefill": paired(lambda o: o["prefill"], lambda t: t.prefill_tok_s),
        "ratio_decode": {b: paired(lambda o, b=b: o["decode"][b], lambda t, b=b: t.decode_tok_s.get(b))
                         for b in batch_keys},
        "build_commit": theirs[0].build_commit,
        "threads": threads,
    }
