"""The text a subcommand works on: `--file` or `--text`."""

from __future__ import annotations

import argparse


def read_text_arg(ns: argparse.Namespace) -> str:
    """The text of `--file` (read as UTF-8 bytes, so newlines are kept) or else `--text`."""
    if getattr(ns, "file", None):
        with open(ns.file, "rb") as f:
            return f.read().decode("utf-8")
    if ns.text is None:
        raise SystemExit("give --text or --file")
    return ns.text
