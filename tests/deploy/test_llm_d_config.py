"""deploy/llm-d/epp-config.yaml: the llm-d scheduler's metric mapping names series that a running
pagedserve exports, with the meaning the scheduler gives them (queue and running gauges, KV usage
as a 0-1 fraction, block size and block count)."""

from __future__ import annotations

import os
import re
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import ServerThread, test_options

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "llm-d", "epp-config.yaml")
SPEC = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})?$")


def load_config() -> dict:
    with open(CONFIG, encoding="utf-8") as f:
        return yaml.safe_load(f)


def engine_config() -> dict:
    (plugin,) = [p for p in load_config()["plugins"] if p["type"] == "core-metrics-extractor"]
    params = plugin["parameters"]
    (engine,) = [e for e in params["engineConfigs"] if e["name"] == params["defaultEngine"]]
    return engine


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """llm-d's spec syntax: `name` or `name{label=value,...}` (values unquoted)."""
    m = SPEC.match(spec)
    assert m, f"not a metric spec: {spec!r}"
    labels = dict(kv.split("=", 1) for kv in (m["labels"] or "").split(",") if kv)
    return m["name"], labels


def test_config_shape():
    config = load_config()
    assert config["kind"] == "EndpointPickerConfig"
    names = {p["type"] for p in config["plugins"]}
    assert {"metrics-data-source", "core-metrics-extractor", "max-score-picker"} <= names
    for profile in config["schedulingProfiles"]:
        assert {p["pluginRef"] for p in profile["plugins"]} <= names
    (source,) = config["dataLayer"]["sources"]
    assert source["pluginRef"] == "metrics-data-source"
    assert source["extractors"] == [{"pluginRef": "core-metrics-extractor"}]
    engine = engine_config()
    assert engine["name"] == "pagedserve"
    for key in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "cacheInfoSpec", "cacheNumBlocksSpec"):
        parse_spec(engine[key])


@pytest.fixture(scope="module")
def exported(make_engine, smollm2_model) -> dict[str, list]:
    """Sample name -> [(labels, value)] of a pagedserve server's /metrics."""
    server = ServerThread(test_options(), make_engine(), smollm2_model)
    try:
        url = f"http://127.0.0.1:{server.server.http_port}/metrics"
        text = urllib.request.urlopen(url, timeout=30).read().decode()
    finally:
        server.close()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def matching(exported, spec: str) -> list:
    name, labels = parse_spec(spec)
    return [(ls, v) for ls, v in exported.get(name, []) if labels.items() <= ls.items()]


def test_every_mapped_series_is_exported_with_its_meaning(exported, make_engine):
    engine = engine_config()
    for key in ("queuedRequestsSpec", "runningRequestsSpec"):
        (labels, value), = matching(exported, engine[key])
        assert value == 0  # an idle server: nothing queued or running
    (_, usage), = matching(exported, engine["kvUsageSpec"])
    assert 0.0 <= usage <= 1.0
    (info_labels, _), = matching(exported, engine["cacheInfoSpec"])
    (_, num_blocks), = matching(exported, engine["cacheNumBlocksSpec"])
    spec = make_engine().config.kv_cache_spec
    assert int(info_labels[engine["cacheBlockSizeLabelName"]]) == spec.block_size
    assert num_blocks > 0


def test_prefix_cache_counters_are_exported(exported):
    for name in ("pagedserve_prefix_cache_hit_tokens_total", "pagedserve_prefix_cache_queried_tokens_total"):
        assert name in exported
