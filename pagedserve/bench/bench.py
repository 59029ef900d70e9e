"""`pagedserve bench`: prefill and batched-decode throughput, concurrency, shared prefixes, KV capacity.

Default run: prefill tokens/s of one `--prefill-tokens` prompt, then aggregate decode tokens/s for
each of `--batch-sizes`, in `--repeats` rounds (medians reported; prefix caching off so every prompt
is computed). With `--compare-llamacpp`, llama.cpp runs once after each round of ours and each ratio
is the median of the per-round ratios. Optional workloads, which honour the engine flags
(`--no-prefix-cache`, `--kv-dtype`, `--sliding-window`, `--kv-cache-memory` ...):
- `--concurrency N`: N sequences through the engine at once vs one alone;
- `--shared-prefix N`: `--shared-requests` requests starting with the same N-token system prompt.
Always: how many sequences of `--capacity-tokens` tokens the KV-cache memory holds per KV dtype.
Definitions of the figures: service/bench_workloads.py.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from pagedserve.bench.workloads import (
    capacity_table,
    concurrency_workload,
    measure_decode,
    measure_prefill,
    random_prompts,
    shared_prefix_workload,
)


def add_bench_parser(sub, add_engine_arguments) -> None:
    p = sub.add_parser("bench", help="measure prefill/decode throughput, concurrency, prefix caching, KV capacity")
    add_engine_arguments(p)
    p.add_argument("--prefill-tokens", type=int, default=512, help="prefill prompt length (0: skip)")
    p.add_argument("--decode-tokens", type=int, default=128, help="new tokens per sequence")
    p.add_argument("--prompt-tokens", type=int, default=16,
                   help="prompt length of decode/concurrency runs (the unique suffix with --shared-prefix)")
    p.add_argument("--batch-sizes", default="1,4,8,16,32", help="decode batch sizes ('' : skip)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=0, metavar="N",
                   help="also run N concurrent sequences through the engine (and one alone, for the ratio)")
    p.add_argument("--shared-prefix", type=int, default=0, metavar="N",
                   help="also run requests that share one N-token system prompt (they arrive together, so "
                        "only blocks computed in earlier steps are hit: N > --max-num-batched-tokens)")
    p.add_argument("--shared-requests", type=int, default=16, help="requests of the --shared-prefix workload")
    p.add_argument("--capacity-tokens", type=int, default=1024,
                   help="sequence length for the 'max concurrent sequences' KV capacity figures")
    p.add_argument("--compare-llamacpp", metavar="LLAMA_BENCH", default=None,
                   help="path of llama.cpp's llama-bench (llama-batched-bench beside it): run it on the "
                        "same model and thread count after each round of ours and print both side by side")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)


def _kv_memory_bytes(ns: argparse.Namespace, engine, args) -> int:
    from pagedserve.cache.cache_sizing import parse_memory

    if ns.num_kv_blocks is not None:  # sized in blocks: compare the dtypes in the bytes it took
        return engine.config.kv_cache_spec.total_bytes
    return parse_memory(args.kv_cache_memory)


def cmd_bench(ns: argparse.Namespace) -> int:
    import numba

    from pagedserve.engine.engine_factory import build_engine, engine_args_from

    args = engine_args_from(ns)
    engine, model = build_engine(args)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    batch_sizes = [int(x) for x in ns.batch_sizes.split(",") if x.strip()]
    threads = ns.threads or numba.get_num_threads()  # what build_engine set
    # Rounds: each measures prefill once and every batch size once (then llama.cpp once, when
    # comparing), so that each ratio pairs two runs taken minutes apart at most on a noisy machine.
    rounds, theirs = [], []
    sweep_peak = sweep_preemptions = 0
    for _ in range(ns.repeats):
        ours = {"prefill": None, "decode": {}}
        if ns.prefill_tokens > 0:
            ours["prefill"] = measure_prefill(engine, random_prompts(rng, 1, ns.prefill_tokens, vocab)[0])
        for b in batch_sizes:
            run = measure_decode(engine, random_prompts(rng, b, ns.prompt_tokens, vocab), ns.decode_tokens)
            ours["decode"][str(b)] = run.decode_tok_s
            sweep_peak = max(sweep_peak, run.peak_blocks_used)
            sweep_preemptions += run.preemptions
        rounds.append(ours)
        if ns.compare_llamacpp:
            theirs.append(_llamacpp_round(ns, model, batch_sizes, threads))
    prefill = statistics.median(r["prefill"] for r in rounds) if ns.prefill_tokens > 0 else None
    decode = {str(b): statistics.median(r["decode"][str(b)] for r in rounds) for b in batch_sizes}
    spec = engine.config.kv_cache_spec
    memory = _kv_memory_bytes(ns, engine, args)
    result = {
        "model": model.path,
        "prefill_tok_s": prefill,
        "decode_tok_s": decode,
        "repeats": ns.repeats,
        "threads": ns.threads,
        "kv_dtype": ns.kv_dtype,
        "block_size": spec.block_size,
        "sliding_window": ns.sliding_window,
        "prefix_caching": not ns.no_prefix_cache,
        "kv_cache": {
            "memory_bytes": memory,
            "num_blocks_total": engine.stats().num_blocks_total_all_groups,
            "sweep_peak_blocks_used": sweep_peak,
            "sweep_preemptions": sweep_preemptions,
        },
        "capacity": {
            "seq_tokens": ns.capacity_tokens,
            "by_kv_dtype": capacity_table(spec, memory, ns.capacity_tokens),
        },
    }
    if ns.concurrency > 0:
        many = concurrency_workload(engine, rng, ns.concurrency, ns.prompt_tokens, ns.decode_tokens, vocab)
        one = concurrency_workload(engine, rng, 1, ns.prompt_tokens, ns.decode_tokens, vocab)
        result["concurrency"] = {
            **many.to_json(),
            "n": ns.concurrency,
            "single_decode_tok_s": one.decode_tok_s,
            "single_generated_tok_s": one.generated_tok_s,
            "decode_speedup_vs_single": many.decode_tok_s / one.decode_tok_s if one.decode_tok_s else None,
        }
    if ns.shared_prefix > 0:
        shared = shared_prefix_workload(engine, rng, ns.shared_requests, ns.shared_prefix, ns.prompt_tokens,
                                        ns.decode_tokens, vocab)
        result["shared_prefix"] = {**shared.to_json(), "prefix_tokens": ns.shared_prefix}
    if ns.compare_llamacpp:
        result["llamacpp"] = _llamacpp_summary(rounds, theirs, threads)
    if ns.json:
        print(json.dumps(result))
    else:
        _print_report(ns, model, result)
        if "llamacpp" in result:
            print(_comparison_table(result))
    return 0


def _llamacpp_round(ns: argparse.Namespace, model, batch_sizes: list[int], threads: int):
    from pagedserve.bench.llamacpp_compare import run_llamacpp

    return run_llamacpp(ns.compare_llamacpp, model.path, threads, prefill_tokens=ns.prefill_tokens or 512,
                        decode_tokens=ns.decode_tokens, prompt_tokens=128, batch_sizes=batch_sizes, repeats=1)


def _llamacpp_summary(rounds: list[dict], theirs: list, threads: int) -> dict:
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


def _comparison_table(result: dict) -> str:
    ours, theirs = result, result["llamacpp"]
    rows = [f"side by side with llama.cpp {theirs['build_commit']} ({theirs['threads']} threads), "
            f"medians of {result['repeats']} rounds; ratio = median of the per-round ratios",
            f"{'measurement':<28}{'pagedserve':>12}{'llama.cpp':>12}{'ratio':>8}"]
    pairs = [("prefill", ours["prefill_tok_s"], theirs["prefill_tok_s"], theirs["ratio_prefill"])]
    pairs += [(f"decode batch {b}", v, theirs["decode_tok_s"].get(b), theirs["ratio_decode"].get(b))
              for b, v in ours["decode_tok_s"].items()]
    for label, a, b, ratio in pairs:
        if a is None or not b or ratio is None:
            continue
        rows.append(f"{label:<28}{a:>12.1f}{b:>12.1f}{ratio:>7.2f}x")
    return "\n".join(rows)


def _row(label: str, value: str) -> str:
    return f"{label:<40}{value:>16}"


def _workload_lines(r: dict) -> list[str]:
    return [
        _row("  generated tokens/s (aggregate)", f"{r['generated_tok_s']:.1f}"),
        _row("  decode tokens/s (all running)", f"{r['decode_tok_s']:.1f}"),
        _row("  prefill tokens/s", f"{r['prefill_tok_s']:.1f}"),
        _row("  prompt tokens computed / total", f"{r['prefill_tokens_computed']} / {r['prompt_tokens']}"),
        _row("  prefix-cache hit rate", f"{100 * r['prefix_cache_hit_rate']:.1f}%"),
        _row("  time to first token first/mean/max s",
             "/".join("-" if r[k] is None else f"{r[k]:.2f}" for k in ("ttft_first_s", "ttft_mean_s", "ttft_max_s"))),
        _row("  peak KV blocks used / total", f"{r['peak_blocks_used']} / {r['num_blocks_total']}"),
        _row("  preemptions", str(r["preemptions"])),
    ]


def _print_report(ns: argparse.Namespace, model, result: dict) -> None:
    lines = [
        f"model {model.path} ({model.config.weight_format}), kv {ns.kv_dtype}, "
        f"median of {ns.repeats} runs",
        f"{'measurement':<28}{'tokens/s':>12}",
    ]
    if result["prefill_tok_s"] is not None:
        lines.append(f"{'prefill ' + str(ns.prefill_tokens) + ' tokens':<28}{result['prefill_tok_s']:>12.1f}")
    for b, v in result["decode_tok_s"].items():
        lines.append(f"{'decode batch ' + b:<28}{v:>12.1f}")
    kv = result["kv_cache"]
    line = (f"KV cache: {kv['num_blocks_total']} blocks of {result['block_size']} tokens "
            f"({kv['memory_bytes'] / 2**20:.1f} MiB), prefix caching {'on' if result['prefix_caching'] else 'off'}")
    if result["decode_tok_s"]:
        line += (f" (off for the runs above: peak {kv['sweep_peak_blocks_used']} blocks, "
                 f"{kv['sweep_preemptions']} preemptions)")
    lines.append(line)
    if "concurrency" in result:
        c = result["concurrency"]
        lines.append(f"concurrency {c['n']} ({ns.prompt_tokens}-token prompts, {ns.decode_tokens} new tokens each)")
        lines += _workload_lines(c)
        if c["decode_speedup_vs_single"] is not None:
            lines.append(_row("  decode tokens/s of 1 sequence alone", f"{c['single_decode_tok_s']:.1f}"))
            lines.append(_row(f"  decode speed-up {c['n']} vs 1", f"x{c['decode_speedup_vs_single']:.2f}"))
    if "shared_prefix" in result:
        s = result["shared_prefix"]
        lines.append(f"shared prefix {s['prefix_tokens']} tokens x {s['num_requests']} requests "
                     f"(+{ns.prompt_tokens} own tokens, {ns.decode_tokens} new tokens each), prefix caching "
                     f"{'on' if result['prefix_caching'] else 'off'}")
        lines += _workload_lines(s)
    cap = result["capacity"]
    lines.append(f"max concurrent sequences of {cap['seq_tokens']} tokens in {kv['memory_bytes'] / 2**20:.1f} MiB "
                 f"(usable blocks / blocks per sequence):")
    table = cap["by_kv_dtype"]
    for dtype, row in table.items():
        note = " <- this run" if dtype == ns.kv_dtype else ""
        ratio = row["max_concurrent_sequences"] / max(1, table["f32"]["max_concurrent_sequences"])
        lines.append(f"  {dtype:<5}{row['bytes_per_token']:>8} B/token{row['num_blocks']:>8} blocks"
                     f"{row['max_concurrent_sequences']:>7} sequences  x{ratio:.2f} vs f32{note}")
    fits = {dtype: row["max_concurrent_sequences"] for dtype, row in table.items()}
    if fits.get("f16"):
        lines.append(f"  int8 fits x{fits['int8'] / fits['f16']:.2f} the sequences of f16"
                     f" and x{fits['int8'] / max(1, fits['f32']):.2f} of f32")
    print("\n".join(lines))
