"""The command line of one `pagedserve serve` replica, and what the cluster sets itself."""

from __future__ import annotations

import sys

from pagedserve.cluster.cluster_options import LOOPBACK, ClusterOptions

# Flags of `serve` that the cluster sets per replica: passing them through would break the layout.
RESERVED_FLAGS = ("--host", "--port", "--http-host", "--http-port", "--metrics-host", "--metrics-port",
                  "--threads")


def check_serve_args(serve_args: list[str]) -> None:
    """Refuse serve flags the cluster sets itself (ValueError naming the flag)."""
    for arg in serve_args:
        name = arg.split("=", 1)[0]
        if name in RESERVED_FLAGS:
            raise ValueError(f"{name} is set per replica by `pagedserve cluster`; use the cluster options "
                             f"(--replica-port, --threads) instead")


def replica_argv(options: ClusterOptions, index: int, serve_args: list[str], log_level: str = "INFO") -> list[str]:
    """`python -m pagedserve.cli.main serve ...` for replica `index`: HTTP (with /metrics and
    /health) on its port, gRPC on a free port, all on loopback, its own thread count, then the
    user's serve flags (model, KV cache, batching) unchanged."""
    return [sys.executable, "-m", "pagedserve.cli.main", "--log-level", log_level, "serve",
            "--host", LOOPBACK, "--port", "0", "--http-host", LOOPBACK,
            "--http-port", str(options.replica_ports[index]), "--metrics-port", "0",
            "--threads", str(options.threads), *serve_args]
