"""The metrics endpoint, scraped and parsed, agrees with the engine; the dashboard uses real names."""

from __future__ import annotations

import json
import os
import re

import grpc
import pytest

from pagedserve.service.metrics import FINISH_REASONS
from tests.service.conftest import wait_until

DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "..", "pagedserve", "service", "grafana_dashboard.json")


def value(samples, name, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_scraped_metrics_agree_with_engine_stats(served):
    list(served.client.generate(served.client.build_request([1, 2, 3, 4], temperature=0.0, max_tokens=3)))
    wait_until(lambda: served.engine.stats().num_running == 0 and served.engine.stats().num_waiting == 0)
    stats = served.engine.stats()
    samples = served.scrape()
    spec = served.engine.config.kv_cache_spec
    g0 = {"group": "0"}
    assert value(samples, "pagedserve_kv_cache_capacity_blocks", **g0) == stats.num_blocks_total[0] == 255
    assert value(samples, "pagedserve_kv_cache_used_blocks", **g0) == stats.num_blocks_used[0] == 0
    assert value(samples, "pagedserve_kv_cache_usage_ratio") == stats.kv_cache_usage
    assert value(samples, "pagedserve_kv_cache_block_size_bytes", **g0) == spec.bytes_per_block[0]
    assert spec.kv_dtype == "f16"  # the default
    assert value(samples, "pagedserve_kv_cache_info", kv_dtype="f16", block_size_tokens="16", num_groups="1") == 1
    assert value(samples, "pagedserve_kv_cache_window_freed_blocks_total") == stats.num_window_freed_blocks
    assert value(samples, "pagedserve_prefix_cache_queried_tokens_total") == stats.num_prefix_queried_tokens > 0
    assert value(samples, "pagedserve_prefix_cache_hit_tokens_total") == stats.num_prefix_hit_tokens
    assert value(samples, "pagedserve_preemptions_total") == stats.num_preemptions
    assert value(samples, "pagedserve_requests_running") == stats.num_running
    assert value(samples, "pagedserve_requests_waiting") == stats.num_waiting
    assert value(samples, "pagedserve_engine_steps_total") == stats.num_steps
    assert value(samples, "pagedserve_step_token_budget") == stats.step_token_budget == served.engine.scheduler.token_budget
    for reason in FINISH_REASONS:
        assert value(samples, "pagedserve_requests_finished_total", reason=reason) == \
            stats.num_finished_by_reason.get(reason, 0)
    assert value(samples, "pagedserve_spec_decode_draft_tokens_total") == stats.num_draft_tokens == 0  # off
    assert value(samples, "pagedserve_spec_decode_accepted_tokens_total") == 0
    assert value(samples, "pagedserve_spec_decode_acceptance_length_count") == 0
    for family in served.scrape_families():
        assert family.name.startswith("pagedserve_"), family.name


def test_speculative_metrics_from_engine_stats():
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from pagedserve.scheduler.engine_stats import EngineStats
    from pagedserve.service.metrics import spec_decode_metrics

    stats = EngineStats(num_running=0, num_waiting=0, num_preemptions=0, num_blocks_used=(0,), num_blocks_free=(1,),
                        num_blocks_total=(1,), kv_bytes_per_token=1, num_prefix_queried_tokens=0,
                        num_prefix_hit_tokens=0, num_window_freed_blocks=0, num_prefill_tokens_last_step=0,
                        num_decode_tokens_last_step=0, last_step_time_s=0.0, num_steps=0, step_token_budget=16,
                        num_draft_tokens=20, num_accepted_draft_tokens=9, acceptance_length_counts=(3, 1, 0, 2, 1))

    class Collector:
        def collect(self):
            return spec_decode_metrics(stats)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for s in family.samples}
    assert samples[("pagedserve_spec_decode_draft_tokens_total", ())] == 20
    assert samples[("pagedserve_spec_decode_accepted_tokens_total", ())] == 9
    buckets = [samples[("pagedserve_spec_decode_acceptance_length_bucket", (("le", le),))]
               for le in ("0.0", "1.0", "2.0", "3.0", "4.0", "+Inf")]
    assert buckets == [3, 4, 4, 6, 7, 7]  # cumulative
    assert samples[("pagedserve_spec_decode_acceptance_length_count", ())] == 7
    assert samples[("pagedserve_spec_decode_acceptance_length_sum", ())] == 9  # 1 + 2 * 3 + 4


def test_request_metrics_count_one_request_exactly(served):
    before = served.scrape()
    prompt = [1, 700, 800, 900, 1000]
    list(served.client.generate(served.client.build_request(prompt, temperature=0.0, max_tokens=5, ignore_eos=True)))
    after = served.scrape()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pagedserve_generation_tokens_total") == 5
    assert delta("pagedserve_prompt_tokens_total") == len(prompt)
    assert delta("pagedserve_time_to_first_token_seconds_count") == 1
    assert delta("pagedserve_request_queue_time_seconds_count") == 1
    assert delta("pagedserve_e2e_request_latency_seconds_count") == 1
    assert delta("pagedserve_inter_token_latency_seconds_count") == 4
    assert delta("pagedserve_requests_finished_total", reason="length") == 1
    assert delta("pagedserve_step_batch_tokens_count") >= 5
    assert delta("pagedserve_step_batch_tokens_sum") >= len(prompt) + 4
    assert delta("pagedserve_step_duration_seconds_sum") > 0
    ttft = delta("pagedserve_time_to_first_token_seconds_sum")
    assert 0 < ttft <= delta("pagedserve_e2e_request_latency_seconds_sum")


def test_structured_output_counters_move_with_a_constrained_request(served):
    before = served.scrape()
    request = served.client.build_request([1, 2, 3], temperature=1.0, seed=1, max_tokens=4)
    request.regex = "metrics counters [a-z]{40}"  # used nowhere else: a cache miss, and never done in 4 tokens
    responses = list(served.client.generate(request))
    bad = served.client.build_request([1, 2, 3], max_tokens=4)
    bad.regex = "metrics counters ("
    with pytest.raises(grpc.RpcError):
        list(served.client.generate(bad))
    after = served.scrape()

    def delta(name):
        return value(after, name) - value(before, name)

    assert sum(len(r.token_ids) for r in responses) == 4
    assert delta("pagedserve_structured_requests_total") == 1  # the refused one was never taken
    assert delta("pagedserve_structured_compiled_grammars_total") == 1
    assert delta("pagedserve_structured_compile_errors_total") == 1
    assert delta("pagedserve_structured_compile_seconds_total") > 0
    assert delta("pagedserve_structured_masks_total") == 4  # one per sampled token
    assert delta("pagedserve_structured_mask_seconds_total") > 0
    again = served.client.build_request([4, 5, 6], temperature=1.0, seed=2, max_tokens=4)
    again.regex = request.regex
    list(served.client.generate(again))
    cached = served.scrape()
    assert value(cached, "pagedserve_structured_compiled_grammars_total") == \
        value(after, "pagedserve_structured_compiled_grammars_total")  # a repeat is served from the cache
    assert value(cached, "pagedserve_structured_requests_total") == \
        value(after, "pagedserve_structured_requests_total") + 1


def test_metrics_registry_is_per_server(served, start_server):
    other = start_server(num_kv_blocks=32)
    assert other.server.metrics.registry is not served.server.metrics.registry
    assert value(other.scrape(), "pagedserve_kv_cache_capacity_blocks", group="0") == 31
    assert value(served.scrape(), "pagedserve_kv_cache_capacity_blocks", group="0") == 255
    other.close()


def test_grafana_dashboard_is_valid_and_uses_exported_names(served):
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource" and inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    families = {family.name for family in served.scrape_families()}
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("kv cache", "throughput", "time to first token", "queue"):
        assert topic in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            for name in re.findall(r"pagedserve_\w+", target["expr"]):
                assert re.sub(r"_(total|bucket|sum|count)$", "", name) in families, name


def test_warm_up_requests_are_not_counted_as_finished(make_engine, smollm2_model):
    from pagedserve.engine.engine_factory import warm_up_engine
    from tests.service.conftest import ServerThread, test_options

    engine = make_engine(num_kv_blocks=32)
    warm_up_engine(engine)  # finishes two requests ("length") before the server serves any
    assert engine.stats().num_finished_by_reason["length"] == 2
    server = ServerThread(test_options(), engine, smollm2_model)
    try:
        samples = server.scrape()
        for reason in FINISH_REASONS:
            assert value(samples, "pagedserve_requests_finished_total", reason=reason) == 0
        list(server.client.generate(server.client.build_request([1, 2, 3], temperature=0.0, max_tokens=2,
                                                                ignore_eos=True)))
        assert value(server.scrape(), "pagedserve_requests_finished_total", reason="length") == 1
    finally:
        server.close()
