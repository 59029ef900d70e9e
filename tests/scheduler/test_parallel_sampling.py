"""n > 1 without a model: the prompt is computed once, then the choices fork and share its blocks.

The FakeRunner writes every token into its block slot and reads the whole visible context back
through each request's block table before sampling, applying the step's `blocks_to_copy` first
as the real runner does, so a choice that reads a block another choice wrote, or a missed copy,
fails the test.
"""

import pytest

from pagedserve.sampling_params import MAX_NUM_CHOICES, InvalidRequestError, SamplingParams
from pagedserve.scheduler.request import choice_request_id
from tests.scheduler.factories import create_engine, expected_tokens

PROMPT = [5, 7, 11, 13, 17, 19, 23, 29, 31, 37]  # 10 tokens: 2 full blocks of 4 and a partial one


def params(n, max_tokens=6, **kw):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, n=n, ignore_eos=True, **kw)


def choices_of(engine, request_id="r", max_steps=1000):
    """Step until idle; index -> accumulated output of request `request_id`."""
    results = {}
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            return results
        for out in engine.step():
            if out.request_id == request_id:
                prev = results.get(out.index)
                results[out.index] = prev.merged_with(out) if prev else out
    raise AssertionError("engine did not finish")


def all_refcounts_zero(engine) -> bool:
    return all(all(c == 0 for c in pool.ref_counts) for pool in engine.scheduler.kv.pools)


@pytest.mark.parametrize("prompt_len", [8, 10])  # block-aligned and not
@pytest.mark.parametrize("caching", [True, False])
def test_four_choices_prefill_once_and_equal_a_single_request(prompt_len, caching):
    engine, runner = create_engine(enable_prefix_caching=caching)
    prompt = PROMPT[:prompt_len]
    engine.add_request(prompt, params(4), "r")
    results = choices_of(engine)
    assert sorted(results) == [0, 1, 2, 3]
    for index, out in results.items():
        assert out.new_token_ids == expected_tokens(prompt, 6), index
        assert out.finished and out.finish_reason == "length" and out.request_id == "r"
    stats = engine.stats()
    assert stats.num_prefill_tokens == prompt_len  # one prompt, not four
    assert runner.batches[0] == [("r", 0, prompt_len)]  # the prompt's only computation
    assert all(batch_len == 4 for batch_len in map(len, runner.batches[1:]))  # then 4 decodes a step
    assert stats.num_blocks_used == (0,) and all_refcounts_zero(engine)
    assert engine.scheduler.choices == {} and engine.scheduler.requests == {}


def test_choices_share_full_prompt_blocks_and_copy_the_partial_one():
    engine, runner = create_engine(enable_prefix_caching=False)
    engine.add_request(PROMPT, params(3), "r")
    engine.step()  # prefill + fork
    kv = engine.scheduler.kv
    ids = ["r", choice_request_id("r", 1), choice_request_id("r", 2)]
    parent_table = kv.block_tables("r")[0]
    assert parent_table == [1, 2, 3]
    for rid in ids[1:]:
        assert kv.block_tables(rid)[0] == [1, 2, 3]  # shared until the choice writes
    assert [kv.pools[0].ref_counts[b] for b in (1, 2, 3)] == [3, 3, 3]
    engine.step()  # each choice writes position 10, inside block 3
    copies = runner.outputs[1].blocks_to_copy
    assert copies == (((3, 4), (3, 5)),)  # choices 1 and 2 copy; choice 0 writes block 3 in place
    assert [kv.block_tables(rid)[0] for rid in ids] == [[1, 2, 3], [1, 2, 4], [1, 2, 5]]
    assert [kv.pools[0].ref_counts[b] for b in (1, 2, 3, 4, 5)] == [3, 3, 1, 1, 1]


def test_block_aligned_prompt_needs_no_copy():
    engine, runner = create_engine()
    engine.add_request(PROMPT[:8], params(3), "r")
    choices_of(engine)
    assert all(not any(out.blocks_to_copy) for out in runner.outputs)


def test_choices_diverge_stop_on_their_own_and_keep_their_own_kv():
    prompt = PROMPT
    c1, c2 = choice_request_id("r", 1), choice_request_id("r", 2)
    # Choice 1 stops at its third token (stop token 99); choice 2 follows its own script.
    script = {c1: [40, 41, 99, 0, 0, 0], c2: [50, 51, 52, 53, 54, 55]}
    engine, runner = create_engine(script=script, stop_ids=(99,))
    engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=6, n=3), "r")
    results = choices_of(engine)
    assert results[0].new_token_ids == expected_tokens(prompt, 6)
    assert results[1].new_token_ids == [40, 41, 99] and results[1].finish_reason == "stop"
    assert results[2].new_token_ids == script[c2] and results[2].finish_reason == "length"
    assert all_refcounts_zero(engine)


def test_abort_mid_generation_aborts_every_choice_and_frees_every_block():
    engine, _ = create_engine()
    engine.add_request(PROMPT, params(4, max_tokens=50), "r")
    for _ in range(3):
        engine.step()
    assert engine.stats().num_running == 4
    assert engine.abort_request("r")
    assert engine.stats().num_blocks_used == (0,) and all_refcounts_zero(engine)
    finals = [out for out in engine.step() if out.finished]
    assert sorted(out.index for out in finals) == [0, 1, 2, 3]
    assert {out.finish_reason for out in finals} == {"abort"}
    assert not engine.has_unfinished_requests()
    assert not engine.abort_request("r")


def test_abort_after_choice_zero_finished_still_reaches_the_others():
    c1 = choice_request_id("r", 1)
    engine, _ = create_engine(script={"r": [1, 99], c1: [2] * 50}, stop_ids=(99,))
    engine.add_request(PROMPT, SamplingParams(temperature=0.0, max_tokens=50, n=2), "r")
    for _ in range(3):
        engine.step()
    assert "r" not in engine.scheduler.requests and c1 in engine.scheduler.requests
    assert engine.abort_request("r")
    assert all_refcounts_zero(engine)


def test_preemption_of_choices_under_a_tiny_cache_recomputes_them():
    # 12 usable blocks of 4 tokens: four choices of 10 + 20 tokens need 32 at the end.
    engine, _ = create_engine(num_blocks=13, max_num_batched_tokens=16)
    engine.add_request(PROMPT, params(4, max_tokens=20), "r")
    results = choices_of(engine, max_steps=5000)
    assert engine.stats().num_preemptions > 0
    for index in range(4):
        assert results[index].new_token_ids == expected_tokens(PROMPT, 20), index
    assert all_refcounts_zero(engine)


def test_sliding_window_group_forks_correctly():
    # layer 0 full, layer 1 with a window of 6: the window drops shared blocks as the choices run.
    engine, _ = create_engine(layer_windows=(0, 6), enable_prefix_caching=True)
    engine.add_request(PROMPT, params(3, max_tokens=12), "r")
    results = choices_of(engine)
    for index in range(3):
        assert results[index].new_token_ids == expected_tokens(PROMPT, 12)
    assert engine.stats().num_window_freed_blocks > 0
    assert engine.stats().num_blocks_used == (0, 0) and all_refcounts_zero(engine)


def test_chunked_prompt_forks_once_when_its_last_chunk_is_computed():
    engine, runner = create_engine(max_num_batched_tokens=4, long_prefill_token_threshold=4)
    engine.add_request(PROMPT, params(2, max_tokens=3), "r")
    results = choices_of(engine)
    assert engine.stats().num_prefill_tokens == len(PROMPT)
    assert [b for batch in runner.batches[:3] for b in batch] == [("r", 0, 4), ("r", 4, 4), ("r", 8, 2)]
    assert results[1].new_token_ids == expected_tokens(PROMPT, 3)


def test_an_unforked_request_reserves_all_its_sequences():
    engine, runner = create_engine(max_num_seqs=4)
    engine.add_request(PROMPT, params(3, max_tokens=4), "a")
    engine.add_request([1, 2, 3], params(2, max_tokens=4), "b")
    engine.step()
    assert runner.batches[0] == [("a", 0, 10)]  # b (2 sequences) does not fit next to a's 3
    assert choices_of(engine, "b")[1].new_token_ids == expected_tokens([1, 2, 3], 4)
    assert all_refcounts_zero(engine)


def test_offline_generate_returns_every_choice_in_order():
    engine, _ = create_engine()
    outs = engine.generate([PROMPT, [1, 2, 3]], [params(2, max_tokens=3), params(1, max_tokens=3)])
    assert [(o.index, o.new_token_ids) for o in outs] == [
        (0, expected_tokens(PROMPT, 3)), (1, expected_tokens(PROMPT, 3)), (0, expected_tokens([1, 2, 3], 3))]


def test_bad_n_is_refused_naming_the_field():
    for n in (0, MAX_NUM_CHOICES + 1):
        with pytest.raises(InvalidRequestError) as info:
            SamplingParams(n=n)
        assert info.value.field == "n"
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(n=2, max_tokens=0)
    assert info.value.field == "n"
    engine, _ = create_engine(max_num_seqs=4)
    with pytest.raises(InvalidRequestError) as info:
        engine.add_request(PROMPT, params(5))
    assert info.value.field == "n"
    with pytest.raises(InvalidRequestError) as info:
        engine.add_request(PROMPT, params(1), choice_request_id("x", 1))
    assert info.value.field == "request_id"


def test_choice_params_shift_the_seed_and_drop_n():
    p = SamplingParams(seed=41, n=3, temperature=0.7)
    assert [c.seed for c in map(p.for_choice, range(3))] == [41, 42, 43]
    assert {c.n for c in map(p.for_choice, range(3))} == {1}
    assert SamplingParams(n=2).for_choice(1).seed is None
    with pytest.raises(ValueError):
        p.for_choice(3)



def test_every_choice_ends_when_the_request_fails_before_forking():
    engine, runner = create_engine()
    runner.fail_on_call = 1  # the prefill step raises: choice 0 finishes with "error" unforked
    outs = engine.generate([PROMPT], params(3))
    assert [(o.index, o.finish_reason, o.new_token_ids) for o in outs] == [(0, "error", []), (1, "error", []),
                                                                           (2, "error", [])]
    assert all_refcounts_zero(engine)


def test_abort_before_forking_ends_every_choice():
    engine, _ = create_engine(max_num_batched_tokens=4, long_prefill_token_threshold=4)
    engine.add_request(PROMPT, params(3), "r")
    engine.step()  # the first chunk of the prompt
    assert engine.abort_request("r")
    finals = engine.step()
    assert sorted((o.index, o.finish_reason) for o in finals) == [(0, "abort"), (1, "abort"), (2, "abort")]
    assert not engine.has_unfinished_requests() and all_refcounts_zero(engine)
