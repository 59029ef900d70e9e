"""The waiting queue: FCFS (preempted requests go back to the front) or by (priority, arrival)."""

from __future__ import annotations

import bisect
from typing import Iterator

from pagedserve.scheduler.request import Request

SCHEDULING_POLICIES = ("fcfs", "priority")  # the orders a WaitingQueue keeps


class WaitingQueue:
    def __init__(self, policy: str):
        if policy not in SCHEDULING_POLICIES:
            raise ValueError(f"scheduling policy must be one of {SCHEDULING_POLICIES}, got {policy!r}")
        self.policy = policy
        self._requests: list[Request] = []

    def add(self, request: Request) -> None:
        """A new request: at the back (fcfs) or in (priority, arrival) order."""
        if self.policy == "fcfs":
            self._requests.append(request)
        else:
            bisect.insort_right(self._requests, request, key=lambda r: r.sort_key)

    def add_preempted(self, request: Request) -> None:
        """A preempted request resumes first (fcfs) or in its priority place."""
        if self.policy == "fcfs":
            self._requests.insert(0, request)
        else:
            bisect.insort_left(self._requests, request, key=lambda r: r.sort_key)

    def peek(self) -> Request:
        return self._requests[0]

    def pop(self) -> Request:
        return self._requests.pop(0)

    def remove(self, request: Request) -> bool:
        try:
            self._requests.remove(request)
            return True
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._requests)
