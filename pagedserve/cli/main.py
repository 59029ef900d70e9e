"""`pagedserve` command line: fetch-model, tokenize, generate, perplexity, bench, synth-model,
serve, cluster, client, loadtest.

Each subcommand lives in its own module and adds its own parser; engine and server flags are
generated from `EngineArgs` and `ServerOptions`, so no default is written here. Only the parser
of the subcommand that runs is built (and its module imported): `pagedserve tokenize` does not
pay for numpy, grpc or asyncio, which other subcommands' modules import.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Optional

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


def add_fetch_model_parser(sub) -> None:
    p = sub.add_parser("fetch-model", help="put a known model into the cache folder; prints its path")
    p.add_argument("name", nargs="?", default="smollm2-135m")
    p.set_defaults(func=cmd_fetch_model)


def add_tokenize_parser(sub) -> None:
    from pagedserve.engine.engine_args import EngineArgs

    p = sub.add_parser("tokenize", help="print the token ids of a text as JSON")
    EngineArgs.add_cli_args(p, only=("model",))
    p.add_argument("--text")
    p.add_argument("--file")
    p.set_defaults(func=cmd_tokenize)


def add_loadtest_parser(sub) -> None:
    sub.add_parser("loadtest", add_help=False, help="load-test a server (pagedserve loadtest --help)")


# subcommand -> "module:function" adding its parser, in the order `pagedserve --help` lists them
SUBCOMMANDS = {
    "fetch-model": "pagedserve.cli.main:add_fetch_model_parser",
    "tokenize": "pagedserve.cli.main:add_tokenize_parser",
    "generate": "pagedserve.cli.generate:add_generate_parser",
    "bench": "pagedserve.bench.cli:add_bench_parser",
    "perplexity": "pagedserve.cli.perplexity:add_perplexity_parser",
    "serve": "pagedserve.cli.serve:add_serve_parser",
    "cluster": "pagedserve.cli.cluster:add_cluster_parser",
    "client": "pagedserve.cli.client:add_client_parser",
    "synth-model": "pagedserve.bench.synth_model:add_synth_model_parser",
    "loadtest": "pagedserve.cli.main:add_loadtest_parser",
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line (loadtest's own parser excepted: pagedserve/loadtest/cli.py), or
    with `only` (a subcommand name) the top level and that one subcommand."""
    parser = argparse.ArgumentParser(prog="pagedserve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, target in SUBCOMMANDS.items():
        if only is None or name == only:
            module, function = target.split(":")
            getattr(importlib.import_module(module), function)(sub)
    return parser


def _command_of(argv: list[str]) -> Optional[str]:
    """The subcommand `argv` runs (None when it names none: then every parser is built, for
    help and for argparse's own error message)."""
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--log-level")
    top.add_argument("command", nargs="?")
    try:
        ns, _ = top.parse_known_args(argv)
    except SystemExit:  # a malformed top level: the full parser reports it
        return None
    return ns.command if ns.command in SUBCOMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadtest"]:  # its own parser (loadtest/cli.py) takes every argument after it
        from pagedserve.loadtest.cli import main as loadtest_main

        return loadtest_main(argv[1:])
    ns = build_parser(only=_command_of(argv)).parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(ns.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return ns.func(ns)
    except ValueError as e:  # bad options or input (ModelLoadError included): never a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
