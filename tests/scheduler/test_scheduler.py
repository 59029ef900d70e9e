import pytest

from pagedserve.scheduler.request import RequestStatus
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.scheduler.scheduler import QueueFullError
from pagedserve.sampled_token import SampledToken
from pagedserve.scheduler.step_io import RunnerOutput
from tests.scheduler.factories import create_requests, create_scheduler


def grants(output):
    return [(r.request_id, r.start_position, r.num_new_tokens, r.sample) for r in output.scheduled]


def run_step(scheduler, token=7):
    out = scheduler.schedule()
    sampled = {r.request_id: SampledToken(token, 0.0) for r in out.scheduled if r.sample}
    return out, scheduler.update_from_output(out, RunnerOutput(sampled))


def test_budget_mixes_decode_and_prefill_chunks():
    s = create_scheduler(max_num_batched_tokens=10, block_size=4)
    a, b = create_requests(1, prompt_len=3)[0], create_requests(1, prompt_len=20, start_id=1)[0]
    s.add_request(a)
    s.add_request(b)
    out, _ = run_step(s)
    assert grants(out) == [("0", 0, 3, True), ("1", 0, 7, False)]
    assert out.scheduled[1].new_block_ids == ((2, 3),)
    out, _ = run_step(s)
    assert grants(out) == [("0", 3, 1, True), ("1", 7, 9, False)]
    out, _ = run_step(s)
    assert grants(out) == [("0", 4, 1, True), ("1", 16, 4, True)]
    assert out.scheduled[1].new_block_ids == ((7,),)  # block 6 went to request 0
    assert s.kv.block_tables("1") == ([2, 3, 4, 5, 7],)
    out, _ = run_step(s)
    assert grants(out) == [("0", 5, 1, True), ("1", 20, 1, True)]
    assert s.num_prefill_tokens_last_step == 0 and s.num_decode_tokens_last_step == 2


def test_long_prefill_threshold_splits_prompt():
    s = create_scheduler(max_num_batched_tokens=100, long_prefill_token_threshold=8)
    [a] = create_requests(1, prompt_len=20)
    s.add_request(a)
    assert grants(run_step(s)[0]) == [("0", 0, 8, False)]
    assert grants(run_step(s)[0]) == [("0", 8, 8, False)]
    assert grants(run_step(s)[0]) == [("0", 16, 4, True)]
    assert a.output_token_ids == [7]


def test_max_num_seqs_respected():
    s = create_scheduler(max_num_seqs=2, max_num_batched_tokens=100)
    for r in create_requests(3, prompt_len=4):
        s.add_request(r)
    out, _ = run_step(s)
    assert [r.request_id for r in out.scheduled] == ["0", "1"]
    assert s.num_waiting == 1 and s.num_running == 2


def test_preemption_takes_most_recent_and_resumes_first():
    # 6 usable blocks of 4: two requests of 8 prompt tokens + growth cannot both fit
    s = create_scheduler(num_blocks=7, block_size=4, max_num_batched_tokens=64)
    a, b = create_requests(2, prompt_len=8, max_tokens=12)
    s.add_request(a)
    s.add_request(b)
    run_step(s)  # both prefilled: blocks [1, 2] and [3, 4]
    run_step(s)  # position 8 of each: blocks 5 and 6; the cache is now full
    for _ in range(3):
        out, _ = run_step(s)  # positions 9..11 fit in the last blocks
    assert s.num_preemptions == 0
    out, _ = run_step(s)  # position 12 of "0" needs a block: "1" (admitted last) is preempted
    assert grants(out) == [("0", 12, 1, True)]
    assert out.scheduled[0].new_block_ids == ((6,),)  # "1" freed tail first: its block 6 is the LRU head
    assert s.kv.block_tables("0") == ([1, 2, 5, 6],)
    assert out.finished_request_ids == ("1",)  # the runner drops the preempted request
    assert s.num_preemptions == 1
    assert b.status is RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert a.status is RequestStatus.RUNNING
    assert len(b.output_token_ids) == 5  # kept for recompute
    assert s.waiting.peek() is b
    assert s.kv.block_tables("1") == ([],)


def test_queue_bound_refuses():
    s = create_scheduler(max_waiting=2)
    r = create_requests(3)
    s.add_request(r[0])
    s.add_request(r[1])
    with pytest.raises(QueueFullError, match="waiting queue is full"):
        s.add_request(r[2])


@pytest.mark.parametrize(
    "prompt_len,max_tokens,field,message",
    [
        (0, 4, "prompt", "empty"),
        (300, 0, "prompt", "max_model_len"),
        (250, 10, "max_tokens", "exceeds max_model_len=256"),
        (100, 0, "prompt", "needs 25 KV blocks in group 0, but the whole cache has 15"),
    ],
)
def test_admission_refusals(prompt_len, max_tokens, field, message):
    s = create_scheduler(num_blocks=16, block_size=4, max_model_len=256)
    [r] = create_requests(1, prompt_len=prompt_len, max_tokens=max_tokens)
    with pytest.raises(InvalidRequestError, match=message) as info:
        s.add_request(r)
    assert info.value.field == field
    assert s.num_waiting == 0


def test_duplicate_request_id_refused():
    s = create_scheduler()
    [r] = create_requests(1)
    [again] = create_requests(1)
    s.add_request(r)
    with pytest.raises(InvalidRequestError) as info:
        s.add_request(again)
    assert info.value.field == "request_id"


def test_windowed_prompt_longer_than_cache_is_admitted():
    s = create_scheduler(num_blocks=16, block_size=4, max_model_len=256, layer_windows=(8,),
                         max_num_batched_tokens=8)
    [r] = create_requests(1, prompt_len=100, max_tokens=4)
    s.add_request(r)  # window 8 needs at most cdiv(7 + 8, 4) + 1 = 5 blocks at once
    for _ in range(20):
        run_step(s)
    assert r.status is RequestStatus.FINISHED_LENGTH and r.num_output_tokens == 4


def test_priority_policy_orders_waiting_and_preempts_least_important():
    s = create_scheduler(scheduling_policy="priority", max_num_seqs=1, max_num_batched_tokens=100)
    low, high = create_requests(2, prompt_len=4)
    low.priority, high.priority = 5, 0
    s.add_request(low)
    s.add_request(high)
    out, _ = run_step(s)
    assert [r.request_id for r in out.scheduled] == ["1"]


def test_prompt_logprobs_across_chunks():
    s = create_scheduler(max_num_batched_tokens=4)
    [r] = create_requests(1, prompt_len=6, max_tokens=1, prompt_logprobs=1)
    s.add_request(r)
    out = s.schedule()
    assert out.scheduled[0].want_prompt_logprobs
    entry = lambda p: SampledToken(p + 1, -float(p), [(p + 1, -float(p))])  # noqa: E731
    outputs = s.update_from_output(out, RunnerOutput({}, {"0": [entry(p) for p in range(4)]}))
    assert outputs == []
    out = s.schedule()
    chunk = {"0": [entry(p) for p in range(4, 6)]}
    [output] = s.update_from_output(out, RunnerOutput({"0": SampledToken(3, 0.0)}, chunk))
    assert output.prompt_logprobs == [None] + [entry(p) for p in range(5)]  # position 5 predicts the output
    assert output.finished and output.finish_reason == "length"


def test_max_tokens_zero_scores_prompt_only():
    s = create_scheduler()
    [r] = create_requests(1, prompt_len=5, max_tokens=0)
    s.add_request(r)
    out = s.schedule()
    assert grants(out) == [("0", 0, 5, False)]
    [output] = s.update_from_output(out, RunnerOutput({}))
    assert output.finished and output.finish_reason == "length" and output.new_token_ids == []
    assert s.kv.num_used_blocks() == (0,)


def test_priority_policy_preempts_least_important_even_if_admitted_first():
    s = create_scheduler(scheduling_policy="priority", num_blocks=7, block_size=4, max_num_batched_tokens=64)
    low, high = create_requests(2, prompt_len=8, max_tokens=12)
    low.priority, high.priority = 5, 0
    s.add_request(low)
    run_step(s)  # low: blocks [1, 2]
    s.add_request(high)
    for _ in range(5):
        run_step(s)  # low reaches position 12 first and finds no block
    assert s.num_preemptions == 1
    assert low.status is RequestStatus.PREEMPTED and high.status is RequestStatus.RUNNING
    assert s.running == [high]
