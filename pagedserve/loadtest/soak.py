"""Soak test: cancellations and deadlines under load leak nothing and break nothing.

    python -m loadtest.soak --address 127.0.0.1:50051 --metrics-url http://127.0.0.1:8000/metrics \\
        --num-requests 1000 --concurrency 32 --cancel-fraction 0.3 --deadline-fraction 0.1 --seed 0

Sends N streamed Generate calls (grpc.aio, at most `--concurrency` in flight) with short random
prompts (token ids or text), max_tokens in [4, 32] and ignore_eos. A seeded share is cancelled by
the client (right after sending, i.e. often while queued or prefilling; after k responses; or after
a random delay) and another carries a 50-500 ms deadline, so requests die in every phase. It proves:
  * every KV cache block is returned: pagedserve_kv_cache_used_blocks (all groups) is 0 after a
    settle wait of up to 5 s;
  * no call ended INTERNAL, as seen by the client or counted by the server during the run;
  * the server still reports SERVING on grpc.health.v1;
  * one request's death never hurts another: every plain request (neither cancelled nor given a
    deadline) ends OK with exactly max_tokens tokens and finish reason LENGTH.
Prints a JSON summary; exits 0 if every check holds, 1 if one fails, 2 for a non-loopback target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from pagedserve.loadtest.cli import RemoteRefused, check_loopback, host_of
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb, pagedserve_pb2_grpc as pb_grpc

WORDS = "the a cat dog ran over under tree river city light slow fast old new blue red says why how when".split()
SETTLE_S = 5.0


@dataclass
class Plan:
    request: pb.GenerateRequest
    max_tokens: int
    kind: str = "plain"  # plain | cancel | deadline
    cancel_delay: Optional[float] = None  # cancel this many seconds after sending
    cancel_after: Optional[int] = None  # cancel after this many responses
    deadline: Optional[float] = None


def make_plans(n: int, cancel_fraction: float, deadline_fraction: float, seed: int, vocab: int) -> list[Plan]:
    """The whole run, drawn from `seed`: exactly round(n * fraction) cancelled / deadline requests."""
    rng = random.Random(seed)
    plans = []
    for i in range(n):
        max_tokens = rng.randint(4, 32)
        req = pb.GenerateRequest(request_id=f"soak-{seed}-{i}", sampling=pb.SamplingOptions(temperature=0.0),
                                 stopping=pb.StoppingOptions(max_tokens=max_tokens, ignore_eos=True))
        if rng.random() < 0.5:
            req.token_ids.ids.extend(rng.randrange(100, max(101, min(vocab, 20000))) for _ in range(rng.randint(4, 24)))
        else:
            req.text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 16)))
        plans.append(Plan(req, max_tokens))
    order = list(range(n))
    rng.shuffle(order)
    num_cancel, num_deadline = round(n * cancel_fraction), round(n * deadline_fraction)
    for i in order[:num_cancel]:
        p, mode = plans[i], rng.choice(("early", "after_k", "delay"))
        p.kind = "cancel"
        if mode == "early":  # before the first token: queued, or still prefilling
            p.cancel_delay = rng.uniform(0.0, 0.02)
        elif mode == "after_k":  # mid-stream
            p.cancel_after = rng.randint(1, p.max_tokens - 1)
        else:  # whatever phase it is in by then
            p.cancel_delay = rng.uniform(0.0, 2.0)
    for i in order[num_cancel:num_cancel + num_deadline]:
        plans[i].kind, plans[i].deadline = "deadline", rng.uniform(0.05, 0.5)
    return plans


async def run_one(stub, plan: Plan) -> tuple[grpc.StatusCode, bool]:
    """(final status code, whether the outcome is acceptable for the plan's kind)."""
    call = stub.Generate(plan.request, timeout=plan.deadline)
    timer = (asyncio.get_running_loop().call_later(plan.cancel_delay, call.cancel)
             if plan.cancel_delay is not None else None)
    num_responses = num_tokens = 0
    last = None  # the latest response
    try:
        async for last in call:
            num_responses += 1
            num_tokens += len(last.token_ids)
            if plan.cancel_after is not None and num_responses >= plan.cancel_after and not last.finish_reason:
                call.cancel()
                break
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass  # the code says what happened
    finally:
        if timer is not None:
            timer.cancel()
    code = await call.code()
    ok = (code == grpc.StatusCode.OK and num_tokens == plan.max_tokens and last is not None
          and last.finish_reason == pb.FINISH_REASON_LENGTH)
    if plan.kind == "plain":
        return code, ok
    allowed = {"cancel": grpc.StatusCode.CANCELLED, "deadline": grpc.StatusCode.DEADLINE_EXCEEDED}[plan.kind]
    return code, ok or code == allowed


def scrape(url: str) -> tuple[Optional[float], float]:
    """(KV blocks in use summed over groups, or None if not exported; server INTERNAL error count)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    blocks, internal = None, 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "pagedserve_kv_cache_used_blocks":
                blocks = (blocks or 0.0) + s.value
            elif s.name == "pagedserve_request_errors_total" and s.labels.get("code") == "INTERNAL":
                internal += s.value
    return blocks, internal


async def soak(address: str, metrics_url: str, num_requests: int, concurrency: int, cancel_fraction: float,
               deadline_fraction: float, seed: int) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = pb_grpc.PagedServeStub(channel)
        vocab = (await stub.ModelInfo(pb.ModelInfoRequest(), timeout=10)).vocab_size
        plans = make_plans(num_requests, cancel_fraction, deadline_fraction, seed, vocab)
        _, internal_before = await asyncio.to_thread(scrape, metrics_url)
        by_code: Counter = Counter()
        unexpected: list[str] = []
        pending = iter(plans)

        async def worker():
            for plan in pending:  # a shared iterator: each plan is taken once
                code, ok = await run_one(stub, plan)
                by_code[code.name] += 1
                if not ok:
                    unexpected.append(f"{plan.request.request_id} ({plan.kind}): {code.name}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start

        settle_end = time.monotonic() + SETTLE_S
        while True:
            blocks, internal_after = await asyncio.to_thread(scrape, metrics_url)
            if blocks == 0 or time.monotonic() > settle_end:
                break
            await asyncio.sleep(0.1)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return {"requests": num_requests, "by_code": dict(sorted(by_code.items())), "blocks_used_after": blocks,
            "internal_errors": max(by_code.get("INTERNAL", 0), int(internal_after - internal_before)),
            "serving": health.status == health_pb2.HealthCheckResponse.SERVING,
            "elapsed_s": round(elapsed, 3), "unexpected": len(unexpected), "unexpected_examples": unexpected[:10]}


def failures(summary: dict) -> list[str]:
    out = []
    if summary["blocks_used_after"] != 0:
        out.append(f"KV blocks still in use after {SETTLE_S:g} s: {summary['blocks_used_after']}")
    if summary["internal_errors"]:
        out.append(f"{summary['internal_errors']} INTERNAL errors")
    if not summary["serving"]:
        out.append("health is not SERVING")
    if summary["unexpected"]:
        out.append(f"{summary['unexpected']} requests ended unexpectedly: {summary['unexpected_examples']}")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1:50051", help="gRPC host:port (loopback only)")
    p.add_argument("--metrics-url", required=True, help="the server's Prometheus endpoint (loopback only)")
    for flag, conv, default in (("--num-requests", int, 1000), ("--concurrency", int, 32), ("--seed", int, 0),
                                ("--cancel-fraction", float, 0.3), ("--deadline-fraction", float, 0.1)):
        p.add_argument(flag, type=conv, default=default)
    a = p.parse_args(argv)
    fractions = (a.cancel_fraction, a.deadline_fraction)
    if min(a.num_requests, a.concurrency) < 1 or min(fractions) < 0 or sum(fractions) > 1 + 1e-9:
        p.error("need --num-requests, --concurrency >= 1 and fractions >= 0 summing to at most 1")
    try:
        check_loopback(host_of("grpc", a.address), allow_remote=False)
        check_loopback(host_of("openai", a.metrics_url), allow_remote=False, what="metrics URL")
    except RemoteRefused as e:
        return print(f"{e}\n(loadtest.soak has no --allow-remote: loopback only)", file=sys.stderr) or 2
    summary = asyncio.run(soak(a.address, a.metrics_url, a.num_requests, a.concurrency, a.cancel_fraction,
                               a.deadline_fraction, a.seed))
    print(json.dumps(summary, indent=2))
    failed = failures(summary)
    print("".join(f"FAIL: {f}\n" for f in failed), end="", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
