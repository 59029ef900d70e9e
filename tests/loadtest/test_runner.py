"""Load shapes against an in-memory target: counts, time bounds, warm-up, Poisson arrivals, caps."""

from __future__ import annotations

import asyncio

import pytest

from pagedserve.loadtest.runner import Level, Plan, Runner, WarmupFailed
from pagedserve.loadtest.stats import RequestRecord
from pagedserve.loadtest.workloads import Prepared, RequestSpec


class SleepTarget:
    """Answers every request after `latency` s with 2 arrivals; records concurrency and order."""

    def __init__(self, latency: float = 0.02, fail: bool = False):
        self.latency, self.fail = latency, fail
        self.in_flight = self.peak = 0
        self.sent: list[int] = []
        self.started = self.closed = False

    async def start(self):
        self.started = True

    async def close(self):
        self.closed = True

    async def generate(self, req: Prepared) -> RequestRecord:
        self.sent.append(req.spec.index)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.latency)
        self.in_flight -= 1
        if self.fail:
            return RequestRecord(req.spec.index, error="UNAVAILABLE", error_detail="down")
        return RequestRecord(req.spec.index, output_tokens=2, ttft=self.latency / 2, e2e=self.latency,
                             arrivals=[self.latency / 2, self.latency], arrival_tokens=[1, 1])


def request(i: int) -> Prepared:
    return Prepared(RequestSpec(i, max_tokens=2), text="x")


def warm(i: int) -> Prepared:
    return Prepared(RequestSpec(-1 - i, max_tokens=2), text="w")


def run(target, plan, **kw):
    runner = Runner(target, request, plan, warm, progress=False, **kw)
    return asyncio.run(runner.run())


def test_concurrency_sweep_counts_and_warmup_excluded():
    target = SleepTarget()
    results = run(target, Plan([Level("concurrency", 1), Level("concurrency", 3)], num_requests=6, warmup=2))
    assert target.started and target.closed
    assert [r.level.label for r in results] == ["c=1", "c=3"]
    assert [sorted(x.index for x in r.records) for r in results] == [list(range(6)), list(range(6, 12))]
    assert target.sent[:2] == [-1, -2]  # warm-up first, never recorded
    assert results[1].duration < results[0].duration  # 3 at a time finish sooner
    assert all(r.records[0].start >= 0 and r.started >= 0 for r in results)
    assert results[1].started >= results[0].started + results[0].duration


def test_duration_bound_stops_sending():
    target = SleepTarget(latency=0.05)
    (result,) = run(target, Plan([Level("concurrency", 2)], num_requests=None, duration=0.12))
    # Each worker sends at 0, 0.05, 0.10 s and then sees the deadline: 6 requests, all finished.
    assert 4 <= len(result.records) <= 8 and all(r.ok for r in result.records)


def test_poisson_arrivals_are_seeded_and_capped():
    starts = []
    for _ in range(2):
        (result,) = run(SleepTarget(latency=0.0), Plan([Level("rate", 50.0)], num_requests=8, seed=5))
        starts.append([r.start for r in result.records])
    assert len(starts[0]) == 8 and starts[0][0] < 0.02
    # Same seed, same schedule (to within scheduling jitter); mean gap about 1/50 s.
    assert max(abs(a - b) for a, b in zip(*starts)) < 0.05 and starts[0][-1] < 1.0
    target = SleepTarget(latency=0.05)
    (result,) = run(target, Plan([Level("rate", float("inf"))], num_requests=6, max_concurrency=2))
    assert len(result.records) == 6 and target.peak == 2
    target = SleepTarget(latency=0.05)
    run(target, Plan([Level("rate", float("inf"))], num_requests=5))
    assert target.peak == 5  # inf sends everything at once


def test_plan_and_warmup_failures():
    with pytest.raises(ValueError, match="--num-requests or --duration"):
        Plan([Level("concurrency", 1)], num_requests=None)
    with pytest.raises(ValueError, match="inf"):
        Plan([Level("rate", float("inf"))], num_requests=None, duration=1.0)
    with pytest.raises(WarmupFailed, match="UNAVAILABLE: down"):
        run(SleepTarget(fail=True), Plan([Level("concurrency", 1)], num_requests=1, warmup=2))
    assert Level("rate", 2.5).label == "rate=2.5/s" and Level("rate", float("inf")).label == "rate=inf"
