"""The HTTP front tokenizes text and chat input in the tokenizer threads, never on the event loop
that both fronts share: health checks (HTTP and gRPC) answer while long prompts tokenize."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.error
import urllib.request

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.service.http.conftest import base_url, openai_client
from tests.service.test_hardening import GatedTokenizer

SERVING = health_pb2.HealthCheckResponse.SERVING


def _post(served, path: str, body: dict) -> dict:
    request = urllib.request.Request(base_url(served) + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=120).read())


def _health_answers_while_held(served, gate: GatedTokenizer, calls: list) -> None:
    """With `calls` all held inside the tokenizer, both fronts' health checks answer."""
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            for _ in calls:
                assert gate.started.acquire(timeout=60)  # tokenizing now (held at the gate)
            grpc_health = health_pb2_grpc.HealthStub(served.client.channel)
            for _ in range(5):  # a timeout on each check: a blocked event loop fails the test
                assert grpc_health.Check(health_pb2.HealthCheckRequest(), timeout=2.0).status == SERVING
                with urllib.request.urlopen(base_url(served) + "/health", timeout=2.0) as reply:
                    assert reply.status == 200
        finally:
            gate.release.set()
        for future in futures:
            future.result(120)
    assert gate.outcomes == ["done"] * len(calls)


def test_completion_and_chat_tokenize_off_the_event_loop(served, monkeypatch):
    gate = GatedTokenizer(served.server.async_engine.tokenizer, monkeypatch)
    client = openai_client(served)
    model = client.models.list().data[0].id
    text = "A prompt long enough to be worth tokenizing elsewhere. " * 20
    _health_answers_while_held(served, gate, [
        lambda: client.completions.create(model=model, prompt=text, max_tokens=1),
        lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               max_tokens=1),
    ])


def test_tokenize_endpoint_tokenizes_off_the_event_loop(served, monkeypatch):
    gate = GatedTokenizer(served.server.async_engine.tokenizer, monkeypatch)
    results = []
    _health_answers_while_held(served, gate, [
        lambda: results.append(_post(served, "/tokenize", {"prompt": "Hello world"})),
        lambda: results.append(_post(served, "/tokenize", {"messages": [{"role": "user", "content": "Hi"}]})),
    ])
    by_kind = sorted(results, key=lambda r: r["count"])
    assert by_kind[0]["tokens"] == [19556, 905]  # "Hello world", as `pagedserve tokenize` gives
    assert by_kind[1]["count"] > 2


def test_tokenize_endpoint_refuses_input_larger_than_any_prompt(served):
    """As every other way in: input no prompt could be is refused before anything tokenizes it."""
    too_big = "%" * (served.server.servicer.backend.limits.max_input_bytes + 1)
    for body in ({"prompt": too_big}, {"messages": [{"role": "user", "content": too_big}]}):
        try:
            _post(served, "/tokenize", body)
        except urllib.error.HTTPError as e:
            assert e.code == 400
            error = json.loads(e.read())["error"]
            assert error["param"] == next(iter(body)) and "bytes" in error["message"]
        else:
            raise AssertionError("accepted")
