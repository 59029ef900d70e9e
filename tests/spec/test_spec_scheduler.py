"""Speculative decoding in the scheduler and KV cache, model-free (FakeRunner): drafts change the
steps, never the tokens; rollback, prefix cache, sliding window, stops, aborts, budget, back-off."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagedserve.sampling_params import SPECULATIVE_OFF, SamplingParams
from pagedserve.scheduler.spec_policy import MIN_BACKOFF_STEPS
from tests.scheduler.factories import VOCAB_SIZE, create_config, create_engine, expected_tokens, run_to_completion
from tests.scheduler.test_engine_properties import check_invariants


def right_proposer(request_id, context, n):
    """Drafts the FakeRunner's own next tokens: every draft is accepted."""
    context, drafts = list(context), []
    for _ in range(n):
        drafts.append(sum(context) % VOCAB_SIZE)
        context.append(drafts[-1])
    return drafts


def wrong_proposer(request_id, context, n):
    """Drafts that are never the next token (the first is always rejected)."""
    return [(right_proposer(request_id, context, 1)[0] + 1) % VOCAB_SIZE] * n


def random_proposer(seed):
    rng = random.Random(seed)

    def propose(request_id, context, n):
        right = right_proposer(request_id, context, n)
        return [t if rng.random() < 0.6 else rng.randrange(VOCAB_SIZE) for t in right][:rng.randint(0, n)]
    return propose


def spec_engine(proposer, num_draft_tokens=4, **config_args):
    config = create_config(speculative="ngram", num_draft_tokens=num_draft_tokens, **config_args)
    engine, runner = create_engine(config)
    runner.proposer = proposer
    return engine, runner


def greedy(max_tokens, **kwargs):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kwargs)


def test_right_drafts_give_the_same_tokens_in_fewer_steps_and_are_counted():
    prompt = [5, 17, 3, 9]
    engine, runner = spec_engine(right_proposer, num_draft_tokens=3)
    engine.add_request(prompt, greedy(13), request_id="a")
    result = run_to_completion(engine)
    assert result["a"].new_token_ids == expected_tokens(prompt, 13)
    # prefill (1 token out), then 3 verify steps of 1 + 3 tokens (4 out each): 1 + 12 = 13
    assert runner.batches == [[("a", 0, 4)], [("a", 4, 4)], [("a", 8, 4)], [("a", 12, 4)]]
    stats = engine.stats()
    assert (stats.num_draft_tokens, stats.num_accepted_draft_tokens) == (9, 9)
    assert stats.acceptance_length_counts == (0, 0, 0, 3)
    assert stats.num_blocks_used_all_groups == 0


def test_wrong_drafts_give_the_same_tokens_and_roll_back_every_slot():
    prompt = [5, 17, 3, 9]
    engine, runner = spec_engine(wrong_proposer, num_draft_tokens=3, block_size=2)
    engine.add_request(prompt, greedy(6, speculative=3), request_id="a")  # fixed k: no back-off
    starts = []
    result = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            result.setdefault(out.request_id, []).extend(out.new_token_ids)
        starts.append(runner.batches[-1][0][1:])
    assert result["a"] == expected_tokens(prompt, 6)
    # each verify step computes the last token + its drafts and keeps only the last token; drafts
    # that could only be kept past max_tokens are not verified
    assert starts == [(0, 4), (4, 4), (5, 4), (6, 3), (7, 2), (8, 1)]
    stats = engine.stats()
    assert (stats.num_draft_tokens, stats.num_accepted_draft_tokens) == (9, 0)
    assert stats.acceptance_length_counts == (4, 0, 0, 0)
    assert stats.num_blocks_used_all_groups == 0


def test_rejected_drafts_are_never_hashed_into_the_prefix_cache():
    prompt = [5, 17, 3]
    engine, runner = spec_engine(wrong_proposer, num_draft_tokens=4, block_size=4, enable_prefix_caching=True)
    engine.add_request(prompt, greedy(8, speculative=4), request_id="a")
    engine.step()  # prefill: 1 output, drafts proposed
    engine.step()  # verify: positions 3..7 computed, only position 3 kept
    request = engine.scheduler.requests["a"]
    assert request.num_computed_tokens == 4 and request.num_tokens == 5
    pool = engine.scheduler.kv.pools[0]
    assert pool.num_cached_blocks == 1  # the block of positions 0..3, all verified; 4..7 held drafts
    # A request whose prompt continues with the rejected drafts hits only the verified block.
    rejected = list(runner.outputs[-1].scheduled[0].draft_token_ids)
    run_to_completion(engine)
    first = expected_tokens(prompt, 1)
    engine.add_request(prompt + first + rejected + [1], greedy(1), request_id="b")
    [out] = [o for o in engine.step() if o.request_id == "b"]
    assert out.num_cached_tokens == 4


def test_sliding_window_drops_blocks_only_behind_verified_tokens():
    prompt = list(range(1, 9))
    engine, runner = spec_engine(wrong_proposer, num_draft_tokens=4, block_size=2, layer_windows=(4,))
    engine.add_request(prompt, greedy(10, speculative=4), request_id="a")
    result = run_to_completion(engine)  # FakeRunner checks every visible position reads back its token
    assert result["a"].new_token_ids == expected_tokens(prompt, 10)


def test_stop_string_inside_accepted_drafts_is_never_overrun():
    # FakeDetokenizer: 6 -> "S", 7 -> "TOP", 5 -> "!"; the script's tokens are all drafted right.
    script = [1, 6, 7, 5, 5, 5, 5, 5]
    engine, runner = spec_engine(None, num_draft_tokens=4)
    runner.script = {"a": script}
    runner.proposer = lambda rid, context, n: script[len(context) - 3:][:n]
    engine.add_request([40, 41, 42], SamplingParams(temperature=0.0, max_tokens=8, stop=("STOP",)), request_id="a")
    result = run_to_completion(engine)
    assert result["a"].new_token_ids == [1, 6, 7]
    assert result["a"].new_text == "he" and result["a"].finish_reason == "stop"
    assert engine.stats().num_accepted_draft_tokens == 4  # the model accepted past the stop; never shown


def test_eos_and_max_tokens_inside_accepted_drafts_end_there():
    script = [1, 2, 99, 3, 3, 3, 3, 3]
    engine, runner = spec_engine(None, num_draft_tokens=4, stop_ids=(99,))
    runner.script = {"eos": script, "len": [3] * 8}
    runner.proposer = lambda rid, context, n: runner.script[rid][len(context) - 3:][:n]
    engine.add_request([40, 41, 42], SamplingParams(temperature=0.0, max_tokens=8), request_id="eos")
    engine.add_request([50, 51, 52], SamplingParams(temperature=0.0, max_tokens=3, speculative=4), request_id="len")
    result = run_to_completion(engine)
    assert result["eos"].new_token_ids == [1, 2, 99] and result["eos"].finish_reason == "stop"
    assert result["len"].new_token_ids == [3, 3, 3] and result["len"].finish_reason == "length"


def test_a_request_with_drafts_asks_for_one_plus_k_tokens_of_the_budget():
    engine, runner = spec_engine(right_proposer, num_draft_tokens=4, max_num_batched_tokens=7)
    engine.add_request([1, 2, 3], greedy(20), request_id="a")
    engine.step()
    engine.step()
    assert runner.batches[-1] == [("a", 3, 5)]
    engine.add_request(list(range(10, 30)), greedy(1), request_id="b")  # a prefill takes what is left
    engine.step()
    assert runner.batches[-1] == [("a", 8, 5), ("b", 0, 2)]


def test_large_batches_verify_no_drafts():
    engine, runner = spec_engine(right_proposer, num_draft_tokens=4, speculative_max_batch_tokens=3,
                                 max_num_batched_tokens=64)
    for i in range(3):
        engine.add_request([i + 1, 2, 3], greedy(6), request_id=str(i))
    result = run_to_completion(engine)
    assert all(result[str(i)].new_token_ids == expected_tokens([i + 1, 2, 3], 6) for i in range(3))
    assert engine.stats().num_draft_tokens == 0
    assert all(not r.draft_token_ids and r.num_new_tokens <= 3 for out in runner.outputs for r in out.scheduled)


def test_auto_mode_pauses_a_request_whose_drafts_are_rejected():
    engine, runner = spec_engine(wrong_proposer, num_draft_tokens=2)
    engine.add_request([1, 2, 3], greedy(12), request_id="auto")
    engine.add_request([4, 5, 6], greedy(12, speculative=SPECULATIVE_OFF), request_id="off")
    run_to_completion(engine)
    with_drafts = [[r.request_id for r in out.scheduled if r.draft_token_ids] for out in runner.outputs]
    # step 0 prefills and proposes, steps 1 and 2 verify (all rejected: the moving acceptance rate
    # falls from 1 to 0.5, then below the bar), then a pause of MIN_BACKOFF_STEPS decodes without
    # drafts (proposals resume on the pause's last step), then it probes again.
    assert with_drafts[1] == with_drafts[2] == ["auto"]
    assert all(ids == [] for ids in with_drafts[3:3 + MIN_BACKOFF_STEPS])
    assert with_drafts[3 + MIN_BACKOFF_STEPS] == ["auto"]
    assert not any("off" in ids for ids in with_drafts)


def test_abort_during_speculation_leaks_no_block():
    engine, runner = spec_engine(right_proposer, num_draft_tokens=4, block_size=2)
    for i in range(3):
        engine.add_request([i + 1, 7, 7, 7], greedy(30), request_id=str(i))
    for _ in range(3):
        engine.step()
    assert any(r.draft_token_ids for r in runner.outputs[-1].scheduled)
    for i in range(3):
        engine.abort_request(str(i))
    run_to_completion(engine)
    assert engine.stats().num_blocks_used_all_groups == 0
    check_invariants(engine)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    proposer_kind=st.sampled_from(["right", "wrong", "random"]),
    seed=st.integers(0, 1000),
    num_requests=st.integers(1, 4),
    block_size=st.sampled_from([2, 4]),
    layer_windows=st.sampled_from([(0,), (6,), (0, 6)]),
    prefix=st.booleans(),
    budget=st.integers(4, 16),
    num_draft_tokens=st.integers(1, 5),
    num_blocks=st.integers(12, 40),
)
def test_any_drafts_give_the_tokens_of_no_speculation(proposer_kind, seed, num_requests, block_size, layer_windows,
                                                      prefix, budget, num_draft_tokens, num_blocks):
    proposer = {"right": right_proposer, "wrong": wrong_proposer, "random": random_proposer(seed)}[proposer_kind]
    engine, runner = spec_engine(proposer, num_draft_tokens=num_draft_tokens, block_size=block_size,
                                 layer_windows=layer_windows, enable_prefix_caching=prefix,
                                 max_num_batched_tokens=budget, num_blocks=num_blocks, max_model_len=64)
    rng = random.Random(seed)
    prompts = {}
    for i in range(num_requests):
        prompt = [3, 1, 4, 1, 5] * rng.randint(0, 1) + [rng.randrange(1, VOCAB_SIZE) for _ in range(rng.randint(1, 12))]
        prompts[str(i)] = (prompt, rng.randint(1, 20))
        engine.add_request(prompt, greedy(prompts[str(i)][1], speculative=rng.choice([-1, 0, num_draft_tokens])),
                           request_id=str(i))
    result = run_to_completion(engine)
    for rid, (prompt, max_tokens) in prompts.items():
        tokens = result[rid].new_token_ids
        if result[rid].finish_reason == "length" and len(tokens) < max_tokens:  # outgrew a tiny cache
            assert tokens == expected_tokens(prompt, max_tokens)[:len(tokens)], rid
        else:
            assert tokens == expected_tokens(prompt, max_tokens), rid
    check_invariants(engine)
    assert engine.stats().num_blocks_used_all_groups == 0


def test_constrained_and_off_requests_never_ask_for_drafts_and_auto_and_fixed_do():
    from pagedserve.scheduler.request import Request
    from pagedserve.scheduler.spec_policy import SpecPolicy
    from pagedserve.structured.constraint import Constraint

    policy = SpecPolicy(num_draft_tokens=4, max_batch_tokens=8)
    constrained = Request("c", [1, 2], greedy(10, constraint=Constraint("regex", "a+")))
    off = Request("o", [1, 2], greedy(10, speculative=SPECULATIVE_OFF))
    auto = Request("a", [1, 2], greedy(10))
    fixed = Request("f", [1, 2], greedy(10, speculative=7))
    assert [policy.num_to_propose(r, num_running=4) for r in (constrained, off, auto, fixed)] == [0, 0, 4, 7]
    assert policy.num_to_propose(auto, num_running=8) == 0  # the step rule: no room for drafts
    assert SpecPolicy(num_draft_tokens=0, max_batch_tokens=8).num_to_propose(fixed, num_running=1) == 0  # engine off
    fixed.draft_token_ids = [5] * 7
    assert policy.num_drafts_to_verify(fixed, room=3, budget=10) == 3
    assert policy.num_drafts_to_verify(fixed, room=8, budget=5) == 4  # the decode's own token first
