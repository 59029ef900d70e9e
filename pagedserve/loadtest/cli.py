"""`python -m loadtest` / `pagedserve loadtest`: measure a server under load, or compare two runs.

    python -m loadtest --address 127.0.0.1:50051 --concurrency 1,2,4,8 --num-requests 32 \\
        --input-len 128 --output-len 64 --ignore-eos --metrics-url http://127.0.0.1:8000/metrics
    python -m loadtest --target openai --url http://127.0.0.1:8000 --concurrency 32   # pagedserve over HTTP
    python -m loadtest --target openai --url http://127.0.0.1:8080 --request-rate 1,2,4 --duration 60
    python -m loadtest --compare results/a/result.json results/b/result.json

See loadtest/README.md for every definition and output file.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
import sys
import time
from urllib.parse import urlsplit

from pagedserve.loadtest.workloads import LEN_DISTS, WORKLOADS

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class RemoteRefused(Exception):
    """A non-loopback target without --allow-remote."""


def check_loopback(host: str, allow_remote: bool, what: str = "target") -> None:
    """Return if `host` resolves only to loopback addresses (or allow_remote); else raise
    RemoteRefused with a message saying how to proceed. Load tests overload what they hit, so
    pointing one at somebody else's machine must be a deliberate choice."""
    if allow_remote:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise RemoteRefused(f"error: cannot resolve {what} host {host!r}: {e}") from None
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise RemoteRefused(f"error: refusing to load-test {what} {host!r}: it resolves to non-loopback address "
                            f"{', '.join(remote)}. Only 127.0.0.0/8 and ::1 are allowed by default; pass "
                            f"--allow-remote if you own that server and mean to load it.")


def host_of(target: str, address: str) -> str:
    """The host part of a gRPC host:port or an http://host:port URL."""
    if target == "openai" or "//" in address:
        return urlsplit(address if "//" in address else "http://" + address).hostname or ""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def number_list(text: str, conv=float) -> list:
    try:
        values = [conv(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("target")
    g.add_argument("--target", choices=("grpc", "openai"), default="grpc")
    g.add_argument("--address", default="127.0.0.1:50051", help="gRPC host:port (--target grpc)")
    g.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (--target openai)")
    g.add_argument("--model", default=None, help="OpenAI model name (default: first of /v1/models)")
    g.add_argument("--prompt-format", choices=("auto", "ids", "text"), default="auto",
                   help="send token ids of exact lengths (default for grpc; openai: llama-server /tokenize) "
                        "or text (default for openai)")
    g.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    g.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    g.add_argument("--ready-timeout", type=float, default=600.0,
                   help="wait this long for the target to be ready (gRPC health SERVING, HTTP /health 200)")
    g = p.add_argument_group("workload")
    g.add_argument("--workload", choices=WORKLOADS, default="synthetic")
    g.add_argument("--dataset", default=None, help="jsonl file: {\"prompt\"|\"messages\", \"max_tokens\"} a line")
    g.add_argument("--input-len", type=int, default=None, help="prompt tokens (default per workload)")
    g.add_argument("--output-len", type=int, default=None, help="max_tokens (default per workload)")
    g.add_argument("--len-dist", choices=LEN_DISTS, default="fixed")
    g.add_argument("--len-spread", type=float, default=0.25, help="relative spread of uniform/normal lengths")
    g.add_argument("--prefix-len", type=int, default=256, help="shared-prefix: tokens of the common system prompt")
    g.add_argument("--chat-turns", type=int, default=3, help="chat: turns per prompt; multi-turn: turns per conversation")
    g.add_argument("--num-prefixes", type=int, default=5, help="multi-turn: distinct system prompts (--prefix-len words)")
    g.add_argument("--num-conversations", type=int, default=20, help="multi-turn: conversations taking turns")
    g.add_argument("--ignore-eos", action="store_true", help="generate exactly max_tokens")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("load")
    shape = g.add_mutually_exclusive_group()
    shape.add_argument("--concurrency", type=lambda s: number_list(s, int), default=None,
                       help="closed-loop sweep, e.g. 1,2,4,8,16,32 (default 1)")
    shape.add_argument("--request-rate", type=number_list, default=None,
                       help="Poisson arrivals per second, e.g. 1,2,inf")
    g.add_argument("--num-requests", type=int, default=64, help="per level; 0: bounded by --duration only")
    g.add_argument("--duration", type=float, default=None, help="seconds per level (stops sending)")
    g.add_argument("--warmup", type=int, default=2, help="requests before the first level, not recorded")
    g.add_argument("--max-concurrency", type=int, default=None, help="cap on requests in flight (rate mode)")
    g.add_argument("--pool-size", type=int, default=512, help="distinct prompts when bounded by time only")
    g = p.add_argument_group("figures and output")
    g.add_argument("--slo-ttft-ms", type=float, default=None)
    g.add_argument("--slo-tpot-ms", type=float, default=None)
    g.add_argument("--slo-itl-ms", type=float, default=None, help="bounds each request's largest ITL")
    g.add_argument("--slo-e2e-ms", type=float, default=None)
    g.add_argument("--metrics-url", default=None, help="the server's Prometheus endpoint, scraped during the run")
    g.add_argument("--replica-metrics-url", action="append", default=[], metavar="URL[,URL...]",
                   help="Prometheus endpoints of the replicas behind a gateway target (repeat or comma-separate): "
                        "the report shows each one's requests finished and prefix-cache hits")
    g.add_argument("--metrics-interval", type=float, default=0.5)
    g.add_argument("--out-dir", default=None, help="default: loadtest/results/<timestamp>/")
    g.add_argument("--no-plots", action="store_true")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="render two results side by side")
    return p


def out_dir_for(ns: argparse.Namespace, prefix: str = "") -> str:
    path = ns.out_dir or os.path.join(RESULTS_DIR, prefix + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(path, exist_ok=True)
    return path


def cmd_compare(ns: argparse.Namespace) -> int:
    from pagedserve.loadtest.plots import plot_compare
    from pagedserve.loadtest.report import compare_markdown, load_json, stem

    (path_a, path_b), out = ns.compare, out_dir_for(ns, "compare-")
    a, b = load_json(path_a), load_json(path_b)
    name_a, name_b = stem(path_a), stem(path_b)
    if name_a == name_b:
        name_a, name_b = "A", "B"
    text = compare_markdown(a, b, name_a, name_b)
    with open(os.path.join(out, "compare.md"), "w", encoding="utf-8") as f:
        f.write(text)
    written = [os.path.join(out, "compare.md")]
    if not ns.no_plots:
        written.append(plot_compare(a, b, name_a, name_b, os.path.join(out, "compare.png")))
    print(text)
    print("wrote " + ", ".join(p for p in written if p), file=sys.stderr)
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from pagedserve.loadtest.readiness import wait_until_ready
    from pagedserve.loadtest.report import build_result, markdown, write_json
    from pagedserve.loadtest.runner import Level, Plan, Runner
    from pagedserve.loadtest.server_metrics import MetricsScraper
    from pagedserve.loadtest.stats import Slo
    from pagedserve.loadtest.targets import make_target
    from pagedserve.loadtest.workloads import Workload, prepare

    address = ns.address if ns.target == "grpc" else ns.url
    check_loopback(host_of(ns.target, address), ns.allow_remote)
    replica_urls = [u.strip() for arg in ns.replica_metrics_url for u in arg.split(",") if u.strip()]
    for url in ([ns.metrics_url] if ns.metrics_url else []) + replica_urls:
        check_loopback(urlsplit(url).hostname or "", ns.allow_remote, "metrics URL")
    if ns.request_rate:
        levels = [Level("rate", r) for r in ns.request_rate]
    else:
        levels = [Level("concurrency", c) for c in (ns.concurrency or [1])]
    plan = Plan(levels, ns.num_requests or None, ns.duration, ns.warmup, ns.seed, ns.max_concurrency)
    workload = Workload(ns.workload, ns.seed, ns.input_len, ns.output_len, ns.len_dist, ns.len_spread,
                        ns.prefix_len, ns.chat_turns, ns.dataset, ns.num_prefixes, ns.num_conversations)
    target = make_target(ns.target, address, model=ns.model, temperature=ns.temperature,
                         ignore_eos=ns.ignore_eos, timeout=ns.timeout)
    wait_until_ready(target.readiness, ns.ready_timeout, f"{ns.target} target {address}")
    server = target.describe()
    use_ids = ns.prompt_format == "ids" or (ns.prompt_format == "auto" and ns.target == "grpc")
    tokenize, cache = (target.tokenize if use_ids else None), {}
    # Prepare (and tokenize) every prompt before the clock starts: setup calls must not load the
    # server or block the event loop during a level.
    pool_size = len(levels) * plan.num_requests if plan.num_requests else ns.pool_size
    pool = [prepare(workload.request(i), tokenize, cache) for i in range(pool_size)]
    warm = [prepare(workload.request(10**9 + i), tokenize, cache) for i in range(ns.warmup)]
    scraper = MetricsScraper(ns.metrics_url, ns.metrics_interval).start() if ns.metrics_url else None
    replica_scrapers = [MetricsScraper(url, ns.metrics_interval).start() for url in replica_urls]
    runner = Runner(target, lambda i: pool[i % len(pool)], plan, lambda i: warm[i], scraper, not ns.no_progress,
                    replica_scrapers=replica_scrapers)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        results = asyncio.run(runner.run())
    finally:
        for s in ([scraper] if scraper else []) + replica_scrapers:
            s.stop()
    meta = {"started_at": started_at, "argv": sys.argv[1:], "server": server, "prompt_format": "ids" if use_ids else "text",
            "workload": {k: getattr(workload, k) for k in ("name", "seed", "input_len", "output_len", "len_dist",
                                                           "len_spread", "prefix_len", "chat_turns", "dataset",
                                                           "num_prefixes", "num_conversations")},
            "ignore_eos": ns.ignore_eos, "temperature": ns.temperature,
            "plan": {"shape": levels[0].shape, "num_requests": plan.num_requests, "duration_s": plan.duration,
                     "warmup": plan.warmup, "max_concurrency": plan.max_concurrency},
            "metrics": {"url": ns.metrics_url, "replica_urls": replica_urls, "interval_s": ns.metrics_interval,
                        "scrape_errors": scraper.errors if scraper else 0,
                        "last_error": scraper.last_error if scraper else ""}}
    slo = Slo(ns.slo_ttft_ms, ns.slo_tpot_ms, ns.slo_itl_ms, ns.slo_e2e_ms)
    result = build_result(meta, results, slo, scraper.samples if scraper else [], runner.run_t0)
    out = out_dir_for(ns)
    write_json(result, os.path.join(out, "result.json"))
    text = markdown(result)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    written = ["result.json", "summary.md"]
    if not ns.no_plots:
        from pagedserve.loadtest.plots import plot_result

        written += [os.path.basename(p) for p in plot_result(result, out)]
    print(text)
    print(f"wrote {', '.join(written)} to {out}", file=sys.stderr)
    if scraper and scraper.errors:
        print(f"warning: {scraper.errors} metrics scrapes failed ({scraper.last_error})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad arguments or a refused host)."""
    ns = build_parser().parse_args(argv)
    try:
        return cmd_compare(ns) if ns.compare else cmd_run(ns)
    except RemoteRefused as e:
        print(e, file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # WarmupFailed: the server answers but every request fails
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
