"""How the server listens and what it allows: the fields of `ServerOptions` are the only defaults,
and `pagedserve serve`'s server flags are generated from them (pagedserve/dataclass_flags.py)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

from pagedserve.dataclass_flags import add_dataclass_flags, dataclass_from_cli_args

MIB = 1 << 20
API_KEY_ENV = "PAGEDSERVE_API_KEY"


def port_or_off(text: str) -> Optional[int]:
    """`--metrics-port` / `--http-port` text: a port, or 0 for no such endpoint (None)."""
    return int(text) or None


@dataclass(frozen=True)
class ServerOptions:
    """Server options: where it listens, TLS, metrics, drain time and request limits.

    `port` 0 picks a free port; `metrics_port` None turns the separate metrics endpoint off and 0
    picks a free port (on the command line, `--metrics-port 0` turns it off); /metrics is always on
    the HTTP port. `http_port` None turns the HTTP API off and 0 picks a free port (on the command
    line, `--http-port 0` turns it off). TLS is on when both cert and key (PEM paths) are given.
    """

    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on (0.0.0.0 for all)"})
    port: int = field(default=50051, metadata={"help": "gRPC port"})
    tls_cert: Optional[str] = field(default=None, metadata={
        "help": "PEM certificate chain; TLS needs --tls-key too"})
    tls_key: Optional[str] = field(default=None, metadata={"help": "PEM private key"})
    metrics_host: str = field(default="127.0.0.1", metadata={"help": "interface of the /metrics endpoint"})
    metrics_port: Optional[int] = field(default=None, metadata={
        "type": port_or_off, "help": "a separate Prometheus /metrics port (default off: /metrics is on the HTTP port)"})
    http_host: str = field(default="127.0.0.1", metadata={"help": "interface of the OpenAI-compatible HTTP API"})
    http_port: Optional[int] = field(default=8000, metadata={
        "type": port_or_off, "help": "OpenAI-compatible HTTP API port, also serving /metrics and /health (0 = off)"})
    api_key: Optional[str] = field(default=None, metadata={
        "help": "require 'Authorization: Bearer KEY' on HTTP and gRPC (default: $PAGEDSERVE_API_KEY; "
                "health and /metrics stay open)"})
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
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (None turns authentication off)")

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
        return add_dataclass_flags(parser, cls, title="server options")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "ServerOptions":
        """The options of `pagedserve serve`'s flags; without --api-key, $PAGEDSERVE_API_KEY (a key
        in the environment stays out of `ps` output)."""
        options = dataclass_from_cli_args(cls, ns)
        if options.api_key is None and os.environ.get(API_KEY_ENV):
            options = dataclasses.replace(options, api_key=os.environ[API_KEY_ENV])
        return options
