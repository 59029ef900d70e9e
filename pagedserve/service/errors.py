"""Every exception a call can end with, turned into a gRPC status in this one place.

Handlers raise; `status_of` decides the code and the message the client sees. Only an exception
nobody anticipated becomes INTERNAL, and it is logged with the request id, because it is a bug.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

import grpc

from pagedserve.engine.errors import DeadlineExceeded, EngineFailure, EngineNotRunning, RequestIdInUse
from pagedserve.model.tokenizer import TokenizeDeadlineExceeded
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.scheduler.scheduler import QueueFullError

log = logging.getLogger("pagedserve.service")


class ServiceError(Exception):
    """A refusal decided by the service itself, carrying its status code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def status_of(exc: BaseException, request_id: Optional[str] = None) -> tuple[grpc.StatusCode, str]:
    """The (code, message) a call that raised `exc` ends with. Logs the unexpected ones."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, RequestIdInUse):
        return grpc.StatusCode.ALREADY_EXISTS, str(exc)
    if isinstance(exc, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, QueueFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, (DeadlineExceeded, TokenizeDeadlineExceeded)):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, EngineNotRunning):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, "the call was cancelled"
    if isinstance(exc, EngineFailure):
        log.error("request %s failed in the engine: %s", request_id, exc)
        return grpc.StatusCode.INTERNAL, f"the engine failed on request {request_id}; see the server log"
    log.error("internal error in request %s", request_id, exc_info=exc)
    return grpc.StatusCode.INTERNAL, (
        f"internal error in request {request_id}: {type(exc).__name__}; see the server log")
