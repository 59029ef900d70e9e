"""loadtest.soak against a real in-process server: 40 requests, a third of them cancelled and some
with short deadlines, leave no KV block in use, no INTERNAL error and the server SERVING."""

from __future__ import annotations

import json

import pytest

from pagedserve.loadtest.soak import main, make_plans
from tests.service.conftest import ServerThread, test_options, wait_until


@pytest.fixture(scope="module")
def server(make_engine, smollm2_model):
    # Fewer sequence slots than the soak's concurrency, so some requests are cut while they wait.
    server = ServerThread(test_options(), make_engine(max_num_seqs=6), smollm2_model)
    yield server
    server.close()


def test_soak_leaves_no_blocks_no_internal_errors_and_serving(server, capsys):
    metrics_url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    code = main(["--address", server.address, "--metrics-url", metrics_url, "--num-requests", "40",
                 "--concurrency", "12", "--cancel-fraction", "0.3", "--deadline-fraction", "0.1", "--seed", "0"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 0, err
    assert summary["requests"] == 40 and sum(summary["by_code"].values()) == 40
    assert set(summary["by_code"]) <= {"OK", "CANCELLED", "DEADLINE_EXCEEDED"}
    assert summary["by_code"]["OK"] >= 24 and summary["by_code"].get("CANCELLED", 0) >= 1  # 24 plain requests
    assert summary["blocks_used_after"] == 0 and summary["internal_errors"] == 0
    assert summary["serving"] is True and summary["unexpected"] == 0 and summary["elapsed_s"] > 0
    # The engine agrees: nothing left holding blocks, running or waiting.
    assert server.engine.stats().num_blocks_used_all_groups == 0
    wait_until(lambda: server.engine.stats().num_running == 0 and server.engine.stats().num_waiting == 0, 5)


def test_plans_are_seeded_with_exact_fractions():
    plans = make_plans(100, 0.3, 0.1, seed=7, vocab=49152)
    kinds = [p.kind for p in plans]
    assert kinds.count("cancel") == 30 and kinds.count("deadline") == 10
    assert all(4 <= p.max_tokens <= 32 and p.request.stopping.ignore_eos for p in plans)
    assert all(0.05 <= p.deadline <= 0.5 for p in plans if p.kind == "deadline")
    assert any(p.cancel_after for p in plans) and any(p.cancel_delay is not None for p in plans)
    again = make_plans(100, 0.3, 0.1, seed=7, vocab=49152)
    assert [p.request for p in again] == [p.request for p in plans] and [p.kind for p in again] == kinds


@pytest.mark.parametrize("args", [["--address", "10.1.2.3:50051", "--metrics-url", "http://127.0.0.1:1/metrics"],
                                  ["--address", "127.0.0.1:1", "--metrics-url", "http://192.0.2.7:9000/metrics"]])
def test_refuses_non_loopback_targets(args, capsys):
    assert main(args) == 2
    assert "refusing to load-test" in capsys.readouterr().err


@pytest.mark.slow
def test_soak_with_speculation_leaves_no_blocks(make_engine, smollm2_model, capsys):
    """The cancellation storm with speculative decoding on (drafts of every request in flight)."""
    engine = make_engine(max_num_seqs=6, speculative="ngram", num_draft_tokens=4, prompt_lookup_min=1)
    server = ServerThread(test_options(), engine, smollm2_model)
    try:
        metrics_url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
        code = main(["--address", server.address, "--metrics-url", metrics_url, "--num-requests", "30",
                     "--concurrency", "10", "--cancel-fraction", "0.4", "--deadline-fraction", "0.1", "--seed", "1"])
        out, err = capsys.readouterr()
        summary = json.loads(out)
        assert code == 0, err
        assert summary["blocks_used_after"] == 0 and summary["internal_errors"] == 0 and summary["unexpected"] == 0
        assert summary["by_code"].get("CANCELLED", 0) >= 1
        wait_until(lambda: server.engine.stats().num_running == 0 and server.engine.stats().num_waiting == 0, 5)
        stats = server.engine.stats()
        assert stats.num_blocks_used_all_groups == 0 and stats.num_draft_tokens > 0
    finally:
        server.close()
