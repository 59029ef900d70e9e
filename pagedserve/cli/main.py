"""`pagedserve` command line: fetch-model, tokenize, generate, perplexity, bench, synth-model,
serve, cluster, client, loadtest.

Each subcommand lives in its own module and adds its own parser; engine and server flags are
generated from `EngineArgs` and `ServerOptions`, so no default is written here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pagedserve.cli.text_arg import read_text_arg


def cmd_fetch_model(ns: argparse.Namespace) -> int:
    from pagedserve.model.model_fetch import fetch_model

    print(fetch_model(ns.name))
    return 0


def cmd_tokenize(ns: argparse.Namespace) -> int:
    from pagedserve.model.gguf_file import read_metadata
    from pagedserve.model.model_fetch import resolve_model_path
    from pagedserve.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(read_metadata(resolve_model_path(ns.model)))
    print(json.dumps(tokenizer.encode(read_text_arg(ns))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (loadtest's own parser excepted: pagedserve/loadtest/cli.py)."""
    from pagedserve.bench.cli import add_bench_parser
    from pagedserve.bench.synth_model import add_synth_model_parser
    from pagedserve.cli.client import add_client_parser
    from pagedserve.cli.cluster import add_cluster_parser
    from pagedserve.cli.generate import add_generate_parser
    from pagedserve.cli.perplexity import add_perplexity_parser
    from pagedserve.cli.serve import add_serve_parser
    from pagedserve.engine.engine_args import EngineArgs

    parser = argparse.ArgumentParser(prog="pagedserve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch-model", help="put a known model into the cache folder; prints its path")
    p.add_argument("name", nargs="?", default="smollm2-135m")
    p.set_defaults(func=cmd_fetch_model)

    p = sub.add_parser("tokenize", help="print the token ids of a text as JSON")
    EngineArgs.add_cli_args(p, only=("model",))
    p.add_argument("--text")
    p.add_argument("--file")
    p.set_defaults(func=cmd_tokenize)

    add_generate_parser(sub)
    add_bench_parser(sub)
    add_perplexity_parser(sub)
    add_serve_parser(sub)
    add_cluster_parser(sub)
    add_client_parser(sub)
    add_synth_model_parser(sub)
    sub.add_parser("loadtest", add_help=False, help="load-test a server (pagedserve loadtest --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadtest"]:  # its own parser (loadtest/cli.py) takes every argument after it
        from pagedserve.loadtest.cli import main as loadtest_main

        return loadtest_main(argv[1:])
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(ns.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return ns.func(ns)
    except ValueError as e:  # bad options or input (ModelLoadError included): never a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
