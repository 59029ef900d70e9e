"""Waiting for a target to be ready before the run, as `vllm bench serve` does: a server that is
still warming up (gRPC health NOT_SERVING, HTTP /health 503) is polled, not reported as failed."""

from __future__ import annotations

import time
from typing import Callable

_POLL_INTERVAL_S = 1.0


class NotReady(OSError):
    """The target was not ready within the timeout."""


def wait_until_ready(check: Callable[[], str], timeout: float, what: str,
                     clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Call `check` (returns "" when ready, else why not) until it is ready; raises NotReady with
    the last reason once `timeout` seconds have passed."""
    deadline = clock() + timeout
    while True:
        reason = check()
        if not reason:
            return
        if clock() >= deadline:
            raise NotReady(f"{what} not ready after {timeout:g} s: {reason}")
        sleep(min(_POLL_INTERVAL_S, max(0.0, deadline - clock())))
