"""The command line of a `python -m pagedserve.bench.<name>` module: its options dataclass and the
engine's flags in, the per-round lines as it runs, then the medians as one JSON line."""

from __future__ import annotations

import argparse
import json
from typing import Callable


def bench_module_main(module_name: str, doc: str, options_cls: type, run: Callable[..., dict],
                      argv: list[str] | None = None) -> None:
    """Parse `argv` into (EngineArgs, options_cls), call run(args, options) and print its "median"."""
    from pagedserve.dataclass_flags import add_dataclass_flags, dataclass_from_cli_args
    from pagedserve.engine.engine_args import EngineArgs

    parser = argparse.ArgumentParser(prog=f"python -m {module_name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, options_cls, title="bench options")
    EngineArgs.add_cli_args(parser)
    ns = parser.parse_args(argv)
    result = run(EngineArgs.from_cli_args(ns), dataclass_from_cli_args(options_cls, ns))
    print(json.dumps(result["median"]))
