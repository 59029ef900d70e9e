"""The engine over the real default model (SmolLM2-135M) at temperature 0.

Model-free scheduler/cache tests live next door (test_engine.py, tests/cache); these check that the
real forward pass gives the same tokens whatever the engine does around it: preemption with
recompute, prefix-cache hits, chunked prefill; and that sliding-window freeing, abort and stop
strings behave with real blocks and the real tokenizer.
"""

import numpy as np
import pytest

from pagedserve.model.incremental_detokenizer import IncrementalDetokenizer
from pagedserve.sampling_params import SamplingParams


def greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def random_prompt(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(100, 20000, size=n).tolist()


def ids_of(outputs) -> list[list[int]]:
    return [o.new_token_ids for o in outputs]


def test_32_concurrent_requests_with_preemption_give_the_ids_each_gives_alone(make_engine):
    rng = np.random.default_rng(7)
    prompts = [random_prompt(rng, int(n)) for n in rng.integers(3, 40, size=32)]
    params = [greedy(int(n)) for n in rng.integers(16, 25, size=32)]
    roomy = make_engine()  # 255 usable blocks: everything fits
    expected = roomy.generate(prompts, params)
    assert roomy.stats().num_preemptions == 0
    # 48 blocks of 16 tokens; the batch needs ~100 at once, so running requests are preempted
    # (recompute) and come back; a token budget of 64 also chunks the longer prompts.
    tight = make_engine(num_kv_blocks=48, max_num_batched_tokens=64)
    got = tight.generate(prompts, params)
    stats = tight.stats()
    assert stats.num_preemptions > 0
    assert ids_of(got) == ids_of(expected)
    assert [o.num_output_tokens for o in got] == [p.max_tokens for p in params]
    assert stats.num_blocks_used == (0,) and stats.num_running == 0 and stats.num_waiting == 0
    for i in (0, 13, 31):  # and the batch equals each request run alone
        assert roomy.generate([prompts[i]], params[i])[0].new_token_ids == expected[i].new_token_ids, i


def test_prefix_caching_on_equals_off(make_engine):
    rng = np.random.default_rng(3)
    shared = random_prompt(rng, 96)  # 6 full blocks
    prompts = [shared + random_prompt(rng, n) for n in (5, 17, 1, 30)]
    params = greedy(6)
    results = {}
    for caching in (True, False):
        engine = make_engine(enable_prefix_caching=caching)
        # The first request computes (and caches) the shared blocks; the rest can hit them.
        outs = engine.generate(prompts[:1], params) + engine.generate(prompts[1:], params)
        results[caching] = (ids_of(outs), engine.stats(), [o.num_cached_tokens for o in outs])
    (on_ids, on_stats, on_cached), (off_ids, off_stats, off_cached) = results[True], results[False]
    assert on_ids == off_ids
    assert on_stats.num_prefix_hit_tokens >= 3 * 96 and on_cached[1:] == [96, 96, 96]
    assert off_stats.num_prefix_hit_tokens == 0 and off_cached == [0, 0, 0, 0]


def test_chunked_prefill_equals_whole_prefill(make_engine):
    rng = np.random.default_rng(5)
    prompts = [random_prompt(rng, n) for n in (100, 45, 7)]
    params = greedy(8)
    whole = make_engine(enable_prefix_caching=False).generate(prompts, params)
    chunked_engine = make_engine(enable_prefix_caching=False, max_num_batched_tokens=32)
    chunked = chunked_engine.generate(prompts, params)
    assert ids_of(chunked) == ids_of(whole)
    # 152 prompt tokens under a 32-token budget take at least five steps before the first decode
    assert chunked_engine.stats().num_steps >= 5 + 7


def test_sliding_window_keeps_3000_token_sequence_in_17_blocks(make_engine):
    """2,688 prompt + 312 generated tokens = 3,000 (11.7 windows of 256), cache of 31 blocks.

    Prefill in aligned 16-token chunks keeps the table within the decode bound too:
    ceil(256 / 16) + 1 = 17 blocks live per sequence, the rest replaced by the null block.
    """
    window, bs = 256, 16
    bound = -(-window // bs) + 1
    engine = make_engine(sliding_window=window, block_size=bs, num_kv_blocks=32, max_num_batched_tokens=bs,
                         enable_prefix_caching=False)
    assert engine.config.kv_cache_spec.groups[0].sliding_window == window
    prompt = random_prompt(np.random.default_rng(11), 2688)
    rid = engine.add_request(prompt, greedy(312))
    kv = engine.scheduler.kv
    max_live = max_table = 0
    finished = []
    while engine.has_unfinished_requests():
        finished += [o for o in engine.step() if o.finished]
        table = kv.block_tables(rid)[0]
        max_live = max(max_live, sum(1 for b in table if b != 0))
        max_table = max(max_table, len(table))
        assert engine.stats().num_blocks_used[0] <= bound
    assert max_live == bound
    assert max_table == -(-2999 // bs)  # positions 0..2998 computed: the table spans them all
    assert finished[0].num_output_tokens == 312 and finished[0].finish_reason == "length"
    stats = engine.stats()
    assert stats.num_window_freed_blocks >= 3000 // bs - bound
    assert stats.num_blocks_used == (0,) and stats.num_preemptions == 0


def test_abort_mid_generation_frees_all_blocks_before_the_next_step(make_engine):
    engine = make_engine()
    rng = np.random.default_rng(2)
    rids = [engine.add_request(random_prompt(rng, n), greedy(50)) for n in (40, 20, 3)]
    for _ in range(4):
        engine.step()
    assert engine.stats().num_running == 3
    held = {rid: sum(1 for b in engine.scheduler.kv.block_tables(rid)[0] if b != 0) for rid in rids}
    assert held[rids[0]] == 3  # 40 prompt + 3 computed outputs = 43 positions
    used = engine.stats().num_blocks_used[0]
    assert engine.abort_request(rids[0])
    assert engine.stats().num_blocks_used[0] == used - held[rids[0]]
    assert engine.abort_request(rids[1]) and engine.abort_request(rids[2])
    assert engine.stats().num_blocks_used == (0,)
    outs = engine.step()
    assert sorted(o.request_id for o in outs) == sorted(rids)
    assert all(o.finished and o.finish_reason == "abort" and not o.new_token_ids for o in outs)
    assert not engine.has_unfinished_requests()


def test_stop_string_across_token_boundaries(make_engine, smollm2_tokenizer):
    tok = smollm2_tokenizer
    prompt = tok.encode("Once upon a time, in a small village by the sea, there lived")
    engine = make_engine()
    full = engine.generate([prompt], greedy(24))[0]
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push([t]) for t in full.new_token_ids]
    assert "".join(pieces) == full.new_text
    # A stop string made of the tail of one token's text and the head of the next one's.
    for i in range(len(pieces) - 1):
        a, b = pieces[i], pieces[i + 1]
        if len(a) >= 2 and len(b) >= 2:
            stop = a[-2:] + b[:2]
            start = sum(len(p) for p in pieces[:i]) + len(a) - 2
            if full.new_text.find(stop) == start:
                break
    else:
        pytest.fail(f"no two-token stop string in {pieces!r}")
    engine.add_request(prompt, greedy(24, stop=(stop,)))
    deltas, last = [], None
    while engine.has_unfinished_requests():
        for out in engine.step():
            deltas.append(out.new_text)
            last = out
    assert last.finished and last.finish_reason == "stop" and last.stop_reason == stop
    assert "".join(deltas) == full.new_text[:start]  # cut before the stop, partial match never sent
    assert last.num_output_tokens == i + 2  # generation stops at the token completing the stop
