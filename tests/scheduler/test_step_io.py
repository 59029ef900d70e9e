"""Incremental step I/O: a request's history goes to the runner once, then each step only diffs."""

from pagedserve.sampled_token import SampledToken
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.request import Request
from pagedserve.scheduler.step_io import RunnerOutput
from tests.scheduler.factories import create_config, create_engine, create_requests, create_scheduler, expected_tokens
from tests.scheduler.test_scheduler import run_step


def diffs(output):
    return [(r.request_id, r.start_position, r.num_new_tokens, r.new_block_ids, r.num_null_blocks,
             r.new_output_token_ids) for r in output.scheduled]


def test_history_once_then_new_blocks_and_outputs_then_the_drop():
    s = create_scheduler(max_num_batched_tokens=10, block_size=4)
    a, b = create_requests(1, prompt_len=3)[0], create_requests(1, prompt_len=20, start_id=1)[0]
    s.add_request(a)
    s.add_request(b)
    out, _ = run_step(s)
    assert [(n.request_id, n.prompt_token_ids, n.output_token_ids) for n in out.new_requests] == [
        ("0", (0, 1, 2), ()), ("1", tuple(range(1000, 1020)), ())]
    assert diffs(out) == [("0", 0, 3, ((1,),), (0,), ()), ("1", 0, 7, ((2, 3),), (0,), ())]
    out, _ = run_step(s)
    assert out.new_requests == () and out.finished_request_ids == ()
    assert diffs(out) == [("0", 3, 1, ((),), (0,), (7,)), ("1", 7, 9, ((4, 5),), (0,), ())]
    out, _ = run_step(s)
    assert diffs(out) == [("0", 4, 1, ((6,),), (0,), (7,)), ("1", 16, 4, ((7,),), (0,), ())]
    out, _ = run_step(s)  # "0" samples its 4th and last token
    assert diffs(out) == [("0", 5, 1, ((),), (0,), (7,)), ("1", 20, 1, ((8,),), (0,), (7,))]
    assert a.is_finished
    out, _ = run_step(s)
    assert out.finished_request_ids == ("0",)  # the runner drops what it held of "0"
    assert diffs(out) == [("1", 21, 1, ((),), (0,), (7,))]


def test_a_decode_sends_the_same_few_ids_whatever_the_context_length():
    s = create_scheduler(max_num_batched_tokens=64, block_size=4, num_blocks=200, max_model_len=512)
    [r] = create_requests(1, prompt_len=300, max_tokens=20)
    s.add_request(r)
    while r.num_output_tokens == 0:
        run_step(s)
    for _ in range(18):
        out, _ = run_step(s)
        assert out.new_requests == ()
        [d] = out.scheduled
        assert d.num_new_tokens == 1 and len(d.new_output_token_ids) == 1
        assert len(d.new_block_ids[0]) == (1 if d.start_position % 4 == 0 else 0)


def test_window_sends_the_count_of_leading_null_blocks():
    s = create_scheduler(max_num_batched_tokens=16, block_size=4, layer_windows=(0, 8))
    [r] = create_requests(1, prompt_len=3, max_tokens=20)
    s.add_request(r)
    num_table_entries = [0, 0]
    while not r.is_finished:
        out = s.schedule()
        [d] = out.scheduled
        # positions p with start - p >= 8 are out of the window: (start - 7) // 4 whole blocks
        assert d.num_null_blocks == (0, max(0, (d.start_position - 7) // 4))
        assert s.kv.block_tables("0")[1][:d.num_null_blocks[1] + 1].count(0) == d.num_null_blocks[1]
        num_table_entries = [n + len(new) for n, new in zip(num_table_entries, d.new_block_ids)]
        assert num_table_entries == [len(t) for t in s.kv.block_tables("0")]
        s.update_from_output(out, RunnerOutput({"0": SampledToken(7, 0.0)}))
    assert d.num_null_blocks[1] == 3 and s.kv.num_window_freed_blocks == 3


def test_prefix_hit_blocks_arrive_with_the_new_request_and_the_drop_waits_for_a_running_step():
    s = create_scheduler(block_size=4)
    shared = list(range(1, 13))
    one_token = SamplingParams(temperature=0.0, max_tokens=1)
    first = Request("0", shared + [20], one_token)
    s.add_request(first)
    out, _ = run_step(s)
    first_blocks = list(out.scheduled[0].new_block_ids[0][:3])  # cached when "0" finished
    assert first.is_finished
    assert s.schedule().scheduled == ()  # nothing to run: the drop of "0" waits
    s.add_request(Request("1", shared + [30], one_token))
    out, _ = run_step(s)
    assert out.finished_request_ids == ("0",)
    assert [n.request_id for n in out.new_requests] == ["1"]
    [d] = out.scheduled
    assert (d.start_position, d.num_new_tokens) == (12, 1)  # 3 blocks served by the prefix cache
    assert list(d.new_block_ids[0][:3]) == first_blocks and len(d.new_block_ids[0]) == 4


def test_preempted_request_is_dropped_then_resent_whole_with_its_outputs():
    s = create_scheduler(num_blocks=7, block_size=4, max_num_batched_tokens=64)
    a, b = create_requests(2, prompt_len=8, max_tokens=12)
    s.add_request(a)
    s.add_request(b)
    for _ in range(6):
        out, _ = run_step(s)
    assert out.finished_request_ids == ("1",) and s.num_preemptions == 1
    while True:
        out, _ = run_step(s)
        if out.new_requests:
            break
    [resumed] = out.new_requests
    assert (resumed.request_id, resumed.prompt_token_ids, resumed.output_token_ids) == (
        "1", tuple(range(1000, 1008)), (7,) * 5)
    assert out.finished_request_ids == ("0",)
    [d] = [d for d in out.scheduled if d.request_id == "1"]
    assert d.new_output_token_ids == () and d.start_position + d.num_new_tokens == 13
    assert list(d.new_block_ids[0]) == s.kv.block_tables("1")[0]


def test_runner_state_equals_full_history_through_chunks_preemption_prefix_hits_and_windows():
    """The FakeRunner compares its diff-built state to the scheduler's requests at every step."""
    shared = [3, 1, 4, 1, 5, 9, 2, 6]
    prompts = [shared + [(7 * i + j) % 50 + 1 for j in range(5 + 3 * i)] for i in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=16)
    config = create_config(num_blocks=18, layer_windows=(0, 6, 6), max_num_batched_tokens=12)
    engine, runner = create_engine(config)
    got = engine.generate(prompts, params)
    assert [o.new_token_ids for o in got] == [expected_tokens(p, 16) for p in prompts]
    stats = engine.stats()
    assert stats.num_preemptions > 0 and stats.num_window_freed_blocks > 0 and stats.num_prefix_hit_tokens > 0
    assert any(start > 0 and n > 1 for batch in runner.batches for _, start, n in batch)  # a later prefill chunk
    assert len(runner.outputs) == stats.num_steps  # every step checked


def test_drops_of_a_failed_step_are_sent_again():
    engine, runner = create_engine()
    runner.fail_on_call = 2  # raises before looking at the step, so it drops nothing
    engine.add_request([1, 2], SamplingParams(temperature=0.0, max_tokens=1), request_id="a")
    engine.add_request([3, 4], SamplingParams(temperature=0.0, max_tokens=6), request_id="b")
    engine.step()  # "a" finishes
    [failed] = engine.step()
    assert failed.request_id == "b" and failed.finish_reason == "error"
    assert runner.outputs[-1].finished_request_ids == ("a",)
    [later] = engine.generate([[5, 6]], SamplingParams(temperature=0.0, max_tokens=2))
    assert runner.outputs[2].finished_request_ids == ("a", "b")
    assert runner.states.request_ids() == {later.request_id}  # checked against the scheduler each step too
