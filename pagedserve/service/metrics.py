"""Every Prometheus metric of the server, defined once, in a registry of the server's own.

Two sources feed them. Engine state (KV blocks, queue lengths, prefix-cache and preemption
totals, finished requests, structured-output compiles and masks) is read from the engine's
`stats()` and `structured_stats()` when Prometheus scrapes, so the endpoint always agrees with
the engine. Per-request latencies and token counts are observed from the request outputs by the
engine thread (ServerMetrics is its EngineObserver), and per-step figures after each step. Names
carry the `pagedserve_` prefix and their unit; the registry is per server so tests can run several.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

from pagedserve.engine.async_engine import AsyncEngine
from pagedserve.scheduler.engine_stats import EngineStats
from pagedserve.scheduler.request import RequestOutput
from pagedserve.structured.stats import StructuredOutputStats

# Latency buckets (seconds): a CPU server spans milliseconds per token to minutes per request.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FINISH_REASONS = ("stop", "length", "abort", "error")


class EngineStatsCollector:
    """Engine-state metrics, read from `engine.stats()` at each scrape (nothing while warming up)."""

    def __init__(self, engine_getter: Callable[[], Optional[AsyncEngine]]):
        self._engine_getter = engine_getter
        self.finished_before_serving: dict[str, int] = {}  # the warm-up's requests, by reason

    def describe(self):
        return []  # names are only known with an engine; skip registry-time name checks

    def collect(self):
        engine = self._engine_getter()
        if engine is None:
            return
        stats: EngineStats = engine.stats()
        spec = engine.config.kv_cache_spec
        groups = [str(g) for g in range(len(stats.num_blocks_total))]

        def per_group(name: str, doc: str, values) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["group"])
            for group, value in zip(groups, values):
                family.add_metric([group], value)
            return family

        yield per_group("pagedserve_kv_cache_capacity_blocks",
                        "Usable KV cache blocks per layer group (the null block excluded).", stats.num_blocks_total)
        yield per_group("pagedserve_kv_cache_used_blocks",
                        "KV cache blocks held by requests, per layer group.", stats.num_blocks_used)
        yield per_group("pagedserve_kv_cache_block_size_bytes",
                        "Bytes of KV one block holds, per layer group.", spec.bytes_per_block)
        yield GaugeMetricFamily("pagedserve_kv_cache_usage_ratio",
                                "Fraction of usable KV cache blocks in use, all groups.", value=stats.kv_cache_usage)
        info = InfoMetricFamily("pagedserve_kv_cache", "KV cache layout.")
        info.add_metric([], {"kv_dtype": spec.kv_dtype, "block_size_tokens": str(spec.block_size),
                             "num_groups": str(spec.num_groups)})
        yield info
        yield CounterMetricFamily("pagedserve_kv_cache_window_freed_blocks",
                                  "Blocks freed because they left a sliding attention window.",
                                  value=stats.num_window_freed_blocks)
        yield CounterMetricFamily("pagedserve_prefix_cache_queried_tokens",
                                  "Prompt tokens looked up in the prefix cache.", value=stats.num_prefix_queried_tokens)
        yield CounterMetricFamily("pagedserve_prefix_cache_hit_tokens",
                                  "Prompt tokens served from the prefix cache.", value=stats.num_prefix_hit_tokens)
        yield CounterMetricFamily("pagedserve_prefill_computed_tokens",
                                  "Prompt tokens computed (recomputes included, prefix-cache hits not; "
                                  "the choices of an n > 1 request compute their prompt once).",
                                  value=stats.num_prefill_tokens)
        yield CounterMetricFamily("pagedserve_preemptions", "Requests preempted (recomputed later) for room.",
                                  value=stats.num_preemptions)
        yield GaugeMetricFamily("pagedserve_requests_running", "Requests admitted to the running batch.",
                                value=stats.num_running)
        yield GaugeMetricFamily("pagedserve_requests_waiting", "Requests in the waiting queue.",
                                value=stats.num_waiting)
        finished = CounterMetricFamily("pagedserve_requests_finished", "Requests finished, by finish reason.",
                                       labels=["reason"])
        for reason in FINISH_REASONS:
            finished.add_metric([reason], stats.num_finished_by_reason.get(reason, 0)
                                - self.finished_before_serving.get(reason, 0))
        yield finished
        yield CounterMetricFamily("pagedserve_engine_steps", "Engine steps run.", value=stats.num_steps)
        yield GaugeMetricFamily("pagedserve_step_token_budget",
                                "Tokens the next engine step may compute: with --max-step-ms, what the measured "
                                "step times say fits in that time.", value=stats.step_token_budget)
        yield from self._structured_output(engine.structured_stats())
        yield from spec_decode_metrics(stats)

    @staticmethod
    def _structured_output(st: StructuredOutputStats):
        for name, help_text, value in (
            ("requests", "Requests taken with an output constraint (JSON schema, regex, grammar, choice).",
             st.num_constrained_requests),
            ("compiled_grammars", "Constraints compiled (cache misses; shared by engines over the same model).",
             st.num_compiled),
            ("compile_errors", "Constraints refused by the grammar compiler or its limits.", st.num_compile_errors),
            ("compile_seconds", "Time spent compiling constraints, in worker threads off the engine step.",
             st.compile_seconds_total),
            ("masks", "Token masks applied (one per constrained sampled row per step).", st.num_masks),
            ("mask_seconds", "Time the engine step spent filling and applying token masks "
             "(divide by pagedserve_engine_steps for the mean per step).", st.mask_seconds_total),
        ):
            yield CounterMetricFamily(f"pagedserve_structured_{name}", help_text, value=value)


def spec_decode_metrics(stats: EngineStats):
    """Speculative decoding: drafts verified and accepted (counters), and per verify step (one
    request in one step) the number of drafts accepted (a histogram with a bucket per count)."""
    yield CounterMetricFamily("pagedserve_spec_decode_draft_tokens",
                              "Draft tokens verified by speculative decoding.", value=stats.num_draft_tokens)
    yield CounterMetricFamily("pagedserve_spec_decode_accepted_tokens",
                              "Draft tokens the model accepted.", value=stats.num_accepted_draft_tokens)
    buckets, cumulative = [], 0
    for length, count in enumerate(stats.acceptance_length_counts):
        cumulative += count
        buckets.append((str(float(length)), cumulative))
    buckets.append(("+Inf", cumulative))
    yield HistogramMetricFamily("pagedserve_spec_decode_acceptance_length",
                                "Drafts accepted per verify step (one request in one step with drafts).",
                                buckets=buckets, sum_value=stats.num_accepted_draft_tokens)


class ServerMetrics:
    """The server's metrics. Thread-safe: the engine thread observes, the asyncio loop counts errors."""

    def __init__(self, engine_getter: Callable[[], Optional[AsyncEngine]], clock: Callable[[], float] = time.monotonic):
        self.registry = CollectorRegistry(auto_describe=False)
        self._engine_stats = EngineStatsCollector(engine_getter)
        self.registry.register(self._engine_stats)
        self._clock = clock
        r = self.registry
        self.request_errors = Counter("pagedserve_request_errors", "Calls that ended with a non-OK gRPC status.",
                                      ["method", "code"], registry=r)
        self.http_requests = Counter("pagedserve_http_requests", "HTTP requests answered, by endpoint and status code.",
                                     ["endpoint", "status"], registry=r)
        self.queue_time = Histogram("pagedserve_request_queue_time_seconds",
                                    "Time from queueing to first being scheduled.", buckets=_LATENCY_BUCKETS, registry=r)
        self.time_to_first_token = Histogram("pagedserve_time_to_first_token_seconds",
                                             "Time from queueing to the first generated token.",
                                             buckets=_LATENCY_BUCKETS, registry=r)
        self.inter_token_latency = Histogram("pagedserve_inter_token_latency_seconds",
                                             "Time between consecutive generated tokens of a request.",
                                             buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e_latency = Histogram("pagedserve_e2e_request_latency_seconds",
                                     "Time from queueing to finishing.", buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("pagedserve_prompt_tokens", "Prompt tokens of requests that were scheduled.",
                                     registry=r)
        self.generation_tokens = Counter("pagedserve_generation_tokens", "Tokens generated.", registry=r)
        self.step_batch_tokens = Histogram("pagedserve_step_batch_tokens",
                                           "Tokens computed per engine step (prefill chunks plus decodes).",
                                           buckets=_TOKEN_BUCKETS, registry=r)
        self.step_duration = Histogram("pagedserve_step_duration_seconds", "Wall time of one engine step.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        # (request id, choice index) -> when its latest tokens arrived
        self._last_token_time: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def exclude_finished_so_far(self, stats: EngineStats) -> None:
        """Leave the requests the engine finished before serving (its warm-up) out of
        requests_finished."""
        self._engine_stats.finished_before_serving = dict(stats.num_finished_by_reason)

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use the engine's clock: outputs carry its timestamps."""
        self._clock = clock

    def observe_step(self, stats: EngineStats) -> None:
        """After a step that scheduled something: its batch size and duration."""
        num_tokens = stats.num_prefill_tokens_last_step + stats.num_decode_tokens_last_step
        if num_tokens:
            self.step_batch_tokens.observe(num_tokens)
            self.step_duration.observe(stats.last_step_time_s)

    def observe_output(self, output: RequestOutput) -> None:
        """Account for one step output of a request the service owns."""
        now = self._clock()
        rid = (output.request_id, output.index)
        with self._lock:
            last = self._last_token_time.get(rid)
            if last is None and output.first_scheduled_time is not None:
                self._last_token_time[rid] = last = output.first_scheduled_time
                if output.index == 0:  # the choices of one request share its queueing and its prompt
                    self.queue_time.observe(output.first_scheduled_time - output.arrival_time)
                    self.prompt_tokens.inc(output.num_prompt_tokens)
            num_new = len(output.new_token_ids)
            if num_new:
                self.generation_tokens.inc(num_new)
                if output.num_output_tokens == num_new and output.first_token_time is not None:
                    if output.index == 0:  # one request, one first token (its choices start together)
                        self.time_to_first_token.observe(output.first_token_time - output.arrival_time)
                elif last is not None:
                    for _ in range(num_new):  # tokens of one output arrived together: spread the gap
                        self.inter_token_latency.observe((now - last) / num_new)
                self._last_token_time[rid] = now
            if output.finished:
                self._last_token_time.pop(rid, None)
                end = output.finish_time if output.finish_time is not None else now
                self.e2e_latency.observe(end - output.arrival_time)

    def count_http_request(self, endpoint: str, status: int) -> None:
        self.http_requests.labels(endpoint=endpoint, status=str(status)).inc()

    def count_error(self, method: str, code_name: str) -> None:
        self.request_errors.labels(method=method, code=code_name).inc()
