"""Markdown summary, side-by-side comparison with ratios, and PNG plots, from result documents."""

from __future__ import annotations

import os

import pytest

from pagedserve.loadtest.cli import main
from pagedserve.loadtest.report import build_result, compare_markdown, load_json, markdown, matched_levels, write_json
from pagedserve.loadtest.runner import Level, LevelResult
from pagedserve.loadtest.stats import RequestRecord, Slo

PNG = b"\x89PNG\r\n\x1a\n"


def record(i: int, ttft: float, gap: float, tokens: int = 3, error=None) -> RequestRecord:
    arrivals = [ttft + k * gap for k in range(tokens)]
    if error:
        return RequestRecord(i, start=0.1 * i, input_tokens=8, error=error)
    return RequestRecord(i, start=0.1 * i, input_tokens=8, output_tokens=tokens, ttft=ttft, e2e=arrivals[-1],
                         arrivals=arrivals, arrival_tokens=[1] * tokens, finish_reason="length")


def result(speed: float, meta_model: str = "m") -> dict:
    """Two levels; `speed` divides every time (so throughputs scale by it)."""
    levels = [LevelResult(Level("concurrency", 1), 0.0, 1.0 / speed,
                          [record(0, 0.1 / speed, 0.05 / speed), record(1, 0.2 / speed, 0.05 / speed)]),
              LevelResult(Level("concurrency", 2), 1.5 / speed, 2.0 / speed,
                          [record(2, 0.3 / speed, 0.1 / speed), record(3, 0, 0, error="RESOURCE_EXHAUSTED")],
                          server={"peak_kv_usage": 0.5, "preemptions": 2.0, "prefix_hit_rate": 0.25})]
    meta = {"started_at": "2026-01-01T00:00:00", "server": {"target": "grpc", "address": "127.0.0.1:1",
                                                            "model": meta_model},
            "workload": {"name": "synthetic", "input_len": 8, "output_len": 3, "len_dist": "fixed", "seed": 0},
            "ignore_eos": True}
    samples = [{"t": 10.0 + t, "kv_usage": u, "running": 1.0, "waiting": 0.0} for t, u in ((0.5, 0.1), (2.0, 0.5))]
    return build_result(meta, levels, Slo(ttft_ms=250), samples, run_t0=10.0)


def test_markdown_summary():
    text = markdown(result(1.0))
    assert "grpc 127.0.0.1:1, model m; workload synthetic" in text and "ignore_eos" in text
    assert "SLOs for goodput: ttft <= 250 ms." in text
    # c=1: 2 requests, 6 tokens in 1 s; both TTFTs within 250 ms.
    assert "| c=1 | 2 | 0 | 1.00 | 2.00 | 6.0 | 22.0 | 2.00 | - | - | - |" in text
    # c=2: 1 ok of 2 in 2 s; TTFT 300 ms misses the SLO; server figures shown.
    assert "| c=2 | 1 | 1 | 2.00 | 0.50 | 1.5 | 5.5 | 0.00 | 50.0% | 2 | 25.0% |" in text
    assert "| c=1 | TTFT | 2 | 150.0 | 150.0 | 190.0 | 199.0 | 200.0 |" in text
    assert "| c=2 | ITL | 2 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in text
    assert "- c=2: RESOURCE_EXHAUSTED x1" in text


def test_result_json_round_trip(tmp_path):
    doc = result(1.0)
    assert doc["server_samples"][0]["t"] == 0.5  # seconds since the run began
    assert doc["levels"][1]["started_s"] == 1.5 and len(doc["levels"][1]["requests"]) == 2
    path = str(tmp_path / "r.json")
    write_json(doc, path)
    assert load_json(path) == doc
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a loadtest result"):
        load_json(str(tmp_path / "x.json"))


def test_compare_ratios():
    a, b = result(1.0, "slow"), result(2.0, "fast")
    assert len(matched_levels(a, b)) == 2
    text = compare_markdown(a, b, "a", "b")
    assert "- a: grpc 127.0.0.1:1, model slow" in text
    assert "| c=1 | output tok/s | 6.0 | 12.0 | 2.00x |" in text
    assert "| c=1 | TTFT p50 ms | 150.0 | 75.0 | 0.50x |" in text
    assert "| c=2 | failed | 1 | 1 | 1.00x |" in text
    b["levels"] = b["levels"][1:]
    assert "c=1 |" not in compare_markdown(a, b)
    b["levels"] = []
    assert "No level appears in both results." in compare_markdown(a, b)


def test_plots_and_compare_cli(tmp_path):
    from pagedserve.loadtest.plots import plot_result

    doc = result(1.0)
    paths = plot_result(doc, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["distributions.png", "kv_usage.png", "latency.png",
                                                          "throughput.png"]
    assert all(open(p, "rb").read(8) == PNG for p in paths)
    write_json(doc, str(tmp_path / "a.json"))
    write_json(result(2.0), str(tmp_path / "b.json"))
    out = tmp_path / "cmp"
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out-dir", str(out)]) == 0
    assert "| c=2 | req/s | 0.50 | 1.00 | 2.00x |" in (out / "compare.md").read_text()
    assert (out / "compare.png").read_bytes()[:8] == PNG


def test_replicas_table_shows_each_replicas_share_and_prefix_hits():
    replicas = [{"url": "http://127.0.0.1:1/metrics", "requests_finished": 3.0, "prefix_queried_tokens": 400.0,
                 "prefix_hit_tokens": 300.0, "prefix_hit_rate": 0.75, "peak_running": 2.0, "peak_waiting": 0.0,
                 "peak_kv_usage": 0.5},
                {"url": "http://127.0.0.1:2/metrics", "requests_finished": 1.0, "prefix_queried_tokens": 100.0,
                 "prefix_hit_tokens": 0.0, "prefix_hit_rate": 0.0, "peak_running": 1.0, "peak_waiting": 0.0,
                 "peak_kv_usage": 0.25}]
    levels = [LevelResult(Level("concurrency", 1), 0.0, 1.0, [record(0, 0.1, 0.05)], replicas=replicas)]
    doc = build_result({"server": {}, "workload": {}}, levels, Slo(), [], run_t0=0.0)
    assert doc["levels"][0]["replicas"] == replicas
    text = markdown(doc)
    assert "## Replicas" in text
    rows = [line for line in text.splitlines() if line.startswith("| c=1 | http://127.0.0.1:")]
    assert rows[0].split(" | ")[2:5] == ["3", "75.0%", "400"]
    assert rows[1].split(" | ")[2:5] == ["1", "25.0%", "100"]
    assert "75.0%" in rows[0].split(" | ")[6] and rows[1].split(" | ")[6] == "0.0%"
    assert "## Replicas" not in markdown(result(1.0))  # no replicas scraped, no table
