"""`pagedserve` command line: fetch-model, tokenize, generate, perplexity, bench, serve, client, loadtest."""

from __future__ import annotations

import argparse
import json
import logging
import sys



def _read_text_arg(ns: argparse.Namespace) -> str:
    if getattr(ns, "file", None):
        with open(ns.file, "rb") as f:
            return f.read().decode("utf-8")
    if ns.text is None:
        raise SystemExit("give --text or --file")
    return ns.text


def cmd_fetch_model(ns: argparse.Namespace) -> int:
    from pagedserve.model.model_fetch import fetch_model

    print(fetch_model(ns.name))
    return 0


def cmd_tokenize(ns: argparse.Namespace) -> int:
    from pagedserve.model.gguf_file import read_metadata
    from pagedserve.model.model_fetch import resolve_model_path
    from pagedserve.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(read_metadata(resolve_model_path(ns.model)))
    print(json.dumps(tokenizer.encode(_read_text_arg(ns))))
    return 0


def cmd_perplexity(ns: argparse.Namespace) -> int:
    from pagedserve.worker.perplexity import perplexity
    from pagedserve.engine.engine_factory import build_engine, engine_args_from

    ns.num_kv_blocks = ns.num_kv_blocks or (-(-ns.ctx // ns.block_size) + 2)
    engine, model = build_engine(engine_args_from(ns), warm_up=False)
    tokenizer = model.tokenizer
    ids = tokenizer.encode(_read_text_arg(ns))
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    result = perplexity(engine.runner.transformer, ids, ns.ctx, ns.block_size, bos)
    if ns.json:
        print(json.dumps({"ppl": result.ppl, "num_scored": result.num_scored, "nll": result.nll}))
    else:
        print(f"perplexity {result.ppl:.4f} over {result.num_scored} scored tokens (ctx {ns.ctx})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadtest"]:  # its own parser (loadtest/cli.py) takes every argument after it
        from pagedserve.loadtest.cli import main as loadtest_main

        return loadtest_main(argv[1:])
    from pagedserve.engine.engine_factory import add_engine_arguments

    parser = argparse.ArgumentParser(prog="pagedserve", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch-model", help="put a known model into the cache folder; prints its path")
    p.add_argument("name", nargs="?", default="smollm2-135m")
    p.set_defaults(func=cmd_fetch_model)

    p = sub.add_parser("tokenize", help="print the token ids of a text as JSON")
    p.add_argument("--model", default=None)
    p.add_argument("--text")
    p.add_argument("--file")
    p.set_defaults(func=cmd_tokenize)

    from pagedserve.cli.generate import add_generate_parser
    from pagedserve.bench.bench import add_bench_parser

    add_generate_parser(sub, add_engine_arguments)
    add_bench_parser(sub, add_engine_arguments)
    from pagedserve.bench.synth_model import add_synth_model_parser

    add_synth_model_parser(sub)

    p = sub.add_parser("perplexity", help="perplexity of a text file in windows of --ctx tokens")
    add_engine_arguments(p)
    p.add_argument("--file", required=True)
    p.add_argument("--text", default=None)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_perplexity)

    from pagedserve.cli.serve import add_serve_parsers

    add_serve_parsers(sub, add_engine_arguments)
    sub.add_parser("loadtest", add_help=False, help="load-test a server (pagedserve loadtest --help)")

    ns = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(ns.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return ns.func(ns)
    except ValueError as e:  # ModelLoadError included: bad input, never a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
