"""Every bad input gets its status code and a message naming the field and the limit; the server
stays SERVING, and an engine failure ends only the requests it touched."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2_grpc as pb_grpc
from tests.service.conftest import rpc_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def gen(stopping=None, sampling=None, **fields) -> pb.GenerateRequest:
    if not {"text", "token_ids", "chat"} & fields.keys():
        fields["token_ids"] = pb.TokenIds(ids=[1, 2, 3])
    return pb.GenerateRequest(stopping=stopping or pb.StoppingOptions(max_tokens=2),
                              sampling=sampling or pb.SamplingOptions(temperature=0), **fields)


S, T = pb.SamplingOptions, pb.StoppingOptions
BAD_REQUESTS = {
    "no input": (pb.GenerateRequest(), "input: give one of text, token_ids or chat"),
    "empty text": (gen(text=""), "text: the prompt text is empty"),
    "empty ids": (gen(token_ids=pb.TokenIds()), "token_ids.ids: the prompt has no token ids"),
    "unknown id": (gen(token_ids=pb.TokenIds(ids=[1, 49152])),
                   "token_ids.ids[1]: token id 49152 is not in the vocabulary (0..49151)"),
    "max_tokens 0": (gen(stopping=T(max_tokens=0)), "stopping.max_tokens: must be in [1, 64]"),
    "max_tokens over limit": (gen(stopping=T(max_tokens=65)), "(the server's --max-tokens-limit), got 65"),
    "temperature < 0": (gen(sampling=S(temperature=-0.5)), "sampling.temperature: must be >= 0 (0 = greedy), got -0.5"),
    "top_p 0": (gen(sampling=S(top_p=0.0)), "sampling.top_p: must be in (0, 1], got 0.0"),
    "top_p > 1": (gen(sampling=S(top_p=1.5)), "sampling.top_p: must be in (0, 1], got 1.5"),
    "top_k < 0": (gen(sampling=S(top_k=-1)), "sampling.top_k: must be >= 0 (0 = off), got -1"),
    "min_p > 1": (gen(sampling=S(min_p=2.0)), "sampling.min_p: must be in [0, 1], got 2.0"),
    "repetition 0": (gen(sampling=S(repetition_penalty=0.0)), "sampling.repetition_penalty: must be > 0"),
    "presence > 2": (gen(sampling=S(presence_penalty=3.0)), "sampling.presence_penalty: must be in [-2, 2]"),
    "17 stops": (gen(stopping=T(max_tokens=2, stop=[f"s{i}" for i in range(17)])),
                 "stopping.stop: 17 stop strings, at most 16 allowed"),
    "long stop": (gen(stopping=T(max_tokens=2, stop=["x" * 257])),
                  "stopping.stop[0]: the stop string has 257 characters, at most 256 allowed"),
    "empty stop": (gen(stopping=T(max_tokens=2, stop=["ok", ""])), "stopping.stop[1]: the stop string is empty"),
    "unknown stop id": (gen(stopping=T(max_tokens=2, stop_token_ids=[2, 60000])),
                        "stopping.stop_token_ids[1]: token id 60000 is not in the vocabulary"),
    "logprobs 21": (gen(logprobs=21), "logprobs: must be in [0, 20], got 21"),
    "prompt over context": (gen(token_ids=pb.TokenIds(ids=[5] * 8192)),
                            "token_ids: the prompt has 8192 tokens; the context holds max_model_len=8192, so at "
                            "most 8191 leave room"),
    "prompt + max_tokens over context": (gen(token_ids=pb.TokenIds(ids=[5] * 8150), stopping=T(max_tokens=50)),
                                         "the prompt (8150 tokens) plus max_tokens (50) exceeds max_model_len=8192"),
    "prompt over the KV cache": (gen(token_ids=pb.TokenIds(ids=[5] * 5000)),
                                 "the whole cache has 255 blocks of 16 tokens"),
    "no chat messages": (gen(chat=pb.ChatMessages()), "chat.messages: at least one message is needed"),
    "empty chat role": (gen(chat=pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="hi"),
                                                           pb.ChatMessage(content="x")])),
                        "chat.messages[1].role: the role is empty"),
    "long request id": (gen(request_id="r" * 129), "request_id: has 129 characters, at most 128 allowed"),
    "newline in request id": (gen(request_id="a\nforged log line"),
                              "request_id: character 1 is '\\n'; only printable ASCII"),
    "control char in request id": (gen(request_id="a\x1b[2J"), "request_id: character 1 is '\\x1b'"),
    "temperature inf": (gen(sampling=S(temperature=float("inf"))), "sampling.temperature: must be a finite number"),
    "temperature nan": (gen(sampling=S(temperature=float("nan"))), "sampling.temperature: must be a finite number"),
    "repetition inf": (gen(sampling=S(repetition_penalty=float("inf"))),
                       "sampling.repetition_penalty: must be a finite number"),
    "min_p -inf": (gen(sampling=S(min_p=float("-inf"))), "sampling.min_p: must be a finite number"),
    "text larger than any prompt": (gen(text="ab" * (8192 * 64) + "c"),
                                    "text: the input has 1048577 bytes; no prompt that fits max_model_len=8192 "
                                    "tokens is longer than 1048576 bytes"),
    "speculative k with auto": (gen(speculative=pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_AUTO, num_draft_tokens=3)),
                                "speculative.num_draft_tokens: only SPECULATIVE_MODE_FIXED takes a number of draft tokens"),
    "speculative fixed 0": (gen(speculative=pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_FIXED)),
                            "speculative.num_draft_tokens: must be in [1, 16] with SPECULATIVE_MODE_FIXED, got 0"),
    "speculative fixed 17": (gen(speculative=pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_FIXED, num_draft_tokens=17)),
                             "speculative.num_draft_tokens: must be in [1, 16] with SPECULATIVE_MODE_FIXED, got 17"),
    "speculative unknown mode": (gen(speculative=pb.SpeculativeOptions(mode=9)), "speculative.mode: unknown mode 9"),
    "chat larger than any prompt": (gen(chat=pb.ChatMessages(messages=[
                                        pb.ChatMessage(role="user", content="\u00e9" * (8192 * 64 + 1))])),
                                    "chat: the input has 1048582 bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_generate_request(served, case):
    request, message = BAD_REQUESTS[case]
    error = rpc_error(lambda: served.client.generate(request))
    assert error.code() == INVALID, error.details()
    assert message in error.details()
    assert served.health() == health_pb2.HealthCheckResponse.SERVING


def test_bad_unary_requests_and_server_still_serves(served):
    error = rpc_error(lambda: served.client.stub.Tokenize(pb.TokenizeRequest()))
    assert error.code() == INVALID and "input: give one of text or chat" in error.details()
    error = rpc_error(lambda: served.client.detokenize([3, 49152]))
    assert error.code() == INVALID and "token_ids[1]: token id 49152" in error.details()
    error = rpc_error(lambda: served.client.abort(""))
    assert error.code() == INVALID and "request_id" in error.details()
    assert served.client.abort("never-seen") is False
    responses = list(served.client.generate(gen()))
    assert responses[-1].usage.completion_tokens == 2
    assert served.health() == health_pb2.HealthCheckResponse.SERVING
    errors = served.scrape()["pagedserve_request_errors_total"]
    assert errors[(("code", "INVALID_ARGUMENT"), ("method", "Detokenize"))] >= 1


def test_request_id_in_use_is_already_exists(served):
    first = served.client.generate(gen(request_id="dup", stopping=T(max_tokens=30, ignore_eos=True)))
    next(first)
    error = rpc_error(lambda: served.client.generate(gen(request_id="dup")))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request id 'dup' is already in use" in error.details()
    first.cancel()


def test_request_ids_belong_to_their_caller(served):
    """Another connection (peer) may use the same id, and cannot abort this one's request."""
    # channels of one process share connections unless told not to: this one gets its own
    with grpc.insecure_channel(served.address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
        other = pb_grpc.PagedServeStub(channel)
        mine = served.client.generate(gen(request_id="shared", stopping=T(max_tokens=60, ignore_eos=True)))
        first = next(mine)
        theirs = list(other.Generate(gen(request_id="shared", stopping=T(max_tokens=3, ignore_eos=True))))
        assert theirs[-1].finish_reason == pb.FINISH_REASON_LENGTH and theirs[-1].request_id == "shared"
        theirs = other.Generate(gen(request_id="mine-only", stopping=T(max_tokens=3, ignore_eos=True)))
        for request_id in ("shared", "mine-only-never-seen"):  # taken by `mine` or by nobody: same answer
            error = rpc_error(lambda: other.Abort(pb.AbortRequest(request_id=request_id)))
            assert error.code() == grpc.StatusCode.NOT_FOUND
            assert error.details() == f"request_id: this caller has no unfinished request {request_id!r}"
        assert list(theirs)[-1].finish_reason == pb.FINISH_REASON_LENGTH
        rest = list(mine)
    assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
    assert len(first.token_ids) + sum(len(r.token_ids) for r in rest) == 60
    assert {first.request_id} | {r.request_id for r in rest} == {"shared"}


def test_runner_failure_is_internal_for_that_request_only(served, monkeypatch):
    runner = served.engine.runner
    real_execute = runner.execute
    calls = []

    def fail_once(scheduler_output):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected runner failure")
        return real_execute(scheduler_output)

    monkeypatch.setattr(runner, "execute", fail_once)
    error = rpc_error(lambda: served.client.generate(gen(request_id="doomed")))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "doomed" in error.details()
    assert list(served.client.generate(gen()))[-1].usage.completion_tokens == 2
    assert served.engine.stats().num_blocks_used_all_groups == 0


def test_step_failure_outside_runner_fails_open_requests_and_loop_goes_on(served, monkeypatch):
    scheduler = served.engine.scheduler
    real_schedule = scheduler.schedule
    calls = []

    def fail_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected scheduler failure")
        return real_schedule()

    monkeypatch.setattr(scheduler, "schedule", fail_once)
    error = rpc_error(lambda: served.client.generate(gen(request_id="unlucky")))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "unlucky" in error.details()
    assert list(served.client.generate(gen()))[-1].usage.completion_tokens == 2
    assert served.engine.stats().num_blocks_used_all_groups == 0
    assert served.health() == health_pb2.HealthCheckResponse.SERVING
