"""200 malformed bodies (seeded): every one gets a 4xx OpenAI error with a message, never a 500,
and the server stays healthy."""

from __future__ import annotations

import json
import random

import httpx

from tests.service.http.conftest import base_url

ENDPOINTS = ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"]
FIELDS = ["prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
          "seed", "stop", "n", "logprobs", "top_logprobs", "echo", "stream", "stream_options", "presence_penalty",
          "frequency_penalty", "repetition_penalty", "ignore_eos", "tokens", "stop_token_ids", "model"]
ODD_VALUES = [None, True, -1, 0, 10**30, -10**30, 1e308, -1e308, 1.5, "", "x" * 5000, "\udcff", [], {}, [None],
              [[1]], {"a": 1}, [-1], [2**64], ["a"] * 100, [{"role": 1}], [{"role": "user", "content": 5}],
              [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], {"include_usage": "yes"}]
RAW_BODIES = [b"", b"{", b"[1, 2]", b"null", b"42", b'"text"', b"\xff\xfe\x00garbage", b'{"prompt": "\xc3\x28"}',
              b'{"prompt": 1e999}', b'{"prompt": "a", "max_tokens": ' + b"9" * 5000 + b"}", b"{" * 10000,
              b'{"messages": [{"role": "user", "content": "hi"}], "n": NaN}', b'{"prompt": "hi", "temperature": Infinity}']


def malformed_bodies(seed: int = 15, count: int = 200) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    bodies = []
    while len(bodies) < count:
        endpoint = rng.choice(ENDPOINTS)
        if rng.random() < 0.15:
            bodies.append((endpoint, rng.choice(RAW_BODIES)))
            continue
        body = {}
        if rng.random() < 0.6:  # a valid core with odd extras, or nothing valid at all
            body = {"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}], "tokens": [1, 2]}
        for _ in range(rng.randint(1, 4)):
            body[rng.choice(FIELDS)] = rng.choice(ODD_VALUES)
        raw = json.dumps(body).encode("utf-8", "surrogatepass")
        bodies.append((endpoint, raw))
    return bodies


def test_malformed_bodies_get_4xx_with_a_message(served):
    url = base_url(served)
    statuses = []
    with httpx.Client(timeout=600) as http:
        for endpoint, raw in malformed_bodies():
            response = http.post(url + endpoint, content=raw, headers={"content-type": "application/json"})
            # a body that happens to be valid may succeed; anything else must be a client error
            assert response.status_code < 500, (endpoint, raw[:200], response.text[:500])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"], (endpoint, raw[:200])
            statuses.append(response.status_code)
        assert statuses.count(400) >= 150  # the generator does produce mostly bad bodies
        assert http.get(url + "/health").status_code == 200
    errors = served.scrape()["pagedserve_http_requests_total"]
    assert all(not status.startswith("5") for (_, (_, status)) in errors)
