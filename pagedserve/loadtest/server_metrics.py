"""Scrape the server's Prometheus /metrics during a run: KV usage, preemptions, prefix hits.

A daemon thread scrapes every `interval` seconds and keeps a time series; the runner takes an
extra scrape at each level's start and end so counter deltas cover the level exactly. Names are
looked up from a table of aliases, so pagedserve, vLLM and llama-server each give what they
export (a figure the server does not export stays None).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Callable, Optional

from prometheus_client.parser import text_string_to_metric_families

# Figure -> sample names that carry it (summed over labels; the first name present wins).
ALIASES = {
    "kv_usage": ("pagedserve_kv_cache_usage_ratio", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
                 "llamacpp:kv_cache_usage_ratio"),
    "preemptions": ("pagedserve_preemptions_total", "vllm:num_preemptions_total"),
    "prefix_queried_tokens": ("pagedserve_prefix_cache_queried_tokens_total", "vllm:prefix_cache_queries_total",
                              "vllm:gpu_prefix_cache_queries_total"),
    "prefix_hit_tokens": ("pagedserve_prefix_cache_hit_tokens_total", "vllm:prefix_cache_hits_total",
                          "vllm:gpu_prefix_cache_hits_total"),
    "running": ("pagedserve_requests_running", "vllm:num_requests_running", "llamacpp:requests_processing"),
    "waiting": ("pagedserve_requests_waiting", "vllm:num_requests_waiting", "llamacpp:requests_deferred"),
    "requests_finished": ("pagedserve_requests_finished_total", "vllm:request_success_total"),
}


def parse_figures(text: str) -> dict[str, Optional[float]]:
    """The ALIASES figures of one /metrics text (None when absent)."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return {figure: next((sums[n] for n in names if n in sums), None) for figure, names in ALIASES.items()}


def window_figures(samples: list[dict], t0: float, t1: float) -> dict:
    """Server figures between times t0 and t1 (inclusive): peak KV usage, preemptions and prefix
    cache queried/hit tokens (counter deltas, last minus first sample) and the hit rate."""
    inside = [s for s in samples if t0 <= s["t"] <= t1]

    def delta(name: str) -> Optional[float]:
        values = [s[name] for s in inside if s.get(name) is not None]
        return values[-1] - values[0] if len(values) >= 1 else None

    kv = [s["kv_usage"] for s in inside if s.get("kv_usage") is not None]
    queried, hit = delta("prefix_queried_tokens"), delta("prefix_hit_tokens")
    return {
        "num_samples": len(inside),
        "peak_kv_usage": max(kv) if kv else None,
        "mean_kv_usage": sum(kv) / len(kv) if kv else None,
        "preemptions": delta("preemptions"),
        "prefix_queried_tokens": queried,
        "prefix_hit_tokens": hit,
        "prefix_hit_rate": (hit / queried) if queried and hit is not None else None,
        "requests_finished": delta("requests_finished"),
        "peak_running": max((s["running"] for s in inside if s.get("running") is not None), default=None),
        "peak_waiting": max((s["waiting"] for s in inside if s.get("waiting") is not None), default=None),
    }


class MetricsScraper:
    """Scrapes `url` every `interval` s in a daemon thread; `samples` holds {"t": seconds on
    `clock`, figure: value, ...}. Failed scrapes are counted, never raised."""

    def __init__(self, url: str, interval: float = 0.5, clock: Callable[[], float] = time.perf_counter):
        self.url, self.interval, self.clock = url, interval, clock
        self.samples: list[dict] = []
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def scrape(self) -> Optional[dict]:
        """Scrape now and keep the sample; None when the scrape failed."""
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                text = response.read().decode("utf-8", "replace")
            sample = {"t": self.clock(), **parse_figures(text)}
        except Exception as e:  # noqa: BLE001 - a broken scrape must not stop the load test
            with self._lock:
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
            return None
        with self._lock:
            self.samples.append(sample)
            self.samples.sort(key=lambda s: s["t"])  # the thread and the runner may interleave
        return sample

    def start(self) -> "MetricsScraper":
        self._thread = threading.Thread(target=self._loop, name="loadtest-metrics", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def window(self, t0: float, t1: float) -> dict:
        with self._lock:
            samples = list(self.samples)
        return window_figures(samples, t0, t1)
