"""PNG plots of a result (or two) with matplotlib's Agg backend, rendered from the result JSON.

Levels are placed on a categorical x axis (labels c=1, c=2, ... or rate=2/s ...), so a sweep
reads left to right and rate=inf has a place too.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pagedserve.loadtest.report import matched_levels  # noqa: E402

LATENCY_PANELS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "E2E latency"))
PERCENTILE_STYLE = (("p50", "-o"), ("p90", "--s"), ("p99", ":^"))


def _x_axis(ax, labels: list[str], shape: str) -> None:
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 6 else 0)
    ax.set_xlabel("concurrency" if shape == "concurrency" else "request rate")
    ax.grid(True, alpha=0.3)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _values(levels: list[dict], path: str) -> list[float]:
    out = []
    for lv in levels:
        value = lv["summary"]
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out.append(np.nan if value is None else value)
    return out


def plot_throughput(result: dict, path: str) -> str:
    """Output and total tokens/s (left), requests/s and goodput (right) per level."""
    levels = result["levels"]
    labels, x = [lv["label"] for lv in levels], range(len(levels))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(x, _values(levels, "output_throughput"), "-o", label="output tokens/s")
    left.plot(x, _values(levels, "total_token_throughput"), "--s", label="total tokens/s")
    left.set_ylabel("tokens/s")
    right.plot(x, _values(levels, "request_throughput"), "-o", label="requests/s")
    if any(lv["summary"]["goodput"] is not None for lv in levels):
        right.plot(x, _values(levels, "goodput"), "--s", label="goodput (within SLOs)")
    right.set_ylabel("requests/s")
    for ax in (left, right):
        _x_axis(ax, labels, levels[0]["shape"])
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle("Throughput")
    return _save(fig, path)


def plot_latency(result: dict, path: str) -> str:
    """p50/p90/p99 of TTFT, TPOT, ITL and E2E per level (ms)."""
    levels = result["levels"]
    labels, x = [lv["label"] for lv in levels], range(len(levels))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title) in zip(axes.flat, LATENCY_PANELS):
        for p, style in PERCENTILE_STYLE:
            ax.plot(x, _values(levels, f"{key}.{p}"), style, label=p)
        ax.set_title(title)
        ax.set_ylabel("ms")
        ax.set_ylim(bottom=0)
        _x_axis(ax, labels, levels[0]["shape"])
        ax.legend()
    fig.suptitle("Latency percentiles")
    return _save(fig, path)


def _cdf(ax, values_ms: list[float], label: str) -> None:
    if values_ms:
        v = np.sort(np.asarray(values_ms))
        # An empirical CDF is a step function: 0 left of the smallest sample, 1 from the largest.
        ax.step(np.concatenate(([v[0]], v)), np.arange(0, v.size + 1) / v.size, where="post", label=label)


def plot_distributions(result: dict, path: str) -> str:
    """Cumulative distributions of TTFT and ITL, one curve per level."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for lv in result["levels"]:
        ok = [r for r in lv["requests"] if r["error"] is None]
        _cdf(left, [r["ttft"] * 1000 for r in ok if r["ttft"] is not None], lv["label"])
        gaps = [(b - a) * 1000 for r in ok for a, b in zip(r["arrivals"], r["arrivals"][1:])]
        _cdf(right, gaps, lv["label"])
    for ax, title in ((left, "TTFT"), (right, "ITL")):
        ax.set_title(f"{title} distribution")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of samples <= x")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    return _save(fig, path)


def plot_kv_usage(result: dict, path: str) -> str | None:
    """KV cache usage (and running/waiting requests) over the run, levels shaded; None when the
    run scraped no KV usage."""
    samples = [s for s in result.get("server_samples") or [] if s.get("kv_usage") is not None]
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(11, 4))
    t = [s["t"] for s in samples]
    ax.plot(t, [100.0 * s["kv_usage"] for s in samples], "-", color="tab:blue", label="KV cache used %")
    ax.set_ylim(0, 105)
    ax.set_ylabel("KV cache used %")
    ax.set_xlabel("seconds since the run began")
    counts = ax.twinx()
    for key, color in (("running", "tab:green"), ("waiting", "tab:red")):
        if any(s.get(key) is not None for s in samples):
            counts.plot(t, [s.get(key) for s in samples], ":", color=color, label=f"requests {key}")
    counts.set_ylabel("requests")
    for k, lv in enumerate(result["levels"]):
        start, end = lv["started_s"], lv["started_s"] + lv["summary"]["duration_s"]
        ax.axvspan(start, end, color="grey", alpha=0.08 if k % 2 else 0.16)
        ax.text(start, 101, lv["label"], fontsize="small", va="bottom")
    handles = ax.get_legend_handles_labels()[0] + counts.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize="small")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_result(result: dict, out_dir: str) -> list[str]:
    """Every plot of one result into out_dir; returns the paths written."""
    if not result["levels"]:
        return []
    paths = [plot_throughput(result, os.path.join(out_dir, "throughput.png")),
             plot_latency(result, os.path.join(out_dir, "latency.png")),
             plot_distributions(result, os.path.join(out_dir, "distributions.png")),
             plot_kv_usage(result, os.path.join(out_dir, "kv_usage.png"))]
    return [p for p in paths if p]


def plot_compare(a: dict, b: dict, name_a: str, name_b: str, path: str) -> str | None:
    """Output tokens/s, TTFT and TPOT (p50 solid, p99 dashed) of the common levels of two
    results; None when they share no level."""
    pairs = matched_levels(a, b)
    if not pairs:
        return None
    labels, x = [la["label"] for la, _ in pairs], range(len(pairs))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, levels, color in ((name_a, [la for la, _ in pairs], "tab:blue"),
                                (name_b, [lb for _, lb in pairs], "tab:orange")):
        axes[0].plot(x, _values(levels, "output_throughput"), "-o", color=color, label=name)
        for ax, key in ((axes[1], "ttft_ms"), (axes[2], "tpot_ms")):
            ax.plot(x, _values(levels, f"{key}.p50"), "-o", color=color, label=f"{name} p50")
            ax.plot(x, _values(levels, f"{key}.p99"), "--^", color=color, label=f"{name} p99")
    for ax, title, unit in ((axes[0], "Output throughput", "tokens/s"), (axes[1], "TTFT", "ms"),
                            (axes[2], "TPOT", "ms")):
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        _x_axis(ax, labels, pairs[0][0]["shape"])
        ax.legend(fontsize="small")
    fig.suptitle(f"{name_a} vs {name_b}")
    return _save(fig, path)
