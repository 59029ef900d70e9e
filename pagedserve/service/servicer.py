"""The PagedServe gRPC methods: protobuf in, engine calls, protobuf out. Nothing else lives here.

Validation is request_validation's, status codes are errors', and a request's life as a stream
(backlog merging, deadline, aborting whatever ends early, drain counting) is AsyncEngine's. Request
ids are scoped by the caller's peer: two peers may use the same id, and Abort reaches only the
caller's own requests (any other id answers NOT_FOUND, whether another caller has it or not).

Text and chat input is tokenized in the daemon tokenizer threads (tokenizer_threads), never on
the event loop, under the call's deadline. Every call is counted once in the error metrics by
how it ended: a deadline passing is DEADLINE_EXCEEDED wherever it strikes (tokenizing, queued,
decoding), a client's cancellation CANCELLED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import grpc

from pagedserve.engine.async_engine import AsyncEngine
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2_grpc as pb_grpc
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.scheduler.request import RequestOutput
from pagedserve.service import request_validation as rv
from pagedserve.service.errors import not_found, status_of, unavailable
from pagedserve.service.metrics import ServerMetrics
from pagedserve.service.tokenizer_threads import DaemonThreadPool

log = logging.getLogger("pagedserve.service")

_FINISH_REASONS = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH,
                   "abort": pb.FINISH_REASON_ABORT}
# gRPC cancels a handler when the call's deadline passes, by its own clock: a cancellation this
# close to the deadline is the deadline's doing, not the client's.
_DEADLINE_SLACK_S = 0.05


@dataclass(frozen=True)
class Backend:
    """What the methods serve once the engine is warm."""

    engine: AsyncEngine
    limits: rv.RequestLimits
    max_message_bytes: int


def _timings(output: RequestOutput) -> pb.Timings:
    start = output.arrival_time
    end = output.finish_time if output.finish_time is not None else start
    scheduled = output.first_scheduled_time if output.first_scheduled_time is not None else end
    first_token = output.first_token_time - start if output.first_token_time is not None else 0.0
    return pb.Timings(queue_seconds=scheduled - start, time_to_first_token_seconds=first_token,
                      total_seconds=end - start)


def generate_response(output: RequestOutput) -> pb.GenerateResponse:
    """The protobuf of one (possibly merged) step output; the final one carries usage and timings."""
    response = pb.GenerateResponse(request_id=output.request_id, text=output.new_text,
                                   token_ids=output.new_token_ids)
    for sampled in output.new_logprobs:
        response.logprobs.add(
            token=pb.TokenLogprob(token_id=sampled.token_id, logprob=sampled.logprob),
            top=[pb.TokenLogprob(token_id=i, logprob=lp) for i, lp in sampled.top_logprobs])
    if output.finished:
        response.finish_reason = _FINISH_REASONS[output.finish_reason]
        if isinstance(output.stop_reason, str):
            response.stop_string = output.stop_reason
        elif output.stop_reason is not None:
            response.stop_token_id = int(output.stop_reason)
        response.usage.CopyFrom(pb.Usage(prompt_tokens=output.num_prompt_tokens,
                                         completion_tokens=output.num_output_tokens,
                                         cached_prompt_tokens=output.num_cached_tokens))
        response.timings.CopyFrom(_timings(output))
    return response


def _deadline_of(context) -> Optional[float]:
    """The call's deadline as a time.monotonic() time (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _cancellation_code(context) -> str:
    """What a cancelled handler's call ended with: the deadline, or the client's cancellation."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= _DEADLINE_SLACK_S else "CANCELLED"


class PagedServeServicer(pb_grpc.PagedServeServicer):
    """Serves nothing (UNAVAILABLE) until `backend` is set, and again once `draining` is set."""

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics
        self.backend: Optional[Backend] = None
        self.draining = False
        self.tokenizer_threads = DaemonThreadPool()
        self.owner_of = lambda context: context.peer()  # who a request id belongs to (the server may scope by API key)

    def close(self) -> None:
        """Interrupt tokenizations still running (the server has stopped: nobody awaits them)."""
        self.tokenizer_threads.close()

    def end_grace(self) -> None:
        """Make a pending drain (`AsyncEngine.wait_for_streams`) return now (a second shutdown signal)."""
        if self.backend is not None:
            self.backend.engine.end_grace()

    def _ready(self, allow_draining: bool = False) -> Backend:
        if self.draining and not allow_draining:
            raise unavailable("the server is shutting down; retry on another replica")
        if self.backend is None:
            raise unavailable("the server is warming up (compiling kernels); retry shortly")
        return self.backend

    async def _fail(self, context, method: str, exc: BaseException, request_id: Optional[str] = None):
        """Count the call's end once and tell the client; a cancelled call (by the client, or by
        gRPC at the deadline) has nobody to tell, so it is only counted."""
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            self.metrics.count_error(method, _cancellation_code(context))
            return
        code, message = status_of(exc, request_id)
        self.metrics.count_error(method, code.name)
        await context.abort(code, message)

    async def reject_malformed(self, method: str, error: str, context) -> None:
        """A request message that did not decode: INVALID_ARGUMENT, one log line, one count."""
        log.warning("%s: malformed request message from %s: %s", method, context.peer(), error)
        self.metrics.count_error(method, "INVALID_ARGUMENT")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request message is malformed: {error}")

    # ---- Generate ----------------------------------------------------------------------------
    async def Generate(self, request: pb.GenerateRequest, context):
        request_id = None  # named once checked (it goes into logs), so errors can name it
        deadline = _deadline_of(context)
        try:
            backend = self._ready()
            engine, limits = backend.engine, backend.limits
            if request.WhichOneof("input") in ("text", "chat"):
                checked = await self.tokenizer_threads.run(rv.engine_request, request, engine.tokenizer, limits,
                                                           deadline)
            else:
                checked = rv.engine_request(request, engine.tokenizer, limits)
            request_id = checked.request_id or uuid.uuid4().hex
            checked = dataclasses.replace(checked, request_id=request_id)
            outputs = engine.generate(checked, owner=self.owner_of(context), deadline=deadline)
            async with contextlib.aclosing(outputs):  # closing aborts a request that did not finish
                async for output in outputs:
                    yield generate_response(output)
        except (Exception, asyncio.CancelledError, GeneratorExit) as exc:
            # GeneratorExit: gRPC closed the stream while it waited at `yield` (a cancellation);
            # _fail only counts it, without suspending, as a closing generator must
            await self._fail(context, "Generate", exc, request_id)
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                raise

    # ---- unary methods -----------------------------------------------------------------------
    async def Tokenize(self, request: pb.TokenizeRequest, context):
        try:
            backend = self._ready()
            tokenizer = backend.engine.tokenizer
            kind = request.WhichOneof("input")
            if kind is None:
                raise InvalidRequestError("input", "input: give one of text or chat")
            rv.check_input_size(request, backend.limits)
            deadline = _deadline_of(context)
            if kind == "chat":
                ids = await self.tokenizer_threads.run(rv.render_chat, tokenizer, request.chat, "chat", deadline)
            else:
                add_special = request.add_special_tokens if request.HasField("add_special_tokens") else True
                ids = await self.tokenizer_threads.run(tokenizer.encode, request.text, add_special, deadline=deadline)
            return pb.TokenizeResponse(token_ids=ids)
        except (Exception, asyncio.CancelledError) as exc:
            await self._fail(context, "Tokenize", exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def Detokenize(self, request: pb.DetokenizeRequest, context):
        try:
            backend = self._ready()
            ids = rv.check_token_ids(request.token_ids, backend.limits.vocab_size, "token_ids")
            return pb.DetokenizeResponse(text=backend.engine.tokenizer.decode(ids, request.skip_special_tokens))
        except Exception as exc:
            await self._fail(context, "Detokenize", exc)

    async def ModelInfo(self, request: pb.ModelInfoRequest, context):
        try:
            return model_info(self._ready())
        except Exception as exc:
            await self._fail(context, "ModelInfo", exc)

    async def Abort(self, request: pb.AbortRequest, context):
        try:
            backend = self._ready(allow_draining=True)  # aborting helps a drain finish
            if not request.request_id:
                raise InvalidRequestError("request_id", "request_id: give the id of the request to abort")
            request_id = rv.check_request_id(request.request_id)
            if not backend.engine.abort(request_id, owner=self.owner_of(context)):
                raise not_found(f"request_id: this caller has no unfinished request {request_id!r}")
            return pb.AbortResponse(aborted=True)
        except Exception as exc:
            await self._fail(context, "Abort", exc)


def model_info(backend: Backend) -> pb.ModelInfoResponse:
    """The served model, its KV cache and the request limits, as the API reports them."""
    engine, limits = backend.engine, backend.limits
    cfg = engine.model_config
    spec = engine.config.kv_cache_spec
    return pb.ModelInfoResponse(
        model_name=cfg.name, architecture=cfg.architecture, context_length=cfg.context_length,
        vocab_size=limits.vocab_size, weight_format=cfg.weight_format, kv_dtype=spec.kv_dtype,
        block_size=spec.block_size, num_blocks_total=engine.stats().num_blocks_total[0],
        bytes_per_block=sum(spec.bytes_per_block), sliding_windows=[g.sliding_window for g in spec.groups],
        limits=pb.ServerLimits(
            max_model_len=limits.max_model_len, max_tokens_limit=limits.max_tokens_limit,
            max_prompt_tokens=limits.max_prompt_tokens or limits.max_model_len - 1,
            max_num_seqs=engine.config.max_num_seqs, max_waiting=engine.config.max_waiting,
            max_num_batched_tokens=engine.config.max_num_batched_tokens,
            max_stop_strings=limits.max_stop_strings, max_stop_string_chars=limits.max_stop_string_chars,
            max_message_bytes=backend.max_message_bytes))
