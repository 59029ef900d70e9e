"""Child processes that cannot outlive the cluster: each in its own process group (so a stop
reaches whatever it started too), told by the kernel to exit if its parent dies first."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Optional

log = logging.getLogger("pagedserve.cluster")

_PR_SET_PDEATHSIG = 1


def _child_setup(cores: Optional[set[int]]):
    """What the child runs between fork and exec: SIGTERM when the parent dies (Linux), and its cores."""
    def setup() -> None:
        if sys.platform.startswith("linux"):
            try:
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            except (OSError, AttributeError):
                pass  # best effort: the process group stop still applies
        if cores:
            os.sched_setaffinity(0, cores)
    return setup


class ManagedProcess:
    """One child process in a process group of its own, its output appended to `log_path`.

    Start it from a thread that lives as long as the cluster: the kernel's parent-death signal
    fires when the *thread* that forked it exits.
    """

    def __init__(self, name: str, argv: list[str], log_path: str, env: Optional[dict] = None,
                 cores: Optional[set[int]] = None):
        self.name, self.argv, self.log_path, self.env, self.cores = name, argv, log_path, env, cores
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> "ManagedProcess":
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, start_new_session=True, preexec_fn=_child_setup(self.cores))
        log.info("started %s (pid %d): %s", self.name, self.popen.pid, " ".join(self.argv))
        return self

    @property
    def pid(self) -> Optional[int]:
        return None if self.popen is None else self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> Optional[int]:
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: int) -> None:
        """Send `sig` to the whole process group (nothing if it is gone)."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the process to exit; True if it has."""
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """SIGKILL the process group and reap the leader (a crash, as tests use it)."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def log_tail(self, num_bytes: int = 4000) -> str:
        """The end of the process's output, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - num_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def stop_all(processes: list[ManagedProcess], timeout: float) -> None:
    """SIGTERM every process group, wait up to `timeout` s for all of them together, then SIGKILL
    what is left; each group is signalled again at the end so no grandchild survives its leader."""
    for p in processes:
        if p.running():
            p.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        if not p.wait(max(0.0, deadline - time.monotonic())):
            log.warning("%s did not exit within %.0f s of SIGTERM: killing it", p.name, timeout)
    for p in processes:
        p.signal(signal.SIGKILL)  # the leader exited; members it left behind must not linger
        p.wait(10)
