"""Errors the engine front raises to its callers, whatever the protocol they speak.

Each front end maps them to its own status (gRPC: service/errors.py), so none of them names a
protocol. InvalidRequestError (bad input) and QueueFullError (no room) come from below.
"""

from __future__ import annotations

from pagedserve.sampling_params import InvalidRequestError


class RequestIdInUse(InvalidRequestError):
    """Another open stream of the same owner holds this request id (ALREADY_EXISTS: the input is
    fine, the timing not)."""

    def __init__(self, request_id: str):
        super().__init__("request_id", f"request_id: request id {request_id!r} is already in use")


class EngineFailure(Exception):
    """The engine failed while computing this request (the request finished with "error")."""


class EngineNotRunning(Exception):
    """The engine thread is not running (not started yet, or stopped): retry on another replica."""

    def __init__(self):
        super().__init__("the engine is stopped")


class DeadlineExceeded(Exception):
    """The caller's deadline passed before the request finished (or before it could start)."""

    def __init__(self):
        super().__init__("the deadline passed before the request finished")
