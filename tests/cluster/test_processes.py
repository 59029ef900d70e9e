"""Process groups: a stop reaches the children's own children, and a stubborn one is killed."""

from __future__ import annotations

import os
import time

from pagedserve.cluster.processes import ManagedProcess, stop_all


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its (non-test) parent counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


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
