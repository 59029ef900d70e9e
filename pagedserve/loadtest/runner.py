"""Load shapes: a closed-loop concurrency sweep, or open-loop Poisson arrivals at given rates.

- Concurrency N: N workers, each sending its next request as soon as its previous one ends,
  until the level's request count is reached or its --duration has passed (whichever first).
- Rate R: requests sent at Poisson arrival times (exponential gaps of mean 1/R s, seeded; R
  = inf sends all at once) whatever the server's pace, optionally capped at --max-concurrency.

Either way a time bound stops *sending*; requests already in flight finish and are counted. A
level lasts from its first send to its last stream end. Warm-up requests run once, before the
first level, and are not recorded. Levels run one after the other, so each starts on an idle
server.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from pagedserve.loadtest.stats import RequestRecord
from pagedserve.loadtest.workloads import Prepared


@dataclass(frozen=True)
class Level:
    """One point of the sweep: shape "concurrency" (value: workers) or "rate" (requests/s)."""

    shape: str
    value: float

    @property
    def label(self) -> str:
        if self.shape == "concurrency":
            return f"c={int(self.value)}"
        return "rate=inf" if math.isinf(self.value) else f"rate={self.value:g}/s"


@dataclass
class LevelResult:
    """A finished level: its records (every measured request), when it started (seconds since
    the run began), how long it lasted, and the server's figures over it."""

    level: Level
    started: float
    duration: float
    records: list[RequestRecord]
    server: Optional[dict] = None
    replicas: Optional[list[dict]] = None


@dataclass
class Plan:
    """What to run. `num_requests` None: bounded by `duration` only (and vice versa)."""

    levels: list[Level]
    num_requests: Optional[int] = 64
    duration: Optional[float] = None
    warmup: int = 0
    seed: int = 0
    max_concurrency: Optional[int] = None

    def __post_init__(self):
        if self.num_requests is None and self.duration is None:
            raise ValueError("give --num-requests or --duration (or both)")
        if not self.levels:
            raise ValueError("no levels to run")
        if self.num_requests is None and any(math.isinf(lv.value) for lv in self.levels):
            raise ValueError("--request-rate inf sends everything at once: it needs --num-requests")


class WarmupFailed(RuntimeError):
    pass


@dataclass
class Runner:
    """Runs a Plan against a target. `requests(i)` gives the i-th request of the run (levels
    take consecutive ranges); `warmup_requests(i)` the warm-up ones; `scraper` a MetricsScraper."""

    target: object
    requests: Callable[[int], Prepared]
    plan: Plan
    warmup_requests: Optional[Callable[[int], Prepared]] = None
    scraper: Optional[object] = None
    progress: bool = True
    replica_scrapers: list = field(default_factory=list)  # MetricsScrapers of the replicas behind a gateway
    clock: Callable[[], float] = time.perf_counter
    run_t0: float = field(default=0.0, init=False)

    async def run(self) -> list[LevelResult]:
        """Warm up, then every level in order; returns their results."""
        await self.target.start()
        try:
            self.run_t0 = self.clock()
            if self.plan.warmup:
                await self._warm_up()
            results, offset = [], 0
            for level in self.plan.levels:
                results.append(await self._level(level, offset))
                offset += len(results[-1].records)
            return results
        finally:
            await self.target.close()

    async def _warm_up(self) -> None:
        first = self.plan.levels[0]
        workers = int(first.value) if first.shape == "concurrency" else 4
        source = self.warmup_requests or self.requests
        records = await self._closed_loop(source, self.plan.warmup, max(1, min(workers, self.plan.warmup)),
                                          None, lambda r: None)
        if records and all(not r.ok for r in records):
            r = records[0]
            raise WarmupFailed(f"every warm-up request failed, e.g. {r.error}: {r.error_detail}")

    async def _level(self, level: Level, offset: int) -> LevelResult:
        begin = self.scraper.scrape() if self.scraper else None
        replica_begin = [s.scrape() for s in self.replica_scrapers]
        deadline = None if self.plan.duration is None else self.clock() + self.plan.duration
        source = lambda i: self.requests(offset + i)  # noqa: E731 - levels take consecutive indices
        from tqdm import tqdm

        bar = tqdm(total=self.plan.num_requests, desc=level.label, unit="req", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        failed = 0

        def done(record: RequestRecord) -> None:
            nonlocal failed
            failed += not record.ok
            bar.update(1)
            if failed:
                bar.set_postfix(errors=failed)

        t0 = self.clock()
        try:
            if level.shape == "concurrency":
                records = await self._closed_loop(source, self.plan.num_requests, int(level.value), deadline, done, t0)
            else:
                records = await self._poisson(source, level.value, deadline, done, t0)
        finally:
            bar.close()
        end = self.scraper.scrape() if self.scraper else None
        replica_end = [s.scrape() for s in self.replica_scrapers]
        records.sort(key=lambda r: r.start)
        duration = max((r.start + (r.e2e or 0.0) for r in records), default=0.0) - (records[0].start if records else 0.0)
        server = None
        if self.scraper:
            server = self.scraper.window(begin["t"] if begin else t0, end["t"] if end else self.clock())
        replicas = None
        if self.replica_scrapers:
            replicas = [{"url": s.url, **s.window(b["t"] if b else t0, e["t"] if e else self.clock())}
                        for s, b, e in zip(self.replica_scrapers, replica_begin, replica_end)]
        return LevelResult(level, t0 - self.run_t0 + (records[0].start if records else 0.0), duration, records, server,
                           replicas)

    async def _send(self, request: Prepared, t0: float) -> RequestRecord:
        start = self.clock() - t0
        record = await self.target.generate(request)
        record.start = start
        return record

    async def _closed_loop(self, source, count: Optional[int], workers: int, deadline: Optional[float],
                           done: Callable[[RequestRecord], None], t0: Optional[float] = None) -> list[RequestRecord]:
        """`workers` closed loops over source(0), source(1), ... until `count` or `deadline`."""
        t0 = self.clock() if t0 is None else t0
        records: list[RequestRecord] = []
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while (count is None or next_index < count) and (deadline is None or self.clock() < deadline):
                index = next_index
                next_index += 1  # no await between the check and here: indices are unique
                record = await self._send(source(index), t0)
                records.append(record)
                done(record)

        await asyncio.gather(*(worker() for _ in range(workers)))
        return records

    async def _poisson(self, source, rate: float, deadline: Optional[float], done: Callable[[RequestRecord], None],
                       t0: float) -> list[RequestRecord]:
        """Send source(i) at Poisson arrival times of `rate` per second from t0 (seeded per rate)."""
        rng = random.Random(f"{self.plan.seed}/arrivals/{rate}")
        limit = asyncio.Semaphore(self.plan.max_concurrency) if self.plan.max_concurrency else None
        records: list[RequestRecord] = []

        async def one(index: int) -> None:
            if limit is None:
                record = await self._send(source(index), t0)
            else:
                async with limit:
                    record = await self._send(source(index), t0)
            records.append(record)
            done(record)

        tasks, index, at = [], 0, 0.0
        count = self.plan.num_requests
        while count is None or index < count:
            if deadline is not None and t0 + at >= deadline:
                break
            delay = t0 + at - self.clock()  # absolute schedule: a late wake-up does not shift later arrivals
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(index)))
            index += 1
            at += 0.0 if math.isinf(rate) else rng.expovariate(rate)
        await asyncio.gather(*tasks)
        return records
