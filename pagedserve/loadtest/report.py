"""Reports: the result JSON (every request's timings plus summaries), a Markdown summary, and a
side-by-side Markdown comparison of two result files.

The JSON is the source of truth: the Markdown and the plots are rendered from it alone, so an
old result file can be re-rendered or compared without re-running anything.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

from pagedserve.loadtest.runner import LevelResult
from pagedserve.loadtest.stats import Slo, summarize

FORMAT = "pagedserve-loadtest/1"
LATENCIES = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "E2E"))


def build_result(meta: dict, results: list[LevelResult], slo: Slo, samples: list[dict], run_t0: float) -> dict:
    """The result document. `samples`: the scraper's time series (times on the run's clock,
    stored as seconds since the run began, `run_t0`)."""
    levels = []
    for lr in results:
        levels.append({
            # "inf" as a string: strict JSON readers (jq) reject Infinity
            "label": lr.level.label, "shape": lr.level.shape,
            "value": lr.level.value if math.isfinite(lr.level.value) else "inf",
            "started_s": lr.started,
            "summary": summarize(lr.records, lr.duration, slo),
            "server": lr.server,
            "replicas": lr.replicas,
            "requests": [r.to_json() for r in lr.records],
        })
    series = [{**s, "t": s["t"] - run_t0} for s in samples]
    return {"format": FORMAT, "meta": meta, "levels": levels, "server_samples": series}


def write_json(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


def load_json(path: str) -> dict:
    """A result file; raises ValueError if it is not one."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    if not isinstance(result, dict) or result.get("format") != FORMAT:
        raise ValueError(f"{path}: not a loadtest result ({FORMAT})")
    return result


def fmt(value, digits: int = 1) -> str:
    """A table cell: '-' for missing, thousands separators off, fixed decimals."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def describe(meta: dict) -> str:
    """One line naming the server and the workload."""
    server = meta.get("server") or {}
    where = server.get("address") or server.get("url") or "?"
    w = meta.get("workload") or {}
    return (f"{server.get('target', '?')} {where}, model {server.get('model') or '?'}; workload {w.get('name')} "
            f"(input ~{w.get('input_len')} tokens, output {w.get('output_len')} tokens, {w.get('len_dist')}"
            f"{', ignore_eos' if meta.get('ignore_eos') else ''}, seed {w.get('seed')})")


def markdown(result: dict) -> str:
    """The Markdown summary of one result: throughput table, latency table, errors."""
    meta = result["meta"]
    out = [f"# Load test {meta.get('started_at', '')}", "", describe(meta), ""]
    slo = next((lv["summary"]["slo"] for lv in result["levels"]), {})
    slo_text = ", ".join(f"{k.replace('_ms', '')} <= {v:g} ms" for k, v in slo.items()) or "none"
    rows = []
    for lv in result["levels"]:
        s, srv = lv["summary"], lv.get("server") or {}
        rows.append([lv["label"], str(s["completed"]), str(s["failed"]), fmt(s["duration_s"], 2),
                     fmt(s["request_throughput"], 2), fmt(s["output_throughput"]), fmt(s["total_token_throughput"]),
                     fmt(s["goodput"], 2), pct(srv.get("peak_kv_usage")), fmt(srv.get("preemptions"), 0),
                     pct(srv.get("prefix_hit_rate"))])
    out += ["## Throughput", "", f"SLOs for goodput: {slo_text}.", "",
            table(["level", "ok", "failed", "duration s", "req/s", "output tok/s", "total tok/s", "goodput req/s",
                   "peak KV", "preemptions", "prefix hit"], rows), ""]
    rows = []
    for lv in result["levels"]:
        for key, name in LATENCIES:
            d = lv["summary"][key]
            rows.append([lv["label"], name, str(d["count"])] + [fmt(d[k]) for k in ("mean", "p50", "p90", "p99", "max")])
    out += ["## Latency (ms)", "", table(["level", "metric", "n", "mean", "p50", "p90", "p99", "max"], rows), ""]
    out += replicas_markdown(result)
    errors = [f"- {lv['label']}: " + ", ".join(f"{code} x{n}" for code, n in lv["summary"]["errors"].items())
              for lv in result["levels"] if lv["summary"]["errors"]]
    out += ["## Errors", ""] + (errors or ["none"]) + [""]
    return "\n".join(out)


def replicas_markdown(result: dict) -> list[str]:
    """Per-replica load and prefix-cache figures of each level (replicas scraped behind a gateway)."""
    rows = []
    for lv in result["levels"]:
        replicas = lv.get("replicas") or []
        total = sum(r.get("requests_finished") or 0 for r in replicas)
        for r in replicas:
            finished = r.get("requests_finished")
            share = (finished / total) if finished is not None and total else None
            rows.append([lv["label"], r["url"], fmt(finished, 0), pct(share), fmt(r.get("prefix_queried_tokens"), 0),
                         fmt(r.get("prefix_hit_tokens"), 0), pct(r.get("prefix_hit_rate")),
                         fmt(r.get("peak_running"), 0), fmt(r.get("peak_waiting"), 0), pct(r.get("peak_kv_usage"))])
    if not rows:
        return []
    return ["## Replicas", "", "Scraped from each replica's /metrics (counter deltas over the level).", "",
            table(["level", "replica", "requests finished", "share", "prefix queried tok", "prefix hit tok",
                   "prefix hit", "peak running", "peak waiting", "peak KV"], rows), ""]


COMPARED = (("request_throughput", "req/s", 2), ("output_throughput", "output tok/s", 1),
            ("total_token_throughput", "total tok/s", 1), ("goodput", "goodput req/s", 2),
            ("ttft_ms.p50", "TTFT p50 ms", 1), ("ttft_ms.p99", "TTFT p99 ms", 1),
            ("tpot_ms.p50", "TPOT p50 ms", 1), ("tpot_ms.p99", "TPOT p99 ms", 1),
            ("itl_ms.p50", "ITL p50 ms", 1), ("itl_ms.p99", "ITL p99 ms", 1),
            ("e2e_ms.p50", "E2E p50 ms", 1), ("e2e_ms.p99", "E2E p99 ms", 1), ("failed", "failed", 0))


def figure(summary: dict, path: str):
    """summary["ttft_ms"]["p50"] for path "ttft_ms.p50" (None when missing)."""
    value = summary
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def matched_levels(a: dict, b: dict) -> list[tuple[dict, dict]]:
    """Levels present in both results (same shape and value), in a's order."""
    by_key = {(lv["shape"], lv["value"]): lv for lv in b["levels"]}
    return [(lv, by_key[(lv["shape"], lv["value"])]) for lv in a["levels"] if (lv["shape"], lv["value"]) in by_key]


def ratio(x, y) -> str:
    return f"{y / x:.2f}x" if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x else "-"


def compare_markdown(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Both results side by side per common level, with B/A ratios (for throughputs above 1 means
    B is faster; for latencies above 1 means B is slower)."""
    out = [f"# Comparison: {name_a} vs {name_b}", "", f"- {name_a}: {describe(a['meta'])}",
           f"- {name_b}: {describe(b['meta'])}", ""]
    pairs = matched_levels(a, b)
    if not pairs:
        return "\n".join(out + ["No level appears in both results.", ""])
    rows = []
    for la, lb in pairs:
        for path, name, digits in COMPARED:
            x, y = figure(la["summary"], path), figure(lb["summary"], path)
            if x is None and y is None:
                continue
            rows.append([la["label"], name, fmt(x, digits), fmt(y, digits), ratio(x, y)])
    out += [table(["level", "figure", name_a, name_b, f"{name_b}/{name_a}"], rows), ""]
    return "\n".join(out)


def stem(path: str) -> str:
    """A short name for a result file: its folder for result.json, else the file name."""
    base = os.path.basename(path)
    if base == "result.json":
        return os.path.basename(os.path.dirname(os.path.abspath(path))) or base
    return os.path.splitext(base)[0]
