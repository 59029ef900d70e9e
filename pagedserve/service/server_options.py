"""How the server listens and what it allows: the fields of `ServerOptions` are the only defaults,
and `pagedserve serve`'s server flags are generated from them (pagedserve/dataclass_flags.py)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Optional

from pagedserve.dataclass_flags import add_dataclass_flags, dataclass_from_cli_args

MIB = 1 << 20


def port_or_off(text: str) -> Optional[int]:
    """`--metrics-port` text: a port, or 0 for no metrics endpoint (None)."""
    return int(text) or None


@dataclass(frozen=True)
class ServerOptions:
    """Server options: where it listens, TLS, metrics, drain time and request limits.

    `port` 0 picks a free port; `metrics_port` None turns the metrics endpoint off and 0 picks a
    free port (on the command line, `--metrics-port 0` turns it off). TLS is on when both cert and
    key (PEM paths) are given.
    """

    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on (0.0.0.0 for all)"})
    port: int = field(default=50051, metadata={"help": "gRPC port"})
    tls_cert: Optional[str] = field(default=None, metadata={
        "help": "PEM certificate chain; TLS needs --tls-key too"})
    tls_key: Optional[str] = field(default=None, metadata={"help": "PEM private key"})
    metrics_host: str = field(default="127.0.0.1", metadata={"help": "interface of the /metrics endpoint"})
    metrics_port: Optional[int] = field(default=8000, metadata={
        "type": port_or_off, "help": "Prometheus /metrics port (0 = off)"})
    grace_seconds: float = field(default=30.0, metadata={
        "help": "on SIGTERM/SIGINT, time in-flight streams get to finish"})
    max_tokens_limit: int = field(default=4096, metadata={"help": "largest max_tokens a request may ask for"})
    max_prompt_tokens: int = field(default=4096, metadata={
        "help": "most prompt tokens a request may have (INVALID_ARGUMENT above). The default bounds how long "
                "one prompt holds the engine: 4096 tokens prefill in seconds on SmolLM2-135M but in minutes "
                "on a slow model; raise it up to --max-model-len minus 1 for long-context work"})
    max_message_bytes: int = field(default=16 * MIB, metadata={"help": "largest gRPC message, in or out"})

    def __post_init__(self):
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        if self.grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0, got {self.grace_seconds}")
        if self.max_tokens_limit < 1:
            raise ValueError(f"max_tokens_limit must be >= 1, got {self.max_tokens_limit}")
        if self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
        return add_dataclass_flags(parser, cls, title="server options")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "ServerOptions":
        return dataclass_from_cli_args(cls, ns)
