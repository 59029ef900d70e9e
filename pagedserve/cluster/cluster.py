"""A running cluster: N replicas started together, SMG started once they all serve, and a stop
that leaves no process behind (gateway first, so nothing new arrives while replicas drain)."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

from pagedserve.cluster.cluster_options import ClusterOptions
from pagedserve.cluster.gateway import find_smg, healthy_workers, smg_argv
from pagedserve.cluster.processes import ManagedProcess, stop_all
from pagedserve.cluster.replica import check_serve_args, replica_argv

log = logging.getLogger("pagedserve.cluster")
_POLL_S = 0.25


class ClusterError(RuntimeError):
    """A process of the cluster failed to start or to become healthy (the message says which, with
    the end of its log)."""


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


class Cluster:
    """Replicas of `pagedserve serve` (with `serve_args` passed through) behind SMG, logs in
    `log_dir` (replica-I.log, smg.log). Use as a context manager, or call start() and stop()."""

    def __init__(self, options: ClusterOptions, serve_args: list[str], log_dir: str,
                 env: Optional[dict] = None, log_level: str = "INFO"):
        check_serve_args(serve_args)
        if options.pin_cores:
            wanted = set().union(*(options.cores_of(i) for i in range(options.replicas)))
            missing = sorted(wanted - os.sched_getaffinity(0))
            if missing:
                raise ValueError(f"--pin-cores needs cores 0..{max(wanted)}, but cores {missing} are not "
                                 f"available to this process")
        self.options, self.serve_args, self.log_dir, self.log_level = options, list(serve_args), log_dir, log_level
        self.env = dict(os.environ if env is None else env)
        self.smg = find_smg(options.smg)
        os.makedirs(log_dir, exist_ok=True)
        self.replicas: list[Optional[ManagedProcess]] = [None] * options.replicas
        self.gateway: Optional[ManagedProcess] = None
        self._abort: Optional[threading.Event] = None

    # ---- start ----
    def start(self, abort: Optional[threading.Event] = None) -> "Cluster":
        """Start every replica, wait until each serves, start SMG and wait until it reports every
        replica healthy, all within `ready_timeout`. On failure (or `abort` set: a signal) everything
        started is stopped and ClusterError raised."""
        deadline = time.monotonic() + self.options.ready_timeout
        self._abort = abort
        try:
            for i in range(self.options.replicas):
                self.start_replica(i)
            for i in range(self.options.replicas):
                self.wait_replica(i, deadline)
            self.start_gateway()
            self.wait_gateway(set(self.options.replica_urls), deadline)
        except BaseException:
            self.stop()
            raise
        log.info("cluster ready: gateway %s over %s", self.options.gateway_url, ", ".join(self.options.replica_urls))
        return self

    def start_replica(self, index: int) -> ManagedProcess:
        """(Re)start replica `index` on its port; returns at once (wait_replica waits)."""
        env = {**self.env, "NUMBA_NUM_THREADS": str(self.options.threads)}  # no idle threads beyond --threads
        process = ManagedProcess(f"replica-{index}", replica_argv(self.options, index, self.serve_args, self.log_level),
                                 os.path.join(self.log_dir, f"replica-{index}.log"), env,
                                 self.options.cores_of(index)).start()
        self.replicas[index] = process
        return process

    def start_gateway(self, policy: Optional[str] = None) -> ManagedProcess:
        """(Re)start SMG over every replica, with `policy` instead of the options' one if given;
        returns at once (wait_gateway waits). The replicas and their caches are left as they are."""
        if self.gateway is not None:
            stop_all([self.gateway], self.options.stop_timeout)
        if policy is not None:
            self.options = dataclasses.replace(self.options, policy=policy)
        self.gateway = ManagedProcess("smg", smg_argv(self.smg, self.options, self.options.replica_urls),
                                      os.path.join(self.log_dir, "smg.log"), self.env).start()
        return self.gateway

    def wait_replica(self, index: int, deadline: float) -> None:
        """Wait until replica `index` answers /health 200 (warm); ClusterError if it exits or the deadline passes."""
        process, url = self.replicas[index], self.options.replica_urls[index] + "/health"
        self._poll(lambda: http_ok(url), deadline, f"replica {index} ({url}) did not become healthy", process)

    def wait_gateway(self, healthy: set[str], deadline: float) -> None:
        """Wait until the gateway reports exactly the replicas `healthy` as healthy (and no other)."""
        urls = self.options.replica_urls

        def settled() -> bool:
            return set(healthy_workers(self.options.gateway_url, urls)) == healthy

        self._poll(settled, deadline, f"the gateway did not report healthy workers == {sorted(healthy)}", self.gateway)

    def _poll(self, predicate: Callable[[], bool], deadline: float, what: str, process: Optional[ManagedProcess]):
        while not predicate():
            if self._abort is not None and self._abort.is_set():
                raise ClusterError(f"{what}: stopped by a signal while starting")
            if process is not None and not process.running():
                raise ClusterError(f"{what}: {process.name} exited with code {process.exit_code()}; "
                                   f"end of {process.log_path}:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                tail = f"; end of {process.log_path}:\n{process.log_tail()}" if process is not None else ""
                raise ClusterError(f"{what} within the ready timeout{tail}")
            time.sleep(_POLL_S)

    # ---- faults (tests, demonstrations) ----
    def kill_replica(self, index: int) -> None:
        """SIGKILL replica `index` (a crash: no drain)."""
        process = self.replicas[index]
        if process is not None:
            process.kill()

    # ---- stop ----
    def stop(self) -> None:
        """Stop the gateway, then the replicas (SIGTERM: they drain in-flight streams), killing
        whatever outlives `stop_timeout`. Safe to call twice."""
        if self.gateway is not None:
            stop_all([self.gateway], self.options.stop_timeout)
        stop_all([p for p in self.replicas if p is not None], self.options.stop_timeout)

    def processes(self) -> list[ManagedProcess]:
        return [p for p in [self.gateway, *self.replicas] if p is not None]

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
