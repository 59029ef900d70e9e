"""Stopping the server drains the HTTP front too: an open stream finishes, new calls get 503."""

from __future__ import annotations

import httpx

from tests.service.conftest import test_options, wait_until
from tests.service.http.conftest import base_url


def test_stop_lets_an_open_http_stream_finish_and_refuses_new_calls(start_server):
    server = start_server(test_options(max_tokens_limit=900))
    url = base_url(server)
    body = {"prompt": [1, 504, 3458], "max_tokens": 24, "ignore_eos": True, "temperature": 0, "stream": True}
    with httpx.Client(timeout=600) as http:
        with http.stream("POST", url + "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            stopping = server.submit(server.server.stop(60.0))
            wait_until(lambda: server.server.servicer.draining)
            with httpx.Client(timeout=60) as other:  # a new connection while draining
                refused = other.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
                health = other.get(url + "/health")
            rest = [line for line in lines if line.startswith("data: ")]
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    assert health.status_code == 503
    assert rest[-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in rest[-2]
    stopping.result(60)
    assert not server.server.async_engine.is_running
