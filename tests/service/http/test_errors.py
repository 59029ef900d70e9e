"""Refusals over HTTP: OpenAI error bodies with the right status, raised as the SDK's typed errors."""

from __future__ import annotations

import grpc
import httpx
import openai
import pytest

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2_grpc as pb_grpc
from tests.service.conftest import ServerThread, rpc_error, test_options, wait_until
from tests.service.http.conftest import base_url, openai_client


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("changes, param, words", [
    ({"temperature": -1}, "temperature", "must be >= 0"),
    ({"top_p": 0}, "top_p", "(0, 1]"),
    ({"max_tokens": 100000}, "max_tokens", "max-tokens-limit"),
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"logprobs": 99}, "logprobs", "[0, 20]"),
    ({"n": 0}, "n", "[1, 16]"),
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": [1, 99999999]}, "prompt[1]", "not in the vocabulary"),
    ({"stop": [""]}, "stop[0]", "empty"),
    ({"seed": -3}, "seed", ">= 0"),
    ({"presence_penalty": 5}, "presence_penalty", "[-2, 2]"),
])
def test_bad_completion_is_bad_request_naming_the_field(client, model_name, served, changes, param, words):
    args = {"model": model_name, "prompt": "Hi", "max_tokens": 2, **changes}
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(**args)
    assert info.value.status_code == 400
    body = info.value.body
    assert body["param"] == param and words in body["message"] and body["type"] == "invalid_request_error"
    assert httpx.get(base_url(served) + "/health").status_code == 200


def test_bad_chat_names_the_field(client, model_name):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, messages=[{"role": "", "content": "x"}])
    assert info.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, messages=[])
    assert info.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "x"}],
                                       max_completion_tokens=100000)
    assert info.value.body["param"] == "max_completion_tokens"


def test_unknown_model_is_not_found_and_unknown_fields_are_ignored(client, model_name, served):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="Hi", max_tokens=2)
    response = httpx.post(base_url(served) + "/v1/completions", timeout=600,
                          json={"prompt": "Hi", "max_tokens": 2, "best_of_everything": [1, {"x": None}],
                                "user": "me", "suffix": None})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 2


def test_tokenize_detokenize_and_models(served, smollm2_model, model_name):
    url, tokenizer = base_url(served), smollm2_model.tokenizer
    tokens = httpx.post(url + "/tokenize", json={"prompt": "Hello world"}).json()
    assert tokens["tokens"] == tokenizer.encode("Hello world") and tokens["count"] == len(tokens["tokens"])
    chat = httpx.post(url + "/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    want = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}]), add_special=False)
    assert chat["tokens"] == want
    assert httpx.post(url + "/detokenize", json={"tokens": tokens["tokens"]}).json()["prompt"] == \
        tokenizer.decode(tokens["tokens"])
    bad = httpx.post(url + "/detokenize", json={"tokens": [1, 10**6]})
    assert bad.status_code == 400 and error_of(bad)["param"] == "tokens[1]"
    models = httpx.get(url + "/v1/models").json()
    assert models["data"][0]["id"] == model_name and models["data"][0]["max_model_len"] > 0


def test_queue_full_is_rate_limit_error(start_server):
    # one running sequence, one waiting slot: two long gRPC streams fill both, the next call is refused
    server = start_server(test_options(max_tokens_limit=900), max_num_seqs=1, max_waiting=1, num_kv_blocks=64)
    long = lambda rid: pb.GenerateRequest(request_id=rid, token_ids=pb.TokenIds(ids=[1, 504, 3458]),
                                          sampling=pb.SamplingOptions(temperature=0.0),
                                          stopping=pb.StoppingOptions(max_tokens=900, ignore_eos=True))
    running = server.client.generate(long("running"))
    next(running)
    waiting = server.client.generate(long("waiting"))
    wait_until(lambda: server.engine.stats().num_waiting == 1)
    try:
        with pytest.raises(openai.RateLimitError) as info:
            openai_client(server).completions.create(model=None, prompt="Hi", max_tokens=2)
        assert info.value.status_code == 429 and info.value.body["code"] == "queue_full"
    finally:
        running.cancel()
        waiting.cancel()
    server.close()


def test_warming_up_and_draining_are_503(start_server, smollm2_model):
    warming = ServerThread(test_options())  # no engine attached: warming up
    try:
        health = httpx.get(base_url(warming) + "/health")
        assert health.status_code == 503 and "warming up" in error_of(health)["message"]
        with pytest.raises(openai.InternalServerError) as info:
            openai_client(warming).completions.create(model="m", prompt="Hi", max_tokens=2)
        assert info.value.status_code == 503
        assert httpx.get(base_url(warming) + "/metrics").status_code == 200  # metrics answer while warming
    finally:
        warming.close()
    server = start_server()
    server.server.servicer.draining = True  # as `stop` sets it before draining the streams
    try:
        health = httpx.get(base_url(server) + "/health")
        assert health.status_code == 503 and "shutting down" in error_of(health)["message"]
    finally:
        server.server.servicer.draining = False
        server.close()


def test_api_key_guards_both_fronts_but_not_health_or_metrics(start_server, model_name):
    server = start_server(test_options(api_key="s3cret"))
    url = base_url(server)
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            openai_client(server, api_key="wrong").completions.create(model=model_name, prompt="Hi", max_tokens=2)
        assert info.value.status_code == 401 and info.value.body["type"] == "authentication_error"
        assert httpx.post(url + "/tokenize", json={"prompt": "x"}).status_code == 401
        result = openai_client(server, api_key="s3cret").completions.create(model=model_name, prompt="Hi",
                                                                             max_tokens=2)
        assert result.usage.completion_tokens == 2
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 200
        # gRPC: the same key as metadata; health stays open
        error = rpc_error(lambda: server.client.tokenize("Hi"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = rpc_error(lambda: server.client.generate(server.client.build_request("Hi", max_tokens=2)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = server.client.stub.Tokenize(pb.TokenizeRequest(text="Hi"), metadata=[("authorization", "Bearer s3cret")])
        assert list(ok.token_ids)
        assert server.health() == 1  # SERVING
        # with keys on, request ids belong to the key: another connection with the key reaches them
        key = [("authorization", "Bearer s3cret")]
        long = server.client.build_request([1, 504, 3458], max_tokens=60, ignore_eos=True, request_id="keyed")
        mine = server.client.stub.Generate(long, metadata=key)
        next(mine)
        with grpc.insecure_channel(server.address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            other = pb_grpc.PagedServeStub(channel)
            assert other.Abort(pb.AbortRequest(request_id="keyed"), metadata=key).aborted is True
        assert list(mine)[-1].finish_reason == pb.FINISH_REASON_ABORT
        statuses = server.scrape()["pagedserve_http_requests_total"]
        assert statuses[(("endpoint", "/v1/completions"), ("status", "401"))] == 1
        assert statuses[(("endpoint", "/v1/completions"), ("status", "200"))] == 1
    finally:
        server.close()
