"""What one request measured, and the figures of a run (definitions as vLLM's benchmark_serving).

All times are seconds on the client's monotonic clock (`time.perf_counter`). Per request:

- TTFT: from sending the request to the first response that carries at least one token.
- E2E: from sending the request to the end of its response stream.
- TPOT: (E2E - TTFT) / (output_tokens - 1): the mean time per output token after the first;
  defined only for requests with more than one output token.
- ITL: every gap between two consecutive token-carrying responses ("arrivals"). A response that
  carries several tokens is one arrival, so its tokens add one gap, not several.
- output_tokens: the server's reported usage when it reports one, else the count of arrivals.

Per run (a level of the sweep): failed requests are counted by error code and left out of every
latency figure; throughputs divide by the level's duration (first send to last stream end).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class RequestRecord:
    """One request's measurements. `start` is when it was sent, in seconds since its level began;
    `arrivals` the times of token-carrying responses in seconds since `start`, and
    `arrival_tokens` how many tokens each carried (0 when the server does not say)."""

    index: int
    start: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_source: str = "usage"  # "usage" (server reported) or "arrivals" (counted)
    cached_prompt_tokens: Optional[int] = None
    max_tokens: int = 0
    ttft: Optional[float] = None
    e2e: Optional[float] = None
    arrivals: list[float] = field(default_factory=list)
    arrival_tokens: list[int] = field(default_factory=list)
    finish_reason: str = ""
    error: Optional[str] = None  # an error code: gRPC status name, HTTP_503, CONNECTION, TIMEOUT, ...
    error_detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]

    @property
    def tpot(self) -> Optional[float]:
        """(E2E - TTFT) / (output_tokens - 1), None with fewer than two output tokens."""
        if self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> "RequestRecord":
        return cls(**row)


@dataclass(frozen=True)
class Slo:
    """Service-level objectives in milliseconds; None: not checked."""

    ttft_ms: Optional[float] = None
    tpot_ms: Optional[float] = None
    itl_ms: Optional[float] = None
    e2e_ms: Optional[float] = None

    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.itl_ms, self.e2e_ms))

    def met_by(self, r: RequestRecord) -> bool:
        """A successful request meets every set objective. As in vLLM, a request with one output
        token has TPOT 0 (and no ITL) for this check; the ITL objective bounds its largest gap."""
        if not r.ok:
            return False
        checks = ((self.ttft_ms, r.ttft or 0.0), (self.tpot_ms, r.tpot or 0.0),
                  (self.itl_ms, max(r.itls, default=0.0)), (self.e2e_ms, r.e2e or 0.0))
        return all(limit is None or value * 1000.0 <= limit for limit, value in checks)


def distribution_ms(values_s: list[float]) -> dict:
    """count, mean, min, p50, p90, p99, max of seconds values, in milliseconds (numpy's linear
    percentile interpolation, as vLLM). Empty input gives count 0 and None elsewhere."""
    if not values_s:
        return {"count": 0, "mean": None, "min": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    a = np.asarray(values_s, dtype=np.float64) * 1000.0
    out = {"count": int(a.size), "mean": float(a.mean()), "min": float(a.min())}
    out.update({f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES})
    out["max"] = float(a.max())
    return out


def summarize(records: list[RequestRecord], duration_s: float, slo: Slo = Slo()) -> dict:
    """The figures of one level: counts, throughputs (per second of `duration_s`), latency
    distributions in ms, goodput under `slo`, and errors by code."""
    ok = [r for r in records if r.ok]
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
    input_tokens = sum(r.input_tokens for r in ok)
    output_tokens = sum(r.output_tokens for r in ok)
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    good = sum(1 for r in ok if slo.met_by(r)) if slo.any() else None
    return {
        "num_requests": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "errors": dict(sorted(errors.items())),
        "duration_s": duration_s,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "request_throughput": per_s(len(ok)),
        "output_throughput": per_s(output_tokens),
        "total_token_throughput": per_s(input_tokens + output_tokens),
        "ttft_ms": distribution_ms([r.ttft for r in ok if r.ttft is not None]),
        "tpot_ms": distribution_ms([t for t in (r.tpot for r in ok) if t is not None]),
        "itl_ms": distribution_ms([g for r in ok for g in r.itls]),
        "e2e_ms": distribution_ms([r.e2e for r in ok if r.e2e is not None]),
        "slo": {k: v for k, v in asdict(slo).items() if v is not None},
        "good_requests": good,
        "goodput": per_s(good) if good is not None else None,
    }
