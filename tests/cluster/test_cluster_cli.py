"""`pagedserve cluster` as a user runs it: it prints the gateway once SMG reports the replica
healthy, serves through it, restarts a replica that crashed (the gateway takes it back), and
SIGTERM stops every process it started, exit status 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from pagedserve.cluster.gateway import worker_health
from tests.cluster.helpers import alive, free_ports

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_restarts_a_crashed_replica_and_sigterm_stops_everything(smollm2_path, tmp_path):
    replica, gateway, prometheus = free_ports(3)
    argv = [sys.executable, "-m", "pagedserve.cli.main", "cluster", "--replicas", "1", "--threads", "1",
            "--port", str(gateway), "--replica-port", str(replica), "--prometheus-port", str(prometheus),
            "--ready-timeout", "300", "--stop-timeout", "20", "--log-dir", str(tmp_path / "logs"),
            "--", "--model", smollm2_path, "--num-kv-blocks", "64", "--grace-seconds", "2"]
    err = open(tmp_path / "cluster.err", "w+")
    cluster = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = cluster.stdout.readline()  # blocks until ready (or exit: then "")
        err.seek(0)
        log = err.read()
        assert line.startswith(f"gateway http://127.0.0.1:{gateway}/v1 (cache_aware)"), (line, log[-3000:])
        pids = [int(p) for p in re.findall(r"started (?:replica-\d+|smg) \(pid (\d+)\)", log)]
        assert len(pids) == 2 and all(alive(p) for p in pids)

        models = httpx.get(f"http://127.0.0.1:{gateway}/v1/models", timeout=30).json()
        body = {"model": models["data"][0]["id"], "prompt": "The capital of France is", "max_tokens": 3}
        response = httpx.post(f"http://127.0.0.1:{gateway}/v1/completions", json=body, timeout=60)
        assert response.status_code == 200 and response.json()["choices"][0]["logprobs"] is None

        # a crashed replica is restarted and taken back by the gateway
        replica_url = f"http://127.0.0.1:{replica}"
        os.killpg(pids[0], signal.SIGKILL)
        wait_for(lambda: worker_health(f"http://127.0.0.1:{gateway}").get(replica_url) is False, 30)
        wait_for(lambda: worker_health(f"http://127.0.0.1:{gateway}").get(replica_url) is True, 240)
        err.seek(0)
        log = err.read()
        assert "replica 0 exited with code -9" in log and "restarting it" in log
        pids = [int(p) for p in re.findall(r"started (?:replica-\d+|smg) \(pid (\d+)\)", log)]
        assert len(pids) == 3 and alive(pids[-1])
        response = httpx.post(f"http://127.0.0.1:{gateway}/v1/completions", json=body, timeout=60)
        assert response.status_code == 200

        cluster.send_signal(signal.SIGTERM)
        assert cluster.wait(60) == 0
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids)
    finally:
        if cluster.poll() is None:
            cluster.send_signal(signal.SIGTERM)
            try:
                cluster.wait(60)
            except subprocess.TimeoutExpired:
                cluster.kill()  # its children get SIGTERM from the kernel (parent-death signal)
        err.close()
