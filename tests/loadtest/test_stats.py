"""Statistics on recorded timings against values computed by hand (numpy's linear percentiles)."""

from __future__ import annotations

import pytest

from pagedserve.loadtest.stats import RequestRecord, Slo, distribution_ms, summarize


def records() -> list[RequestRecord]:
    return [
        # 4 arrivals of 1 token: ITL 100, 100, 200 ms; TPOT (500 - 100) / 3 ms.
        RequestRecord(0, input_tokens=10, output_tokens=4, ttft=0.1, e2e=0.5, arrivals=[0.1, 0.2, 0.3, 0.5],
                      arrival_tokens=[1, 1, 1, 1]),
        # 2 arrivals, the second carrying 2 tokens: one ITL gap of 600 ms; TPOT 600 / 2 ms.
        RequestRecord(1, input_tokens=20, output_tokens=3, ttft=0.3, e2e=0.9, arrivals=[0.3, 0.9],
                      arrival_tokens=[1, 2]),
        # One output token: no TPOT, no ITL.
        RequestRecord(2, input_tokens=5, output_tokens=1, ttft=0.2, e2e=0.2, arrivals=[0.2], arrival_tokens=[1]),
        RequestRecord(3, input_tokens=7, error="RESOURCE_EXHAUSTED"),
        RequestRecord(4, input_tokens=7, output_tokens=2, ttft=0.1, e2e=0.3, arrivals=[0.1], error="UNAVAILABLE"),
    ]


def close(d: dict, **expected) -> None:
    for key, value in expected.items():
        assert d[key] == pytest.approx(value, abs=1e-9), key


def test_per_request_tpot_and_itl():
    r0, r1, r2 = records()[:3]
    assert r0.tpot == pytest.approx(0.4 / 3, abs=1e-12)
    assert r0.itls == pytest.approx([0.1, 0.1, 0.2], abs=1e-12)
    assert r1.tpot == pytest.approx(0.3, abs=1e-12) and r1.itls == pytest.approx([0.6], abs=1e-12)
    assert r2.tpot is None and r2.itls == []


def test_summary_counts_throughput_and_errors():
    s = summarize(records(), duration_s=2.0)
    assert (s["num_requests"], s["completed"], s["failed"]) == (5, 3, 2)
    assert s["errors"] == {"RESOURCE_EXHAUSTED": 1, "UNAVAILABLE": 1}
    assert (s["input_tokens"], s["output_tokens"]) == (35, 8)  # failed requests count nowhere
    close(s, request_throughput=1.5, output_throughput=4.0, total_token_throughput=21.5)
    assert s["goodput"] is None and s["good_requests"] is None


def test_latency_distributions_by_hand():
    s = summarize(records(), duration_s=2.0)
    # TTFT [100, 300, 200]: sorted [100, 200, 300]; p90 at rank 1.8 -> 200 + 0.8 * 100.
    close(s["ttft_ms"], count=3, mean=200.0, min=100.0, p50=200.0, p90=280.0, p99=298.0, max=300.0)
    # TPOT [133.33, 300]; p90 at rank 0.9 -> 133.33 + 0.9 * 166.67.
    close(s["tpot_ms"], count=2, mean=(400 / 3 + 300) / 2, p50=(400 / 3 + 300) / 2,
          p90=400 / 3 + 0.9 * (300 - 400 / 3), p99=400 / 3 + 0.99 * (300 - 400 / 3))
    # ITL pooled [100, 100, 200, 600]; p50 at rank 1.5, p90 at 2.7, p99 at 2.97.
    close(s["itl_ms"], count=4, mean=250.0, p50=150.0, p90=480.0, p99=588.0, max=600.0)
    # E2E [500, 900, 200].
    close(s["e2e_ms"], count=3, mean=1600 / 3, p50=500.0, p90=820.0, p99=892.0)


def test_goodput_under_slos():
    # r0 meets both; r1 misses TTFT; r2 has one token, so TPOT counts as 0 (as in vLLM).
    s = summarize(records(), duration_s=2.0, slo=Slo(ttft_ms=250, tpot_ms=200))
    assert s["good_requests"] == 2 and s["goodput"] == pytest.approx(1.0)
    assert s["slo"] == {"ttft_ms": 250, "tpot_ms": 200}
    # ITL bounds the largest gap: r0 (200 ms) and r1 (600 ms) miss 150 ms; r2 has no gap.
    assert summarize(records(), 2.0, Slo(itl_ms=150))["good_requests"] == 1
    assert summarize(records(), 2.0, Slo(e2e_ms=500))["good_requests"] == 2
    assert summarize(records(), 2.0, Slo(tpot_ms=100))["good_requests"] == 1


def test_empty_inputs():
    assert distribution_ms([]) == {"count": 0, "mean": None, "min": None, "p50": None, "p90": None, "p99": None,
                                   "max": None}
    s = summarize([], duration_s=0.0)
    assert s["completed"] == 0 and s["request_throughput"] == 0.0 and s["ttft_ms"]["count"] == 0


def test_record_json_round_trip():
    r = records()[1]
    assert RequestRecord.from_json(r.to_json()) == r
