"""`pagedserve bench --workload grounded|free-chat`: the shipped prompt sets through the engine.

The first `num_prompts` prompts of the set, in its order seeded by `seed` (loadtest/prompt_sets.py),
rendered with the model's chat template and generated greedily up to `new_tokens` each (stopping
at end of turn, as a served chat would):
- single stream: each prompt alone, one after another;
- with `concurrency` N > 0: N of them at once (cycling through the chosen prompts).
Figures, as bench/workloads.py defines them: generated tok/s (all generated tokens over all the
time, prefill included) and decode tok/s (tokens after each request's first over the time after
it), summed over the single-stream runs; and the copy fraction: the share of output token 4-grams
that also occur in the prompt (pooled over the prompts, and per prompt), which says how much an
n-gram drafter could take from the input.
The prefix cache (if on) is emptied before each run, so the runs do not hit each other's blocks;
prompts of one run share the chat template's opening and may hit that.
"""

from __future__ import annotations

from typing import Sequence

from pagedserve.bench.workloads import WorkloadResult, drive
from pagedserve.loadtest.prompt_sets import load_prompt_set, seeded_order
from pagedserve.sampling_params import SamplingParams

COPY_NGRAM = 4


def ngram_copy_counts(output: Sequence, prompt: Sequence, n: int = COPY_NGRAM) -> tuple[int, int]:
    """(n-grams of `output` that occur somewhere in `prompt`, n-grams of `output`), counting the
    n-gram at every start position of `output` (a repeated one counts each time). Items compare
    with ==: token ids, words or characters."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    num_ngrams = max(0, len(output) - n + 1)
    in_prompt = {tuple(prompt[i:i + n]) for i in range(len(prompt) - n + 1)}
    copied = sum(tuple(output[i:i + n]) in in_prompt for i in range(num_ngrams))
    return copied, num_ngrams


def ngram_copy_fraction(output: Sequence, prompt: Sequence, n: int = COPY_NGRAM) -> float | None:
    """The share of `output`'s n-grams found in `prompt` (see ngram_copy_counts); None when the
    output is shorter than n."""
    copied, num_ngrams = ngram_copy_counts(output, prompt, n)
    return copied / num_ngrams if num_ngrams else None


def prompt_set_ids(tokenizer, name: str, num_prompts: int, seed: int) -> list[tuple[str, list[int]]]:
    """(prompt name, token ids with the chat template when the model has one) of the first `num_prompts` of set `name`
    in its seeded order, cycling when more are asked than the set holds."""
    items, order = load_prompt_set(name), seeded_order(name, seed)
    chosen = [items[order[i % len(order)]] for i in range(num_prompts)]
    return [(item.name, _prompt_ids(tokenizer, item.messages)) for item in chosen]


def _prompt_ids(tokenizer, messages) -> list[int]:
    """With the chat template, or for a model without one (a base model) the messages' text alone,
    one per paragraph, as a plain prompt."""
    if tokenizer.chat_template:
        return tokenizer.encode_chat(list(messages))
    return tokenizer.encode("\n\n".join(m["content"] for m in messages) + "\n\n")


def _single_stream_json(runs: list[WorkloadResult]) -> dict:
    elapsed = sum(r.elapsed_s for r in runs)
    decode_s = sum(r.elapsed_s - r.prefill_phase_s for r in runs)
    generated = sum(r.generated_tokens for r in runs)
    decode_tokens = sum(r.decode_phase_tokens for r in runs)
    ttft = [t for r in runs for t in r.ttft_s]
    return {
        "num_requests": len(runs),
        "prompt_tokens": sum(r.prompt_tokens for r in runs),
        "generated_tokens": generated,
        "elapsed_s": elapsed,
        "generated_tok_s": generated / elapsed if elapsed > 0 else 0.0,
        "decode_tok_s": decode_tokens / decode_s if decode_s > 0 else 0.0,
        "ttft_mean_s": sum(ttft) / len(ttft) if ttft else None,
        "prefix_hit_tokens": sum(r.prefix_hit_tokens for r in runs),
    }


def run_prompt_set(engine, tokenizer, name: str, num_prompts: int, new_tokens: int, concurrency: int = 0,
                   seed: int = 0) -> dict:
    """The figures of one prompt-set run (see the module docstring), JSON-ready."""
    if num_prompts < 1:
        raise ValueError(f"the prompt-set run needs at least 1 prompt, got {num_prompts}")
    prompts = prompt_set_ids(tokenizer, name, num_prompts, seed)
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens)
    engine.scheduler.kv.reset_prefix_cache()
    runs = [drive(engine, [ids], params) for _, ids in prompts]
    per_prompt, copied, num_ngrams = [], 0, 0
    for (prompt_name, ids), run in zip(prompts, runs):
        c, total = ngram_copy_counts(run.output_token_ids[0], ids)
        copied, num_ngrams = copied + c, num_ngrams + total
        per_prompt.append({"name": prompt_name, "prompt_tokens": len(ids), "generated_tokens": run.generated_tokens,
                           "copy_fraction": c / total if total else None})
    result = {
        "name": name,
        "seed": seed,
        "new_tokens": new_tokens,
        "copy_ngram": COPY_NGRAM,
        "copy_fraction": copied / num_ngrams if num_ngrams else None,
        "single_stream": _single_stream_json(runs),
        "prompts": per_prompt,
    }
    if concurrency > 0:
        engine.scheduler.kv.reset_prefix_cache()
        many = drive(engine, [prompts[i % len(prompts)][1] for i in range(concurrency)], params)
        result["concurrent"] = {**many.to_json(), "n": concurrency}
    return result
