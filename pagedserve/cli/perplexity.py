"""`pagedserve perplexity`: perplexity of a text in windows of `--ctx` tokens."""

from __future__ import annotations

import argparse
import dataclasses
import json

from pagedserve.cli.text_arg import read_text_arg
from pagedserve.engine.engine_args import EngineArgs


def add_perplexity_parser(sub) -> None:
    p = sub.add_parser("perplexity", help="perplexity of a text file in windows of --ctx tokens")
    EngineArgs.add_cli_args(p)
    p.add_argument("--file", required=True)
    p.add_argument("--text", default=None)
    p.add_argument("--ctx", type=int, default=512, help="window length in tokens")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_perplexity)


def cmd_perplexity(ns: argparse.Namespace) -> int:
    from pagedserve.engine.engine_factory import build_engine
    from pagedserve.worker.perplexity import perplexity

    args = EngineArgs.from_cli_args(ns)
    if args.num_kv_blocks is None:  # one window at a time: its blocks, the null block and a spare
        args = dataclasses.replace(args, num_kv_blocks=-(-ns.ctx // args.block_size) + 2)
    engine, model = build_engine(args, warm_up=False)
    tokenizer = model.tokenizer
    ids = tokenizer.encode(read_text_arg(ns))
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    result = perplexity(engine.runner.transformer, ids, ns.ctx, args.block_size, bos)
    if ns.json:
        print(json.dumps({"ppl": result.ppl, "num_scored": result.num_scored, "nll": result.nll}))
    else:
        print(f"perplexity {result.ppl:.4f} over {result.num_scored} scored tokens (ctx {ns.ctx})")
    return 0
