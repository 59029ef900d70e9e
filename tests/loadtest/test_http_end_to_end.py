"""loadtest's OpenAI target drives pagedserve's own HTTP front: a short run with exact counts."""

from __future__ import annotations

import json

import pytest

from pagedserve.loadtest.cli import main
from tests.service.conftest import ServerThread, test_options


@pytest.fixture(scope="module")
def served(make_engine, smollm2_model):
    server = ServerThread(test_options(), make_engine(), smollm2_model)
    yield server
    server.close()


def test_openai_target_over_pagedserve_http(served, tmp_path):
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{served.server.http_port}"
    code = main(["--target", "openai", "--url", url, "--concurrency", "2", "--num-requests", "3",
                 "--input-len", "16", "--output-len", "8", "--ignore-eos", "--prompt-format", "ids",
                 "--warmup", "1", "--out-dir", str(out), "--no-plots", "--no-progress",
                 "--metrics-url", url + "/metrics", "--metrics-interval", "0.2"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["meta"]["server"]["target"] == "openai"
    assert result["meta"]["server"]["model"] == served.client.model_info().model_name
    (level,) = result["levels"]
    s = level["summary"]
    assert (s["num_requests"], s["completed"], s["failed"], s["errors"]) == (3, 3, 0, {})
    assert s["output_tokens"] == 24 and s["input_tokens"] == 48  # token-id prompts of exact length
    for r in level["requests"]:
        assert r["output_tokens_source"] == "usage" and r["finish_reason"] == "length"
    assert result["meta"]["metrics"]["scrape_errors"] == 0
