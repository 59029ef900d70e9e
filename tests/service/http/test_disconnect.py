"""A client that goes away mid-stream aborts its request: its KV blocks are free right after."""

from __future__ import annotations

import json
import socket

import httpx

from tests.service.conftest import test_options, wait_until
from tests.service.http.conftest import base_url


def test_disconnect_mid_stream_aborts_and_frees_blocks(start_server):
    server = start_server(test_options(max_tokens_limit=900), num_kv_blocks=64)
    stats = server.engine.stats
    aborted_before = stats().num_finished_by_reason.get("abort", 0)
    body = {"prompt": [1] + [300 + i for i in range(40)], "max_tokens": 900, "ignore_eos": True,
            "temperature": 0, "stream": True}
    with httpx.Client(timeout=600) as http:
        with http.stream("POST", base_url(server) + "/v1/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert '"text_completion"' in first
            assert stats().num_blocks_used_all_groups > 0 and stats().num_running == 1
        # leaving the block closes the connection mid-stream
    wait_until(lambda: stats().num_blocks_used_all_groups == 0, timeout=60)
    wait_until(lambda: stats().num_finished_by_reason.get("abort", 0) == aborted_before + 1, timeout=60)
    assert stats().num_running == 0 and stats().num_waiting == 0
    assert server.server.async_engine.num_active_streams == 0
    server.close()


def test_disconnect_of_n_choices_aborts_every_choice(start_server):
    server = start_server(test_options(max_tokens_limit=900), num_kv_blocks=64)
    stats = server.engine.stats
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 900,
            "ignore_eos": True, "n": 3, "stream": True}
    with httpx.Client(timeout=600) as http:
        with http.stream("POST", base_url(server) + "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            next(line for line in response.iter_lines() if line.startswith("data: "))
    wait_until(lambda: stats().num_blocks_used_all_groups == 0, timeout=60)
    wait_until(lambda: server.server.async_engine.num_active_streams == 0, timeout=60)
    server.close()


def test_disconnect_while_waiting_for_a_whole_response_aborts(start_server):
    server = start_server(test_options(max_tokens_limit=900), num_kv_blocks=64)
    stats = server.engine.stats
    aborted_before = stats().num_finished_by_reason.get("abort", 0)
    body = json.dumps({"prompt": [1, 504, 3458], "max_tokens": 900, "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: stats().num_running == 1 and stats().num_blocks_used_all_groups > 0, timeout=120)
    wait_until(lambda: stats().num_finished_by_reason.get("abort", 0) == aborted_before + 1, timeout=60)
    wait_until(lambda: stats().num_blocks_used_all_groups == 0, timeout=60)
    assert server.server.async_engine.num_active_streams == 0
    server.close()
