"""`pagedserve bench`: prefill and batched-decode throughput, medians of repeated runs."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from scheduler.sampling_params import SamplingParams


def add_bench_parser(sub, add_engine_arguments) -> None:
    p = sub.add_parser("bench", help="measure prefill and decode throughput")
    add_engine_arguments(p)
    p.add_argument("--prefill-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=128, help="new tokens per sequence")
    p.add_argument("--prompt-tokens", type=int, default=16, help="prompt length of decode runs")
    p.add_argument("--batch-sizes", default="1,4,8,16,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)


def _random_prompts(rng: np.random.Generator, n: int, length: int, vocab: int) -> list[list[int]]:
    # Ids from the middle of the vocabulary: ordinary text tokens, no specials.
    return [rng.integers(1000, min(vocab, 30000), size=length).tolist() for _ in range(n)]


def run_until_done(engine) -> None:
    while engine.has_unfinished_requests():
        engine.step()


def measure_prefill(engine, prompt: list[int]) -> float:
    """Prompt tokens per second of one prompt computed from scratch (one token sampled)."""
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    engine.add_request(prompt, params)
    start = time.perf_counter()
    run_until_done(engine)
    return len(prompt) / (time.perf_counter() - start)


def measure_decode(engine, prompts: list[list[int]], new_tokens: int) -> float:
    """Aggregate generated tokens per second once every sequence has finished its prefill."""
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in prompts]
    produced = {i: 0 for i in ids}
    # Prefill phase: step until every request has its first token.
    while min(produced.values()) < 1:
        for out in engine.step():
            produced[out.request_id] += len(out.new_token_ids)
    already = sum(produced.values())
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        for out in engine.step():
            produced[out.request_id] += len(out.new_token_ids)
    elapsed = time.perf_counter() - start
    return (sum(produced.values()) - already) / elapsed


def cmd_bench(ns: argparse.Namespace) -> int:
    from service.engine_factory import build_engine, engine_args_from

    ns.no_prefix_cache = True  # every run must compute its prompt
    engine, model = build_engine(engine_args_from(ns))
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    prefill = [measure_prefill(engine, _random_prompts(rng, 1, ns.prefill_tokens, vocab)[0])
               for _ in range(ns.repeats)]
    decode: dict[str, float] = {}
    for b in [int(x) for x in ns.batch_sizes.split(",") if x]:
        runs = [measure_decode(engine, _random_prompts(rng, b, ns.prompt_tokens, vocab), ns.decode_tokens)
                for _ in range(ns.repeats)]
        decode[str(b)] = statistics.median(runs)
    result = {
        "model": model.path,
        "prefill_tok_s": statistics.median(prefill),
        "decode_tok_s": decode,
        "repeats": ns.repeats,
        "threads": ns.threads,
        "kv_dtype": ns.kv_dtype,
    }
    if ns.json:
        print(json.dumps(result))
        return 0
    print(f"model {model.path} ({model.config.weight_format}), kv {ns.kv_dtype}, "
          f"median of {ns.repeats} runs")
    print(f"{'measurement':<28}{'tokens/s':>12}")
    print(f"{'prefill ' + str(ns.prefill_tokens) + ' tokens':<28}{result['prefill_tok_s']:>12.1f}")
    for b, v in decode.items():
        print(f"{'decode batch ' + b:<28}{v:>12.1f}")
    return 0
