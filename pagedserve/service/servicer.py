"""The PagedServe gRPC methods: protobuf in, engine calls, protobuf out. Nothing else lives here.

Validation is request_validation's, status codes are errors', the engine thread is engine_loop's.
A Generate stream owns its request: whatever ends the stream early (client cancellation, a passed
deadline, an error) aborts the request in the engine, which frees its KV blocks at once.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Optional

import grpc

from pagedserve.model.loader import LoadedModel
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2_grpc as pb_grpc
from pagedserve.scheduler.request import RequestOutput
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.service import request_validation as rv
from pagedserve.engine.engine_loop import EngineLoop
from pagedserve.service.errors import EngineFailure, ServiceError, status_of, unavailable
from pagedserve.service.metrics import ServerMetrics

_FINISH_REASONS = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH,
                   "abort": pb.FINISH_REASON_ABORT}
_OFF_LOOP_CHARS = 8192  # tokenize longer texts in a worker thread so the loop keeps serving


@dataclass(frozen=True)
class Backend:
    """What the methods serve once the engine is warm."""

    engine_loop: EngineLoop
    model: LoadedModel
    limits: rv.RequestLimits
    max_message_bytes: int


def _timings(output: RequestOutput) -> pb.Timings:
    start = output.arrival_time
    end = output.finish_time if output.finish_time is not None else start
    scheduled = output.first_scheduled_time if output.first_scheduled_time is not None else end
    first_token = output.first_token_time - start if output.first_token_time is not None else 0.0
    return pb.Timings(queue_seconds=scheduled - start, time_to_first_token_seconds=first_token,
                      total_seconds=end - start)


def generate_response(output: RequestOutput, request_id: str) -> pb.GenerateResponse:
    """The protobuf of one (possibly merged) step output; the final one carries usage and timings."""
    response = pb.GenerateResponse(request_id=request_id, text=output.new_text, token_ids=output.new_token_ids)
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


def _deadline_exceeded() -> ServiceError:
    return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the request finished")


class PagedServeServicer(pb_grpc.PagedServeServicer):
    """Serves nothing (UNAVAILABLE) until `backend` is set, and again once `draining` is set."""

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics
        self.backend: Optional[Backend] = None
        self.draining = False
        self.num_active_streams = 0
        self._streams_done = asyncio.Event()
        self._streams_done.set()

    async def wait_for_streams(self, timeout: float) -> bool:
        """Wait until no Generate stream is open (or `timeout` s pass); True if none is."""
        try:
            await asyncio.wait_for(self._streams_done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.num_active_streams == 0

    def end_grace(self) -> None:
        """Make a pending `wait_for_streams` return now (a second shutdown signal)."""
        self._streams_done.set()

    def _ready(self, allow_draining: bool = False) -> Backend:
        if self.draining and not allow_draining:
            raise unavailable("the server is shutting down; retry on another replica")
        if self.backend is None:
            raise unavailable("the server is warming up (compiling kernels); retry shortly")
        return self.backend

    async def _fail(self, context, method: str, exc: BaseException, request_id: Optional[str] = None):
        code, message = status_of(exc, request_id)
        self.metrics.count_error(method, code.name)
        if not isinstance(exc, asyncio.CancelledError):  # a cancelled call has nobody to tell
            await context.abort(code, message)

    # ---- Generate ----------------------------------------------------------------------------
    async def Generate(self, request: pb.GenerateRequest, context):
        request_id = request.request_id or None
        try:
            backend = self._ready()
            tokenizer, limits = backend.model.tokenizer, backend.limits
            if request.WhichOneof("input") == "text" and len(request.text) > _OFF_LOOP_CHARS:
                checked = await asyncio.to_thread(rv.engine_request, request, tokenizer, limits)
            else:
                checked = rv.engine_request(request, tokenizer, limits)
            request_id = checked.request_id or uuid.uuid4().hex
            async for response in self._stream(backend, checked, request_id, context):
                yield response
        except (Exception, asyncio.CancelledError) as exc:
            remaining = context.time_remaining()
            if isinstance(exc, asyncio.CancelledError) and remaining is not None and remaining <= 0:
                # gRPC cancels the handler itself when the deadline passes: count it as what it is
                self.metrics.count_error("Generate", grpc.StatusCode.DEADLINE_EXCEEDED.name)
                raise
            await self._fail(context, "Generate", exc, request_id)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _stream(self, backend: Backend, checked: rv.EngineRequest, request_id: str, context):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _deadline_exceeded()  # never start a request nobody waits for any more
        loop = backend.engine_loop
        if not loop.is_running:
            raise unavailable("the engine is stopped")
        queue = loop.open_stream(request_id)
        self.num_active_streams += 1
        self._streams_done.clear()
        added = finished = False
        try:
            loop.engine.add_request(checked.prompt_token_ids, checked.params, request_id, checked.priority)
            added = True
            while not finished:
                try:
                    item = await asyncio.wait_for(queue.get(), context.time_remaining())
                except asyncio.TimeoutError:
                    raise _deadline_exceeded() from None
                while not isinstance(item, EngineFailure) and not item.finished and not queue.empty():
                    later = queue.get_nowait()  # the client fell behind: send one merged response
                    item = later if isinstance(later, EngineFailure) else item.merged_with(later)
                if isinstance(item, EngineFailure):
                    raise item
                if item.finish_reason == "error":
                    raise EngineFailure("the model runner raised during a step holding this request")
                finished = item.finished
                yield generate_response(item, request_id)
        finally:
            loop.close_stream(request_id)
            if added and not finished:
                loop.engine.abort_request(request_id)  # frees its blocks now
            self.num_active_streams -= 1
            if self.num_active_streams == 0:
                self._streams_done.set()

    # ---- unary methods -----------------------------------------------------------------------
    async def Tokenize(self, request: pb.TokenizeRequest, context):
        try:
            tokenizer = self._ready().model.tokenizer
            kind = request.WhichOneof("input")
            if kind is None:
                raise InvalidRequestError("input", "input: give one of text or chat")
            if kind == "chat":
                ids = rv.render_chat(tokenizer, request.chat)
            else:
                add_special = request.add_special_tokens if request.HasField("add_special_tokens") else True
                if len(request.text) > _OFF_LOOP_CHARS:
                    ids = await asyncio.to_thread(tokenizer.encode, request.text, add_special)
                else:
                    ids = tokenizer.encode(request.text, add_special)
            return pb.TokenizeResponse(token_ids=ids)
        except Exception as exc:
            await self._fail(context, "Tokenize", exc)

    async def Detokenize(self, request: pb.DetokenizeRequest, context):
        try:
            backend = self._ready()
            ids = rv.check_token_ids(request.token_ids, backend.limits.vocab_size, "token_ids")
            return pb.DetokenizeResponse(text=backend.model.tokenizer.decode(ids, request.skip_special_tokens))
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
            return pb.AbortResponse(aborted=backend.engine_loop.engine.abort_request(request.request_id))
        except Exception as exc:
            await self._fail(context, "Abort", exc)


def model_info(backend: Backend) -> pb.ModelInfoResponse:
    """The served model, its KV cache and the request limits, as the API reports them."""
    engine, cfg, limits = backend.engine_loop.engine, backend.model.config, backend.limits
    spec = engine.config.kv_cache_spec
    return pb.ModelInfoResponse(
        model_name=cfg.name, architecture=cfg.architecture, context_length=cfg.context_length,
        vocab_size=limits.vocab_size, weight_format=cfg.weight_format, kv_dtype=spec.kv_dtype,
        block_size=spec.block_size, num_blocks_total=engine.stats().num_blocks_total[0],
        bytes_per_block=sum(spec.bytes_per_block), sliding_windows=[g.sliding_window for g in spec.groups],
        limits=pb.ServerLimits(
            max_model_len=limits.max_model_len, max_tokens_limit=limits.max_tokens_limit,
            max_num_seqs=engine.config.max_num_seqs, max_waiting=engine.config.max_waiting,
            max_num_batched_tokens=engine.config.max_num_batched_tokens,
            max_stop_strings=limits.max_stop_strings, max_stop_string_chars=limits.max_stop_string_chars,
            max_message_bytes=backend.max_message_bytes))
