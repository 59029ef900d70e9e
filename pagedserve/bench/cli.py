"""`pagedserve bench` on the command line: flags from `EngineArgs` and `BenchOptions`, JSON or text out."""

from __future__ import annotations

import argparse
import json

from pagedserve.bench.bench import BenchOptions
from pagedserve.dataclass_flags import add_dataclass_flags, dataclass_from_cli_args
from pagedserve.engine.engine_args import EngineArgs


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure prefill/decode throughput, concurrency, prefix caching, KV capacity")
    add_dataclass_flags(p, BenchOptions, title="bench options")
    EngineArgs.add_cli_args(p)
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_bench)


def cmd_bench(ns: argparse.Namespace) -> int:
    from pagedserve.bench.bench import run_bench
    from pagedserve.bench.report import text_report

    options = dataclass_from_cli_args(BenchOptions, ns)
    result, model = run_bench(EngineArgs.from_cli_args(ns), options)
    print(json.dumps(result) if ns.json else text_report(result, options, model.config.weight_format))
    return 0
