"""Bodies as a gateway re-serialises them: SMG adds `"logprobs": false` and `"echo": false` to
every request it forwards. They must mean "no logprobs" and "no echo", not a 400 and not logprobs."""

from __future__ import annotations

import httpx

from tests.service.http.conftest import base_url

PROMPT = "The capital of France is"


def post(served, path: str, body: dict) -> httpx.Response:
    with httpx.Client(timeout=600) as http:
        return http.post(base_url(served) + path, json=body)


def test_completion_with_logprobs_false_is_the_plain_completion(served):
    plain = post(served, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6, "temperature": 0})
    forwarded = post(served, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6, "temperature": 0,
                                                 "logprobs": False, "echo": False})
    assert plain.status_code == forwarded.status_code == 200, forwarded.text
    (a,), (b,) = plain.json()["choices"], forwarded.json()["choices"]
    assert b["logprobs"] is None and a["logprobs"] is None
    assert b["text"] == a["text"] and not b["text"].startswith(PROMPT)


def test_completion_with_logprobs_zero_still_returns_the_sampled_logprob(served):
    response = post(served, "/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "temperature": 0, "logprobs": 0})
    assert response.status_code == 200
    logprobs = response.json()["choices"][0]["logprobs"]
    # logprobs 0: no alternatives, only the sampled token itself (OpenAI's "up to logprobs + 1" entries)
    assert len(logprobs["token_logprobs"]) == 3
    assert [list(top) for top in logprobs["top_logprobs"]] == [[t] for t in logprobs["tokens"]]


def test_completion_with_logprobs_true_is_refused_naming_the_field(served):
    response = post(served, "/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "logprobs": True})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "logprobs" and "logprobs" in error["message"]


def test_streamed_chat_with_gateway_fields(served):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0,
            "logprobs": False, "echo": False, "stream": True}
    with httpx.Client(timeout=600) as http:
        with http.stream("POST", base_url(served) + "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) >= 3
