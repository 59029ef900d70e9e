import threading

import pytest

from pagedserve.scheduler.engine import EngineConfig, LLMEngine, QueueFullError
from pagedserve.sampling_params import InvalidRequestError, SamplingParams
from pagedserve.sampled_token import SampledToken
from tests.scheduler.factories import (
    FakeDetokenizer,
    FakeRunner,
    create_config,
    create_engine,
    expected_tokens,
    run_to_completion,
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=6)


def prompts(n, length=10):
    return [[(7 * i + j) % 50 + 1 for j in range(length)] for i in range(n)]


def test_generate_returns_accumulated_outputs_in_order():
    engine, _ = create_engine()
    ps = prompts(3)
    outs = engine.generate(ps, GREEDY)
    for p, out in zip(ps, outs):
        assert out.new_token_ids == expected_tokens(p, 6)
        assert out.finished and out.finish_reason == "length"
        assert out.num_prompt_tokens == 10 and out.num_output_tokens == 6
        assert out.new_text == "".join(FakeDetokenizer().push([t]) for t in out.new_token_ids)
        assert out.arrival_time < out.first_scheduled_time < out.first_token_time < out.finish_time
    stats = engine.stats()
    assert stats.num_finished_by_reason == {"length": 3}
    assert stats.num_blocks_used == (0,) and stats.num_running == 0 and stats.num_waiting == 0


def test_preemption_gives_same_tokens_as_without():
    ps = prompts(4, length=9)
    params = SamplingParams(temperature=0.0, max_tokens=14)
    roomy, _ = create_engine(num_blocks=64)
    tight, _ = create_engine(num_blocks=12, max_num_batched_tokens=32)  # 11 blocks: 4 x 23 tokens need 24
    expected = [o.new_token_ids for o in roomy.generate(ps, params)]
    got = tight.generate(ps, params)
    assert [o.new_token_ids for o in got] == expected
    assert tight.stats().num_preemptions > 0
    assert all(o.finish_reason == "length" and o.num_output_tokens == 14 for o in got)
    assert tight.stats().num_blocks_used == (0,)


def test_preemption_with_windowed_and_full_groups():
    ps = prompts(4, length=9)
    params = SamplingParams(temperature=0.0, max_tokens=20)
    config = create_config(num_blocks=14, layer_windows=(0, 6, 6), max_num_batched_tokens=32)
    engine, _ = create_engine(config)
    got = engine.generate(ps, params)
    assert [o.new_token_ids for o in got] == [expected_tokens(p, 20) for p in ps]
    stats = engine.stats()
    assert stats.num_preemptions > 0 and stats.num_window_freed_blocks > 0
    assert stats.num_blocks_used == (0, 0)


def test_stop_string_across_token_boundaries_is_held_back_then_cut():
    # ids 1..5 read "he" "llo" " wo" "rld" "!"
    engine, _ = create_engine(script={"r": [1, 2, 3, 4, 5]})
    engine.add_request([9, 9], SamplingParams(max_tokens=5, stop=("llo w",)), request_id="r")
    texts = [(o.new_token_ids, o.new_text) for o in run_and_collect(engine)]
    assert texts == [([1], "he"), ([2], ""), ([3], "")]  # "llo" held: it may begin "llo w"
    final = engine.scheduler  # the request is gone
    assert "r" not in final.requests


def run_and_collect(engine):
    outs = []
    while engine.has_unfinished_requests():
        outs.extend(engine.step())
    return outs


def test_stop_string_result_and_release_of_held_text():
    engine, _ = create_engine(script={"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]})
    engine.add_request([9], SamplingParams(max_tokens=5, stop=("o wor",)), request_id="a")
    engine.add_request([9], SamplingParams(max_tokens=5, stop=("rld!?",)), request_id="b")
    results = run_to_completion(engine)
    assert results["a"].new_text == "hell" and results["a"].stop_reason == "o wor"
    # the match needs "r" of token 4; the ids that completed it stay in the output
    assert results["a"].finish_reason == "stop" and results["a"].new_token_ids == [1, 2, 3, 4]
    # "rld!" was held as a possible start of "rld!?"; released when max_tokens ends the request
    assert results["b"].new_text == "hello world!" and results["b"].finish_reason == "length"


def test_stop_token_ids_and_eos():
    config = create_config(stop_ids=frozenset({4}))
    script = {k: [1, 2, 3, 4, 5] for k in ("eos", "ignore", "stop_id")}
    engine, _ = create_engine(config, script)
    engine.add_request([9], SamplingParams(max_tokens=5), request_id="eos")
    engine.add_request([9], SamplingParams(max_tokens=5, ignore_eos=True), request_id="ignore")
    engine.add_request([9], SamplingParams(max_tokens=5, ignore_eos=True, stop_token_ids=(3,)), request_id="stop_id")
    r = run_to_completion(engine)
    assert (r["eos"].new_token_ids, r["eos"].new_text, r["eos"].stop_reason) == ([1, 2, 3, 4], "hello wo", 4)
    assert r["ignore"].new_text == "hello world!" and r["ignore"].finish_reason == "length"
    assert (r["stop_id"].new_token_ids, r["stop_id"].new_text, r["stop_id"].stop_reason) == ([1, 2, 3], "hello", 3)


def test_abort_frees_blocks_before_next_step():
    engine, _ = create_engine()
    rid = engine.add_request(prompts(1, 10)[0], GREEDY)
    engine.step()
    assert engine.stats().num_blocks_used == (3,)
    assert engine.abort_request(rid)
    assert engine.stats().num_blocks_used == (0,)
    assert not engine.abort_request(rid)  # idempotent
    [out] = engine.step()
    assert out.finished and out.finish_reason == "abort" and out.request_id == rid
    assert not engine.has_unfinished_requests()
    assert not engine.abort_request("never-added")


def test_runner_error_fails_that_steps_requests_and_engine_goes_on():
    engine, runner = create_engine()
    runner.fail_on_call = 2
    a = engine.add_request(prompts(1)[0], GREEDY)
    engine.step()
    [out] = engine.step()
    assert out.request_id == a and out.finish_reason == "error" and out.finished
    assert engine.stats().num_blocks_used == (0,)
    [later] = engine.generate(prompts(1, 5), GREEDY)
    assert later.new_token_ids == expected_tokens(prompts(1, 5)[0], 6)


def test_prefix_cache_hit_is_reported_and_correct():
    engine, _ = create_engine(block_size=4)
    shared = list(range(1, 13))
    [first] = engine.generate([shared + [20]], GREEDY)
    [second] = engine.generate([shared + [30]], GREEDY)
    assert first.num_cached_tokens == 0 and second.num_cached_tokens == 12
    assert second.new_token_ids == expected_tokens(shared + [30], 6)
    stats = engine.stats()
    assert (stats.num_prefix_queried_tokens, stats.num_prefix_hit_tokens) == (26, 12)


def test_no_prefix_cache_flag():
    engine, _ = create_engine(enable_prefix_caching=False)
    engine.generate([list(range(1, 14))], GREEDY)
    [again] = engine.generate([list(range(1, 14))], GREEDY)
    assert again.num_cached_tokens == 0


def test_add_request_refusals():
    engine, _ = create_engine(max_waiting=1)
    with pytest.raises(InvalidRequestError) as info:
        engine.add_request([], GREEDY)
    assert info.value.field == "prompt"
    engine.add_request([1], GREEDY, request_id="x")
    with pytest.raises(QueueFullError):
        engine.add_request([1], GREEDY)
    no_detok = LLMEngine(FakeRunner(create_config()), create_config())
    with pytest.raises(InvalidRequestError) as info:
        no_detok.add_request([1], SamplingParams(stop=("a",)))
    assert info.value.field == "stop"


def test_generate_more_prompts_than_the_queue_holds():
    engine, _ = create_engine(max_waiting=2, max_num_seqs=2)
    ps = prompts(7, 5)
    outs = engine.generate(ps, GREEDY)
    assert [o.new_token_ids for o in outs] == [expected_tokens(p, 6) for p in ps]


def test_logprobs_only_when_asked_and_prompt_logprobs_delivered():
    engine, _ = create_engine(max_num_batched_tokens=4)
    with_lp = SamplingParams(temperature=0.0, max_tokens=3, logprobs=1, prompt_logprobs=1)
    p = [5, 6, 7, 8, 9, 10]
    plain, asked = engine.generate([p, p], [GREEDY, with_lp])
    assert plain.new_logprobs == [] and plain.prompt_logprobs is None
    assert [lp.token_id for lp in asked.new_logprobs] == asked.new_token_ids
    assert asked.prompt_logprobs == [None] + [SampledToken(t, -float(i), [(t, -float(i))]) for i, t in enumerate(p[1:])]


def test_stats_last_step_tokens_and_kv_bytes():
    engine, _ = create_engine(max_num_batched_tokens=8, num_kv_heads=2, head_dim=4, kv_dtype="f16")
    engine.add_request(prompts(1, 3)[0], GREEDY)
    engine.add_request(prompts(1, 12)[0], GREEDY)
    engine.step()
    s = engine.stats()
    assert (s.num_prefill_tokens_last_step, s.num_decode_tokens_last_step) == (8, 0)
    engine.step()
    s = engine.stats()
    assert (s.num_prefill_tokens_last_step, s.num_decode_tokens_last_step) == (7, 1)
    assert s.kv_bytes_per_token == 2 * 1 * 2 * 4 * 2
    assert s.num_blocks_total == (63,) and s.num_steps == 2 and s.last_step_time_s >= 0


def test_window_bounds_blocks_of_a_long_generation():
    config = create_config(block_size=4, num_blocks=20, layer_windows=(8,), max_model_len=400)
    engine, _ = create_engine(config)
    engine.add_request([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=300))
    max_used = 0
    while engine.has_unfinished_requests():
        engine.step()
        max_used = max(max_used, engine.stats().num_blocks_used[0])
    assert max_used == 8 // 4 + 1  # ceil(W / bs) + 1
    # 302 computed positions span 76 blocks; the last 3 (positions >= 295) are freed at finish
    assert engine.stats().num_window_freed_blocks == 73

def test_engine_thread_with_wait_for_work():
    engine, _ = create_engine()
    results, done = {}, threading.Event()

    def loop():
        while not done.is_set():
            if engine.wait_for_work(timeout=0.05):
                for out in engine.step():
                    results.setdefault(out.request_id, []).append(out)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        assert not engine.wait_for_work(timeout=0.01)
        ids = [engine.add_request(p, GREEDY) for p in prompts(5)]
        for _ in range(200):
            if all(rid in results and results[rid][-1].finished for rid in ids):
                break
            threading.Event().wait(0.01)
    finally:
        done.set()
        thread.join()
    assert all(sum(len(o.new_token_ids) for o in results[rid]) == 6 for rid in ids)


def test_engine_config_validates():
    with pytest.raises(ValueError):
        create_config(scheduling_policy="random")
    with pytest.raises(ValueError):
        create_config(max_num_seqs=0)
    config = create_config(stop_ids=[2, 3])
    assert isinstance(config, EngineConfig) and config.stop_ids == frozenset({2, 3})


def test_preempted_requests_keep_prompt_logprobs_and_resume_from_cached_blocks():
    """Prompt logprobs are delivered once, the same as without preemption; a request resumed
    after they were delivered may take prefix-cache hits (nothing it recomputes needs logits)."""
    ps = prompts(4, length=9)
    params = SamplingParams(temperature=0.0, max_tokens=14, prompt_logprobs=1)
    roomy, _ = create_engine(num_blocks=64)
    tight, _ = create_engine(num_blocks=12, max_num_batched_tokens=32)  # as the test above: preempts
    expected = roomy.generate(ps, params)
    got = tight.generate(ps, params)
    assert tight.stats().num_preemptions > 0
    assert [o.new_token_ids for o in got] == [o.new_token_ids for o in expected]
    assert [o.prompt_logprobs for o in got] == [o.prompt_logprobs for o in expected]
    assert roomy.stats().num_prefix_hit_tokens == 0  # distinct prompts, never preempted
    assert tight.stats().num_prefix_hit_tokens > 0  # resumed requests reused their cached blocks
