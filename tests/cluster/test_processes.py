"""Process groups: a stop reaches the children's own children, and a stubborn one is killed."""

from __future__ import annotations

import os
import time

from pagedserve.cluster.processes import ManagedProcess, stop_all
from tests.cluster.helpers import alive


def wait_for_file(path: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and open(path).read().strip():
            return open(path).read().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def test_stop_reaches_grandchildren(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    process = ManagedProcess("sh", ["sh", "-c", script], str(tmp_path / "sh.log")).start()
    grandchild = int(wait_for_file(str(pid_file)))
    assert alive(grandchild) and process.running()
    stop_all([process], timeout=10)
    assert not process.running()
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_a_process_ignoring_sigterm_is_killed(tmp_path):
    ready = tmp_path / "ready"
    script = f"trap '' TERM; echo 1 > {ready}; while true; do sleep 0.1; done"
    process = ManagedProcess("stubborn", ["sh", "-c", script], str(tmp_path / "s.log")).start()
    wait_for_file(str(ready))
    stop_all([process], timeout=0.5)
    assert not process.running() and process.exit_code() == -9


def test_log_tail_holds_the_output(tmp_path):
    process = ManagedProcess("echo", ["sh", "-c", "echo hello-from-child"], str(tmp_path / "e.log")).start()
    assert process.wait(10)
    assert "hello-from-child" in process.log_tail()


def test_children_exit_when_the_cluster_process_is_killed(tmp_path):
    """SIGKILL leaves no handler to stop anything: the kernel's parent-death signal must."""
    import signal
    import subprocess
    import sys

    code = ("import sys, time\n"
            "from pagedserve.cluster.processes import ManagedProcess\n"
            f"p = ManagedProcess('sleeper', ['sleep', '60'], {str(tmp_path / 'c.log')!r}).start()\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        parent.kill()
        parent.wait(10)
