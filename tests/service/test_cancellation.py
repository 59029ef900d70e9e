"""Whatever ends a stream early frees the request's KV blocks within a step or so.

One server with a 16-token step budget (a 160-token prompt prefills over 10 steps), one running
sequence and one waiting slot, so every phase of a request can be caught and cut.
"""

from __future__ import annotations

import grpc
import pytest

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from tests.service.conftest import rpc_error, test_options, wait_until

LONG_PROMPT = [1] + [300 + (7 * i) % 5000 for i in range(159)]  # 160 tokens = 10 blocks


@pytest.fixture(scope="module")
def tight(start_server):
    # max_tokens up to 900: a running request must outlast the steps of a test however fast decode is
    return start_server(test_options(max_tokens_limit=900), max_num_batched_tokens=16, max_num_seqs=1,
                        max_waiting=1, num_kv_blocks=64)


def blocks_used(server) -> int:
    return server.engine.stats().num_blocks_used_all_groups


def scraped_blocks_used(server) -> float:
    return server.scrape()["pagedserve_kv_cache_used_blocks"][(("group", "0"),)]


def num_aborted(server) -> int:
    return server.engine.stats().num_finished_by_reason.get("abort", 0)


def assert_back_to_baseline(server, steps_at_cancel: int, aborted_before: int) -> None:
    wait_until(lambda: blocks_used(server) == 0 and num_aborted(server) == aborted_before + 1)
    # The abort frees the blocks at once; the step after it only reports the "abort" output.
    assert server.engine.stats().num_steps - steps_at_cancel <= 3
    assert scraped_blocks_used(server) == 0
    stats = server.engine.stats()
    assert stats.num_running == 0 and stats.num_waiting == 0
    assert server.client.model_info().num_blocks_total == 63


def request(prompt, max_tokens: int, request_id: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=request_id, token_ids=pb.TokenIds(ids=prompt),
        sampling=pb.SamplingOptions(temperature=0.0),
        stopping=pb.StoppingOptions(max_tokens=max_tokens, ignore_eos=True))


@pytest.mark.slow
def test_cancel_mid_prefill_frees_blocks(tight):
    aborted = num_aborted(tight)
    call = tight.client.generate(request(LONG_PROMPT, 8, "mid-prefill"))
    scheduler = tight.engine.scheduler

    def prefilling():  # the engine keys requests by ids of its own: find it as the only one
        unfinished = list(scheduler.requests.values())
        return len(unfinished) == 1 and 0 < unfinished[0].num_computed_tokens < len(LONG_PROMPT) // 2

    wait_until(prefilling)
    assert blocks_used(tight) > 0
    steps = tight.engine.stats().num_steps
    call.cancel()
    assert_back_to_baseline(tight, steps, aborted)
    assert tight.scrape()["pagedserve_request_errors_total"][(("code", "CANCELLED"), ("method", "Generate"))] >= 1
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED


@pytest.mark.slow
def test_cancel_mid_decode_frees_blocks(tight):
    aborted = num_aborted(tight)
    call = tight.client.generate(request(LONG_PROMPT[:20], 60, "mid-decode"))
    first, second = next(call), next(call)
    assert first.token_ids and second.token_ids and blocks_used(tight) > 0
    steps = tight.engine.stats().num_steps
    call.cancel()
    assert_back_to_baseline(tight, steps, aborted)


@pytest.mark.slow
def test_waiting_request_cancel_deadline_queue_full_and_abort(tight):
    aborted = num_aborted(tight)
    running = tight.client.generate(request(LONG_PROMPT[:20], 900, "runner"))  # seconds of decode
    next(running)  # admitted and decoding: it holds the only sequence slot
    waiting = tight.client.generate(request(LONG_PROMPT[:30], 4, "waiter"))
    wait_until(lambda: tight.engine.stats().num_waiting == 1)

    # The waiting queue (1) is full.
    error = rpc_error(lambda: tight.client.generate(request([1, 2, 3], 4, "no-room")))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "waiting queue is full (1 requests)" in error.details()

    waiting.cancel()
    wait_until(lambda: tight.engine.stats().num_waiting == 0 and num_aborted(tight) == aborted + 1)

    # A deadline that passes while waiting: the request is aborted and never starts.
    queried = tight.engine.stats().num_prefix_queried_tokens
    error = rpc_error(lambda: tight.client.generate(request(LONG_PROMPT[:40], 4, "late"), timeout=0.5))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: tight.engine.stats().num_waiting == 0 and num_aborted(tight) == aborted + 2)
    assert tight.engine.stats().num_prefix_queried_tokens == queried  # never admitted
    assert tight.engine.stats().num_running == 1
    errors = tight.scrape()["pagedserve_request_errors_total"]
    assert errors[(("code", "DEADLINE_EXCEEDED"), ("method", "Generate"))] == 1

    # Abort from another call ends the running stream with finish reason ABORT.
    steps = tight.engine.stats().num_steps
    assert tight.client.abort("runner") is True
    responses = list(running)
    assert responses[-1].finish_reason == pb.FINISH_REASON_ABORT
    assert responses[-1].usage.prompt_tokens == 20
    assert tight.client.abort("runner") is False
    assert_back_to_baseline(tight, steps, aborted + 2)


@pytest.mark.slow
def test_deadline_passing_mid_decode_is_counted_once_as_deadline_exceeded(tight):
    def errors(code: str) -> float:
        return tight.scrape()["pagedserve_request_errors_total"].get((("code", code), ("method", "Generate")), 0)

    deadline_before, cancelled_before = errors("DEADLINE_EXCEEDED"), errors("CANCELLED")
    aborted = num_aborted(tight)
    call = tight.client.generate(request(LONG_PROMPT[:20], 900, "short-deadline"), timeout=2.0)
    assert next(call).token_ids  # decoding when the deadline strikes (900 tokens take far longer)
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: blocks_used(tight) == 0 and num_aborted(tight) == aborted + 1)
    wait_until(lambda: errors("DEADLINE_EXCEEDED") == deadline_before + 1)
    assert errors("CANCELLED") == cancelled_before
