"""Health-check latency while huge punctuation prompts are being tokenized (issue 13's bar).

Against a running `pagedserve serve` (127.0.0.1 only): two client threads loop, one sending a
30 KB punctuation chat message, the other a 30 KB punctuation text prompt (both max_tokens 1,
over the OpenAI HTTP API); meanwhile gRPC Health/Check and HTTP GET /health are timed every
50 ms. Prints p50 / p99 / max per probe and how many checks took 100 ms or more.

    python scripts/health_latency.py --http http://127.0.0.1:8000 --grpc 127.0.0.1:50051 --seconds 20
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

PAYLOAD = "!?.,;:%" * (30_000 // 7)  # ~30 KB of punctuation


def _load(http: str, stop: threading.Event, chat: bool, counts: dict) -> None:
    with httpx.Client(timeout=120) as client:
        model = client.get(f"{http}/v1/models").json()["data"][0]["id"]
        while not stop.is_set():
            if chat:
                body = {"model": model, "messages": [{"role": "user", "content": PAYLOAD}], "max_tokens": 1}
                r = client.post(f"{http}/v1/chat/completions", json=body)
            else:
                r = client.post(f"{http}/v1/completions", json={"model": model, "prompt": PAYLOAD, "max_tokens": 1})
            counts[r.status_code] = counts.get(r.status_code, 0) + 1


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", default="http://127.0.0.1:8000")
    parser.add_argument("--grpc", default="127.0.0.1:50051")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    stop, counts = threading.Event(), {}
    loaders = [threading.Thread(target=_load, args=(args.http, stop, chat, counts), daemon=True) for chat in (True, False)]
    for t in loaders:
        t.start()
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(args.grpc))
    latencies: dict[str, list[float]] = {"grpc Health/Check": [], "HTTP /health": []}
    end = time.monotonic() + args.seconds
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < end:
            start = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            latencies["grpc Health/Check"].append(time.perf_counter() - start)
            start = time.perf_counter()
            client.get(f"{args.http}/health")
            latencies["HTTP /health"].append(time.perf_counter() - start)
            time.sleep(0.05)
    stop.set()
    print(f"prompt requests answered (by status): {counts}")
    for name, values in latencies.items():
        ms = [v * 1000 for v in values]
        print(f"{name}: n={len(ms)} p50 {statistics.median(ms):.1f} ms, p99 {_percentile(ms, 0.99):.1f} ms, "
              f"max {max(ms):.1f} ms, >= 100 ms: {sum(m >= 100 for m in ms)}")


if __name__ == "__main__":
    main()
