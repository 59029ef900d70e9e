"""How `pagedserve cluster` lays out its processes: the fields of `ClusterOptions` are the only
defaults, and the command's flags are generated from them (pagedserve/dataclass_flags.py)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from pagedserve.dataclass_flags import add_dataclass_flags, dataclass_from_cli_args

# SMG 1.13's routing policies (`smg launch --policy`).
POLICIES = ("cache_aware", "round_robin", "random", "power_of_two", "least_load", "prefix_hash",
            "consistent_hashing")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ClusterOptions:
    """Cluster options: replicas, their ports and threads, the gateway, its health checks.

    Replica i serves HTTP on `replica_port + i` (gRPC on a free port) with `threads` compute
    threads; SMG listens on `port` and exports its own Prometheus metrics on `prometheus_port`.
    Everything binds 127.0.0.1. The health flags set how fast SMG notices a dead replica: a
    replica is out after `health_failure_threshold` failed checks `health_check_interval_secs`
    apart (or `cb_failure_threshold` failed requests), and back after one good check.
    """

    replicas: int = field(default=2, metadata={"help": "number of `pagedserve serve` processes"})
    threads: int = field(default=1, metadata={"help": "compute threads of each replica"})
    pin_cores: bool = field(default=False, metadata={
        "help": "pin replica i to cores [i*threads, (i+1)*threads) (Linux sched_setaffinity)"})
    port: int = field(default=8000, metadata={"help": "the gateway's HTTP port (OpenAI API)"})
    replica_port: int = field(default=8001, metadata={"help": "HTTP port of replica 0; replica i uses this + i"})
    prometheus_port: int = field(default=29000, metadata={"help": "the gateway's own Prometheus port"})
    policy: str = field(default="cache_aware", metadata={
        "choices": POLICIES, "help": "SMG routing policy"})
    health_check_interval_secs: int = field(default=1, metadata={"help": "SMG: seconds between health checks"})
    health_failure_threshold: int = field(default=2, metadata={
        "help": "SMG: failed health checks before a replica is taken out"})
    health_success_threshold: int = field(default=1, metadata={
        "help": "SMG: good health checks before a replica is taken back"})
    cb_failure_threshold: int = field(default=2, metadata={
        "help": "SMG circuit breaker: failed requests before a replica's circuit opens"})
    cb_timeout_duration_secs: int = field(default=3, metadata={
        "help": "SMG circuit breaker: seconds before an open circuit is tried again"})
    ready_timeout: float = field(default=300.0, metadata={
        "help": "seconds to wait for every replica to warm up and the gateway to report it healthy"})
    stop_timeout: float = field(default=40.0, metadata={
        "help": "on SIGTERM, seconds a process gets to exit before it is killed (replicas drain first)"})
    smg: str | None = field(default=None, metadata={
        "help": "the smg executable (unset: the one beside this Python, then $PATH; pip install pagedserve[cluster])"})

    def __post_init__(self):
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for name in ("port", "replica_port", "prometheus_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ValueError(f"{name} must be in [1, 65535], got {getattr(self, name)}")
        ports = {self.port, self.prometheus_port}
        replica_ports = set(self.replica_ports)
        if len(ports) < 2 or ports & replica_ports or max(replica_ports) > 65535:
            raise ValueError(f"ports overlap or overflow: gateway {self.port}, prometheus {self.prometheus_port}, "
                             f"replicas {self.replica_port}..{self.replica_port + self.replicas - 1}")
        for name in ("health_check_interval_secs", "health_failure_threshold", "health_success_threshold",
                     "cb_failure_threshold", "cb_timeout_duration_secs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ready_timeout <= 0 or self.stop_timeout <= 0:
            raise ValueError("ready_timeout and stop_timeout must be > 0")

    @property
    def replica_ports(self) -> list[int]:
        return [self.replica_port + i for i in range(self.replicas)]

    @property
    def replica_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{p}" for p in self.replica_ports]

    @property
    def gateway_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def cores_of(self, index: int) -> set[int] | None:
        """The cores replica `index` is pinned to (None: not pinned)."""
        if not self.pin_cores:
            return None
        return set(range(index * self.threads, (index + 1) * self.threads))

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
        return add_dataclass_flags(parser, cls, title="cluster options")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "ClusterOptions":
        return dataclass_from_cli_args(cls, ns)
