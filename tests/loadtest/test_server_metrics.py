"""Figures parsed from Prometheus text, windows over a time series, and a live scrape."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pagedserve.loadtest.server_metrics import MetricsScraper, parse_figures, window_figures

PAGEDSERVE_TEXT = """# TYPE pagedserve_kv_cache_usage_ratio gauge
pagedserve_kv_cache_usage_ratio 0.25
# TYPE pagedserve_preemptions counter
pagedserve_preemptions_total 3.0
# TYPE pagedserve_prefix_cache_queried_tokens counter
pagedserve_prefix_cache_queried_tokens_total 200.0
# TYPE pagedserve_prefix_cache_hit_tokens counter
pagedserve_prefix_cache_hit_tokens_total 50.0
# TYPE pagedserve_requests_running gauge
pagedserve_requests_running 4.0
# TYPE pagedserve_requests_finished counter
pagedserve_requests_finished_total{reason="stop"} 2.0
pagedserve_requests_finished_total{reason="length"} 3.0
"""

VLLM_TEXT = """# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m",engine="0"} 0.5
vllm:kv_cache_usage_perc{model_name="m",engine="1"} 0.25
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{model_name="m"} 2.0
"""


def test_parse_pagedserve_and_vllm_names():
    f = parse_figures(PAGEDSERVE_TEXT)
    assert f == {"kv_usage": 0.25, "preemptions": 3.0, "prefix_queried_tokens": 200.0, "prefix_hit_tokens": 50.0,
                 "running": 4.0, "waiting": None, "requests_finished": 5.0}
    v = parse_figures(VLLM_TEXT)
    assert v["kv_usage"] == 0.75 and v["preemptions"] == 2.0 and v["prefix_hit_tokens"] is None  # summed labels


def test_window_deltas_and_peaks():
    samples = [{"t": 0.0, "kv_usage": 0.9, "preemptions": 1, "prefix_queried_tokens": 100, "prefix_hit_tokens": 10},
               {"t": 1.0, "kv_usage": 0.2, "preemptions": 1, "prefix_queried_tokens": 100, "prefix_hit_tokens": 10},
               {"t": 2.0, "kv_usage": 0.6, "preemptions": 4, "prefix_queried_tokens": 300, "prefix_hit_tokens": 160},
               {"t": 3.0, "kv_usage": 0.1, "preemptions": 5, "prefix_queried_tokens": 400, "prefix_hit_tokens": 160}]
    w = window_figures(samples, 1.0, 3.0)
    assert w["num_samples"] == 3 and w["peak_kv_usage"] == 0.6 and w["mean_kv_usage"] == pytest.approx(0.3)
    assert (w["preemptions"], w["prefix_queried_tokens"], w["prefix_hit_tokens"]) == (4, 300, 150)
    assert w["prefix_hit_rate"] == pytest.approx(0.5)
    empty = window_figures(samples, 10.0, 11.0)
    assert empty["peak_kv_usage"] is None and empty["prefix_hit_rate"] is None


def test_scraper_keeps_samples_and_counts_failures():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = PAGEDSERVE_TEXT.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        clock = iter(range(100)).__next__
        scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=lambda: float(clock()))
        assert scraper.scrape()["kv_usage"] == 0.25 and scraper.scrape()["t"] == 1.0
        assert scraper.window(0.0, 1.0)["peak_running"] == 4.0
        bad = MetricsScraper(f"http://127.0.0.1:{port}/nothing")
        assert bad.scrape() is None and bad.errors == 1 and "404" in bad.last_error
    finally:
        httpd.shutdown()
        httpd.server_close()
