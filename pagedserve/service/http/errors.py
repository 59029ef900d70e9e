"""Every exception an HTTP call can end with, as OpenAI's error body and status, in one place.

OpenAI clients read `{"error": {"message", "type", "param", "code"}}` and map the status to typed
exceptions (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429 RateLimitError,
503 InternalServerError...). Only an exception nobody anticipated becomes 500, and it is logged.
"""

from __future__ import annotations

import logging
from typing import Optional

from fastapi.responses import JSONResponse

from pagedserve.engine.errors import DeadlineExceeded, EngineFailure, EngineNotRunning, RequestIdInUse
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.scheduler.scheduler import QueueFullError

log = logging.getLogger("pagedserve.service.http")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          409: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 504: "timeout"}


class HttpError(Exception):
    """A refusal decided by the HTTP front itself, with its status and the field it names."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def not_serving(message: str) -> HttpError:
    return HttpError(503, message, code="not_serving")


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error" if status >= 500 else
                                                             "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, param: Optional[str] = None,
                   code: Optional[str] = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def http_error_of(exc: BaseException) -> HttpError:
    """The HttpError a call that raised `exc` answers with. Logs the unexpected ones."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, RequestIdInUse):
        return HttpError(409, str(exc), exc.field, "request_id_in_use")
    if isinstance(exc, InvalidRequestError):
        return HttpError(400, str(exc), exc.field)
    if isinstance(exc, QueueFullError):
        return HttpError(429, str(exc), code="queue_full")
    if isinstance(exc, EngineNotRunning):
        return not_serving(str(exc))
    if isinstance(exc, DeadlineExceeded):
        return HttpError(504, str(exc))
    if isinstance(exc, EngineFailure):
        log.error("a request failed in the engine: %s", exc)
        return HttpError(500, "the engine failed on this request; see the server log")
    log.error("internal error in an HTTP request", exc_info=exc)
    return HttpError(500, f"internal error: {type(exc).__name__}; see the server log")


def response_of(exc: BaseException) -> JSONResponse:
    err = http_error_of(exc)
    return error_response(err.status, str(err), err.param, err.code)
