"""Random requests and random bytes against an in-process server: every one ends with success or
a deliberate status (never INTERNAL or UNKNOWN), health stays SERVING, and no KV block is left."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from tests.service.conftest import rpc_error, test_options, wait_until

UNEXPECTED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def small(start_server):
    """Short prompts and outputs, so the accepted requests finish quickly."""
    return start_server(test_options(max_tokens_limit=4, max_prompt_tokens=32), num_kv_blocks=64)


def checked_call(server, call) -> None:
    """Run `call`; it may fail, but only with a status the server chose, and health stays SERVING."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    except grpc.RpcError as e:
        assert e.code() not in UNEXPECTED, (e.code(), e.details())
    assert server.health() == health_pb2.HealthCheckResponse.SERVING


floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
small_text = st.text(max_size=40)
chats = st.builds(lambda turns, opt_in: pb.ChatMessages(
    messages=[pb.ChatMessage(role=r, content=c) for r, c in turns], allow_special_tokens_in_content=opt_in),
    st.lists(st.tuples(st.sampled_from(["user", "assistant", "system", "", "tool"]) | small_text, small_text),
             max_size=3),
    st.booleans())


@st.composite
def generate_requests(draw) -> pb.GenerateRequest:
    request = pb.GenerateRequest(request_id=draw(st.text(max_size=140) | st.sampled_from(["", "fuzz"])),
                                 logprobs=draw(st.integers(-3, 25)), priority=draw(st.integers(-2**31, 2**31 - 1)))
    kind = draw(st.sampled_from(["text", "token_ids", "chat", None]))
    if kind == "text":
        request.text = draw(st.text(max_size=120) | st.sampled_from(["<|im_start|>", "!" * 300, "\u00e9\U0001f600"]))
    elif kind == "token_ids":
        request.token_ids.ids.extend(draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 600), max_size=40)))
    elif kind == "chat":
        request.chat.CopyFrom(draw(chats))
    s = request.sampling
    for name in ("temperature", "top_p", "repetition_penalty"):
        if draw(st.booleans()):
            setattr(s, name, draw(floats))
    s.min_p, s.presence_penalty, s.frequency_penalty = draw(floats), draw(floats), draw(floats)
    s.top_k = draw(st.integers(-3, 2**31 - 1))
    if draw(st.booleans()):
        s.seed = draw(st.integers(0, 2**64 - 1))
    t = request.stopping
    if draw(st.booleans()):
        t.max_tokens = draw(st.integers(-2**31, 2**31 - 1) | st.integers(-1, 6))
    t.stop.extend(draw(st.lists(small_text, max_size=3)))
    t.stop_token_ids.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=3)))
    t.ignore_eos = draw(st.booleans())
    return request


@FUZZ
@given(request=generate_requests())
def test_fuzzed_generate_requests(small, request):
    checked_call(small, lambda: small.client.generate(request, timeout=60))


def identity(data: bytes) -> bytes:
    return data


@FUZZ
@given(method=st.sampled_from(["Generate", "Tokenize", "Detokenize", "ModelInfo", "Abort"]),
       data=st.binary(max_size=80))
def test_fuzzed_raw_bytes(small, method, data):
    path = f"/pagedserve.v1.PagedServe/{method}"
    channel = small.client.channel
    if method == "Generate":
        call = channel.unary_stream(path, request_serializer=identity, response_deserializer=identity)
    else:
        call = channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)
    checked_call(small, lambda: call(data, timeout=60))


def test_no_kv_blocks_left_and_prompt_limit_enforced(small):
    error = rpc_error(lambda: small.client.generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[5] * 33))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("token_ids: the prompt has 33 tokens, at most max_prompt_tokens=32 allowed "
                               "(the server's --max-prompt-tokens)")
    assert small.client.model_info().limits.max_prompt_tokens == 32
    wait_until(lambda: small.engine.stats().num_blocks_used_all_groups == 0)
    stats = small.engine.stats()
    assert stats.num_running == 0 and stats.num_waiting == 0
