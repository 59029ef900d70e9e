"""The whole tool against a real in-process pagedserve server: a short sweep (concurrency 1, 2;
3 requests of 8 tokens each), its JSON / Markdown / PNG outputs, and counts that add up."""

from __future__ import annotations

import json

import pytest

from pagedserve.loadtest.cli import main
from tests.service.conftest import ServerThread, test_options


@pytest.fixture(scope="module")
def server(make_engine, smollm2_model):
    server = ServerThread(test_options(), make_engine(), smollm2_model)
    yield server
    server.close()


def test_short_sweep_outputs_and_counts(server, tmp_path):
    out = tmp_path / "run"
    code = main(["--address", server.address, "--concurrency", "1,2", "--num-requests", "3", "--input-len", "16",
                 "--output-len", "8", "--ignore-eos", "--warmup", "1", "--out-dir", str(out), "--no-progress",
                 "--metrics-url", f"http://127.0.0.1:{server.server.metrics_port}/metrics",
                 "--metrics-interval", "0.2", "--slo-ttft-ms", "60000"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"result.json", "summary.md", "throughput.png", "latency.png", "distributions.png",
            "kv_usage.png"} <= names
    result = json.loads((out / "result.json").read_text())
    assert result["meta"]["server"]["target"] == "grpc" and result["meta"]["prompt_format"] == "ids"
    assert [lv["label"] for lv in result["levels"]] == ["c=1", "c=2"]
    for lv in result["levels"]:
        s, requests = lv["summary"], lv["requests"]
        assert (s["num_requests"], s["completed"], s["failed"], s["errors"]) == (3, 3, 0, {})
        assert s["output_tokens"] == 24 and s["input_tokens"] == 48  # exact lengths: ids and ignore_eos
        for r in requests:
            assert r["output_tokens_source"] == "usage" and r["finish_reason"] == "length"
            assert sum(r["arrival_tokens"]) == r["output_tokens"] == 8 and r["input_tokens"] == 16
            assert 0 < r["ttft"] == r["arrivals"][0] <= r["arrivals"][-1] <= r["e2e"]
        assert s["ttft_ms"]["count"] == s["e2e_ms"]["count"] == s["tpot_ms"]["count"] == 3
        assert s["itl_ms"]["count"] == sum(len(r["arrivals"]) - 1 for r in requests)
        assert s["good_requests"] == 3
        assert s["request_throughput"] == pytest.approx(3 / s["duration_s"])
        assert lv["server"]["peak_kv_usage"] > 0 and lv["server"]["preemptions"] == 0
        assert lv["server"]["prefix_queried_tokens"] >= 48
    assert {i for lv in result["levels"] for i in (r["index"] for r in lv["requests"])} == set(range(6))
    assert result["server_samples"] and (out / "summary.md").read_text().startswith("# Load test")


def test_grounded_workload_sends_the_prompt_set_as_chats(server, tmp_path, smollm2_tokenizer):
    """The grounded prompts reach the server as chats, in the seeded order: the prompt lengths the
    server reports are those of the expected prompts under the chat template."""
    from pagedserve.loadtest.prompt_sets import grounded_prompts, seeded_order

    out = tmp_path / "grounded"
    assert main(["--address", server.address, "--workload", "grounded", "--seed", "5", "--concurrency", "2",
                 "--num-requests", "2", "--output-len", "4", "--ignore-eos", "--warmup", "0",
                 "--out-dir", str(out), "--no-progress", "--no-plots"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["meta"]["workload"]["name"] == "grounded"
    items, order = grounded_prompts(), seeded_order("grounded", 5)
    expected = [len(smollm2_tokenizer.encode_chat(list(items[order[i]].messages))) for i in range(2)]
    requests = sorted(result["levels"][0]["requests"], key=lambda r: r["index"])
    assert [r["input_tokens"] for r in requests] == expected
    assert all(r["output_tokens"] == 4 and r["error"] is None for r in requests)
