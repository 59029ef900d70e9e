"""The OpenAI-compatible HTTP front: a FastAPI app over the server's AsyncEngine.

Every handler is a thin translation: body -> EngineRequest (to_engine) -> AsyncEngine -> OpenAI
JSON or SSE. Health and /metrics are open; every other path needs the API key when one is set.
Malformed bodies (bad JSON, wrong types, missing fields) are OpenAI-style 400s naming the field.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from typing import Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from pagedserve.sampling_params import InvalidRequestError
from pagedserve.service.http.chat_completions import create_chat_completion
from pagedserve.service.http.completions import create_completion
from pagedserve.service.http.errors import HttpError, error_response, response_of
from pagedserve.service.http.protocol import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                                              TokenizeRequest)
from pagedserve.service.http.to_engine import chat_messages
from pagedserve.service.metrics import ServerMetrics
from pagedserve.service import request_validation as rv
from pagedserve.service.servicer import Backend
from pagedserve.service.tokenizer_threads import DaemonThreadPool

OPEN_PATHS = ("/health", "/metrics")
ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics",
             "/tokenize", "/detokenize")


def owner_of_key(api_key: str) -> str:
    """The request-id owner of a caller holding `api_key`: a hash, so the key is kept nowhere."""
    return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _field_path(loc: tuple) -> Optional[str]:
    """("body", "messages", 0, "role") -> "messages[0].role"; None for the body as a whole."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


class _AuthAndMetrics:
    """ASGI middleware: checks the bearer key (open paths excepted) and counts every response by
    endpoint and status. Plain ASGI, so streaming and disconnects pass through untouched."""

    def __init__(self, app, api_key: Optional[str], metrics: ServerMetrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 500}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and path not in OPEN_PATHS and not self._authorized(scope):
                response = error_response(401, "a valid API key is needed: 'Authorization: Bearer <key>'",
                                          code="invalid_api_key")
                await response(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            self.metrics.count_http_request(endpoint, status["code"])

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, key = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.api_key.encode())
        return False


async def _unless_disconnected(call, request: Request):
    """Await `call`, cancelling it (which aborts its engine requests) if the client goes away
    first: a non-streaming response is only sent at the end, so nothing else would notice."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.ensure_future(call), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    return await task  # raises CancelledError when the client left: nobody is there to answer


def create_app(get_backend: Callable[[], Backend], metrics: ServerMetrics, tokenizer_threads: DaemonThreadPool,
               api_key: Optional[str] = None):
    """The ASGI app (FastAPI inside the auth and metrics middleware). `get_backend` returns what to
    serve or raises HttpError 503 (warming up, draining). Text and chat input is tokenized in
    `tokenizer_threads` (the gRPC front's), never on the event loop both fronts share: a long
    prompt would stall every stream and health check of the process."""
    app = FastAPI(title="pagedserve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}".strip())
        param = _field_path(tuple(first.get("loc", ())))
        message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problems)"
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_exception(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception):
        return response_of(exc)

    def owner_of(request: Request) -> str:
        if api_key is not None:
            return owner_of_key(api_key)
        client = request.client
        return f"http:{client.host}" if client else "http"

    def model_name(backend: Backend) -> str:
        return backend.engine.model_config.name

    def check_model(backend: Backend, model: Optional[str]) -> None:
        path = backend.engine.model_path
        names = {model_name(backend), path, os.path.basename(path)}
        if model and model not in names:
            raise HttpError(404, f"model: the model {model!r} does not exist; this server serves "
                                 f"{model_name(backend)!r}", "model", "model_not_found")

    async def serve(handler, body, request: Request):
        try:
            backend = get_backend()
            check_model(backend, body.model)
            call = handler(body, backend, owner_of(request), model_name(backend), tokenizer_threads.run)
            return await (call if body.stream else _unless_disconnected(call, request))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error body
            return response_of(exc)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await serve(create_completion, body, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await serve(create_chat_completion, body, request)

    @app.get("/v1/models")
    async def models():
        try:
            backend = get_backend()
        except Exception as exc:  # noqa: BLE001
            return response_of(exc)
        return {"object": "list", "data": [{
            "id": model_name(backend), "object": "model", "created": 0, "owned_by": "pagedserve",
            "root": backend.engine.model_path, "max_model_len": backend.limits.max_model_len}]}

    @app.get("/health")
    async def health():
        try:
            get_backend()
        except Exception as exc:  # noqa: BLE001
            return response_of(exc)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        try:
            backend = get_backend()
            check_model(backend, body.model)
            tokenizer = backend.engine.tokenizer
            if (body.prompt is None) == (body.messages is None):
                raise InvalidRequestError("prompt", "prompt: give one of prompt or messages")
            if body.messages is not None:
                rv.check_input_bytes("messages", (t for m in body.messages for t in (m.role, m.text)), backend.limits)
                try:
                    ids = await tokenizer_threads.run(rv.render_chat, tokenizer, chat_messages(body.messages),
                                                      "messages")
                except InvalidRequestError as exc:
                    raise InvalidRequestError(exc.field.replace(".messages", "", 1),
                                              str(exc).replace("messages.messages", "messages", 1)) from None
            else:
                rv.check_input_bytes("prompt", [body.prompt], backend.limits)
                ids = await tokenizer_threads.run(tokenizer.encode, body.prompt, body.add_special_tokens)
            return JSONResponse({"count": len(ids), "max_model_len": backend.limits.max_model_len, "tokens": ids})
        except Exception as exc:  # noqa: BLE001
            return response_of(exc)

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        try:
            backend = get_backend()
            check_model(backend, body.model)
            for i, token_id in enumerate(body.tokens):
                if token_id < 0:
                    raise InvalidRequestError(f"tokens[{i}]", f"tokens[{i}]: {token_id} is not a token id")
            ids = rv.check_token_ids(body.tokens, backend.limits.vocab_size, "tokens")
            return JSONResponse({"prompt": backend.engine.tokenizer.decode(ids)})
        except Exception as exc:  # noqa: BLE001
            return response_of(exc)

    return _AuthAndMetrics(app, api_key, metrics)
