"""The PagedServe service registered with request deserializers that never raise.

grpc's generated registration decodes each request with `Message.FromString`; when that raises
(corrupt wire bytes, invalid UTF-8 in a string field) grpc answers UNKNOWN and logs a traceback.
Here a request that does not decode becomes a `MalformedRequest` instead, and the method's
handler hands it to `servicer.reject_malformed(method, error, context)`, which answers
INVALID_ARGUMENT, logs one line and counts it, as for any other bad request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import grpc
from google.protobuf.message import DecodeError

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["PagedServe"]


@dataclass(frozen=True)
class MalformedRequest:
    """What a request that did not decode arrives as; `error` says why (short, no bytes echoed)."""

    error: str


def safe_deserializer(message_class) -> Callable[[bytes], object]:
    """`message_class.FromString`, returning a MalformedRequest where it would raise."""

    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as e:
            return MalformedRequest(f"cannot decode {message_class.__name__}: {e}"[:200])
        except Exception as e:  # noqa: BLE001 - whatever the decoder raises, the bytes are the problem
            return MalformedRequest(f"cannot decode {message_class.__name__} ({type(e).__name__})")

    return deserialize


def _unary_unary(servicer, name: str, behaviour):
    async def handle(request, context):
        if isinstance(request, MalformedRequest):
            await servicer.reject_malformed(name, request.error, context)
        return await behaviour(request, context)

    return handle


def _unary_stream(servicer, name: str, behaviour):
    async def handle(request, context):
        if isinstance(request, MalformedRequest):
            await servicer.reject_malformed(name, request.error, context)
        async for response in behaviour(request, context):
            yield response

    return handle


def add_servicer_to_server(servicer, server: grpc.aio.Server) -> None:
    """Register every method of `servicer` (a PagedServeServicer) under its PagedServe name,
    each request decoded by `safe_deserializer`."""
    handlers = {}
    for method in SERVICE.methods:
        if method.client_streaming:
            raise NotImplementedError(f"{method.name}: client streaming is not served")
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        if method.server_streaming:
            make, wrap = grpc.unary_stream_rpc_method_handler, _unary_stream
        else:
            make, wrap = grpc.unary_unary_rpc_method_handler, _unary_unary
        handlers[method.name] = make(wrap(servicer, method.name, behaviour),
                                     request_deserializer=safe_deserializer(request_class),
                                     response_serializer=response_class.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
