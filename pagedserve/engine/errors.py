"""Errors the engine front raises to its callers, whatever the protocol they speak."""

from __future__ import annotations

from pagedserve.sampling_params import InvalidRequestError


class RequestIdInUse(InvalidRequestError):
    """Another open stream holds this request id (ALREADY_EXISTS: the input is fine, the timing not)."""

    def __init__(self, request_id: str):
        super().__init__("request_id", f"request_id: request id {request_id!r} is already in use")


class EngineFailure(Exception):
    """The engine failed while computing this request (the request finished with "error")."""
