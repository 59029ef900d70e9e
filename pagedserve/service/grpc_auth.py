"""API-key authentication of the gRPC front: a server interceptor.

A call must carry the key as `authorization: Bearer <key>` metadata, else it ends UNAUTHENTICATED
before reaching the servicer. Health and reflection stay open, so orchestrators and grpcurl work
without the key.
"""

from __future__ import annotations

import hmac

import grpc

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")
_MESSAGE = "a valid API key is needed: metadata 'authorization: Bearer <key>'"


def bearer_key(value: str | bytes | None) -> str | None:
    """The key of an `authorization` value 'Bearer <key>' (None if it is not one)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, key = value.partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, api_key: str):
        self._api_key = api_key.encode()

    def _authorized(self, metadata) -> bool:
        for name, value in metadata or ():
            if name == "authorization":
                key = bearer_key(value)
                return key is not None and hmac.compare_digest(key.encode(), self._api_key)
        return False

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES) or self._authorized(details.invocation_metadata):
            return handler
        return _denying(handler)


def _denying(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call UNAUTHENTICATED."""
    async def deny(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)

    async def deny_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)
        yield  # pragma: no cover - makes this an async generator, as streaming handlers are

    serializers = dict(request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **serializers)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **serializers)
