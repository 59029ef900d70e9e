"""SMG (Shepherd Model Gateway, PyPI `smg`) in front of the replicas: its command line, and what
it says about them.

SMG registers an HTTP worker after `GET /health` and `GET /v1/models` answer, health-checks it
every `--health-check-interval-secs`, and lists its workers with their health at `GET /workers`.
Its defaults bind 0.0.0.0, so the gateway and its Prometheus exporter are put on loopback here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from typing import Optional

from pagedserve.cluster.cluster_options import LOOPBACK, ClusterOptions

INSTALL_HINT = "SMG is an optional dependency: pip install 'pagedserve[cluster]'"


def find_smg(explicit: Optional[str] = None) -> str:
    """The smg executable: `explicit`, else the one installed beside this Python, else $PATH."""
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise ValueError(f"--smg {explicit!r} is not an executable")
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "smg")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("smg")
    if found is None:
        raise ValueError(f"no smg executable found. {INSTALL_HINT}")
    return found


def smg_argv(smg: str, options: ClusterOptions, worker_urls: list[str]) -> list[str]:
    """`smg launch` on loopback over `worker_urls` with the options' policy and health settings."""
    o = options
    return [smg, "launch", "--host", LOOPBACK, "--port", str(o.port),
            "--prometheus-host", LOOPBACK, "--prometheus-port", str(o.prometheus_port),
            "--worker-urls", *worker_urls, "--policy", o.policy,
            "--health-check-interval-secs", str(o.health_check_interval_secs),
            "--health-failure-threshold", str(o.health_failure_threshold),
            "--health-success-threshold", str(o.health_success_threshold),
            "--cb-failure-threshold", str(o.cb_failure_threshold),
            "--cb-timeout-duration-secs", str(o.cb_timeout_duration_secs)]


def worker_health(gateway_url: str, timeout: float = 2.0) -> dict[str, bool]:
    """Worker URL -> healthy, as the gateway reports it (`GET /workers`); {} while the gateway
    does not answer or has registered nobody yet."""
    try:
        with urllib.request.urlopen(gateway_url.rstrip("/") + "/workers", timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError, urllib.error.URLError):
        return {}
    workers = body.get("workers", []) if isinstance(body, dict) else body
    health = {}
    for worker in workers if isinstance(workers, list) else []:
        if isinstance(worker, dict) and "url" in worker:
            health[str(worker["url"]).rstrip("/")] = bool(worker.get("is_healthy", False))
    return health


def healthy_workers(gateway_url: str, worker_urls: list[str]) -> list[str]:
    """Those of `worker_urls` the gateway reports healthy."""
    health = worker_health(gateway_url)
    return [u for u in worker_urls if health.get(u.rstrip("/"), False)]
