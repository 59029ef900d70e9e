"""The engine as asyncio front ends see it: one object every protocol translates to and from.

`generate` is the whole life of a request as a stream of RequestOutput: it registers the stream
before adding the request (so no output is missed), merges a backlog into one output when the
consumer fell behind, turns engine failures and a passed deadline into exceptions, and aborts the
request in its `finally` when the stream ends early for any reason (which frees its KV blocks at
once). It also counts open streams, so a server can drain them before stopping.

Request ids belong to their callers: a front end passes an `owner` (the gRPC peer, an API key),
the caller's id is unique per owner only, and the engine keys the request by an id of its own.
So two callers may both use "order-1", and `abort` reaches only the owner's own requests.

Every method is for the event loop's thread; the engine thread lives in EngineLoop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import AsyncIterator, Callable, Optional

from pagedserve.engine.engine_loop import EngineLoop, EngineObserver
from pagedserve.engine.engine_request import EngineRequest
from pagedserve.engine.errors import DeadlineExceeded, EngineFailure, EngineNotRunning, RequestIdInUse
from pagedserve.model.config import ModelConfig
from pagedserve.model.loader import LoadedModel
from pagedserve.model.tokenizer import Tokenizer
from pagedserve.scheduler.engine import LLMEngine
from pagedserve.scheduler.engine_config import EngineConfig
from pagedserve.scheduler.engine_stats import EngineStats
from pagedserve.scheduler.request import RequestOutput
from pagedserve.structured.stats import StructuredOutputStats

_STOP_TIMEOUT_S = 10.0  # how long `stop` waits for the step in flight


class AsyncEngine:
    """A (warm) LLMEngine stepped in its own thread, served to coroutines as output streams.

    `model` is the model the engine runs; it answers the model accessors (None for engines over
    fake runners in tests, which then have none). `observer` sees every step and output.
    """

    def __init__(self, engine: LLMEngine, model: Optional[LoadedModel] = None,
                 observer: Optional[EngineObserver] = None):
        self._engine = engine
        self._model = model
        self._observer = observer
        self._engine_loop: Optional[EngineLoop] = None
        self._streams: dict[tuple[str, str], str] = {}  # (owner, caller's id) -> the engine's id
        self._streams_done = asyncio.Event()
        self._streams_done.set()
        self._num_constrained_requests = 0

    # ---- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread; call once, on the event loop that will consume the streams."""
        if self._engine_loop is not None:
            raise RuntimeError("AsyncEngine.start called twice")
        self._engine_loop = EngineLoop(self._engine, asyncio.get_running_loop(), self._observer)
        self._engine_loop.start()

    async def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Stop stepping (after the step in flight, waiting at most `timeout` s). Open streams
        receive nothing more: drain them first (`wait_for_streams`)."""
        if self._engine_loop is not None:
            await asyncio.to_thread(self._engine_loop.stop, timeout)

    @property
    def is_running(self) -> bool:
        return self._engine_loop is not None and self._engine_loop.is_running

    # ---- requests ------------------------------------------------------------------------------
    async def generate(self, request: EngineRequest, *, owner: str = "",
                       deadline: Optional[float] = None) -> AsyncIterator[RequestOutput]:
        """The outputs of `request`, in order, the last one finished; each carries the caller's
        request id (generated when the request has none).

        With `params.n > 1` the outputs of the n choices come interleaved, each carrying its
        `index`, each choice in order and ending with its own finished output; the iterator ends
        when all n have finished. (Choice 0 is the request itself; choices 1..n-1 fork from it when
        its prompt is computed, so the prompt is computed once: see scheduler/scheduler.py.)

        `deadline` is an absolute `time.monotonic()` time. Raises, at the first iteration,
        DeadlineExceeded (it has passed: the request never starts), EngineNotRunning,
        RequestIdInUse (the owner has an open stream with that id), InvalidRequestError or
        QueueFullError (the engine refused it); later DeadlineExceeded or EngineFailure.
        Close the iterator when you stop early (`contextlib.aclosing`): closing aborts the request
        (every choice of it).
        """
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded()
        if not self.is_running:
            raise EngineNotRunning()
        client_id = request.request_id or uuid.uuid4().hex
        key = (owner, client_id)
        constraint = request.params.constraint
        if constraint is not None and self._model is not None:
            # Compile (and cache) the grammar in a worker thread while the request waits, so the
            # step only copies a ready matcher; an invalid one raises InvalidRequestError here.
            from pagedserve.structured.compiler import compiler_for
            model = self._model
            await asyncio.to_thread(
                lambda: compiler_for(model.tokenizer, model.config.vocab_size).compile(constraint))
        if key in self._streams:  # checked after the await: a twin may have registered meanwhile
            raise RequestIdInUse(client_id)
        engine_id = uuid.uuid4().hex
        engine_loop = self._engine_loop
        queue = engine_loop.open_stream(engine_id)
        self._streams[key] = engine_id
        self._streams_done.clear()
        added = False
        num_choices, num_finished = request.params.n, 0
        try:
            self._engine.add_request(request.prompt_token_ids, request.params, engine_id, request.priority)
            added = True
            self._num_constrained_requests += constraint is not None
            while num_finished < num_choices:
                for output in await self._next_outputs(queue, deadline):
                    num_finished += output.finished
                    yield dataclasses.replace(output, request_id=client_id)
        finally:
            engine_loop.close_stream(engine_id)
            del self._streams[key]
            if added and num_finished < num_choices:
                self._engine.abort_request(engine_id)  # frees the blocks of every choice now
            if not self._streams:
                self._streams_done.set()

    @staticmethod
    async def _next_outputs(queue: asyncio.Queue, deadline: Optional[float]) -> list[RequestOutput]:
        """The next output, and any that queued up behind it merged per choice (the consumer fell
        behind: it gets one output per choice, in the order the choices first appear); raises what
        the engine sent."""
        if deadline is None:
            item = await queue.get()
        else:
            try:
                item = await asyncio.wait_for(queue.get(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise DeadlineExceeded() from None
        items = [item]
        while not queue.empty():
            items.append(queue.get_nowait())
        merged: dict[int, RequestOutput] = {}
        for item in items:
            if isinstance(item, EngineFailure):
                raise item
            previous = merged.get(item.index)
            merged[item.index] = previous.merged_with(item) if previous is not None else item
        for output in merged.values():
            if output.finish_reason == "error":
                raise EngineFailure("the model runner raised during a step holding this request")
        return list(merged.values())

    def abort(self, request_id: str, owner: str = "") -> bool:
        """Abort the owner's open request `request_id`: its blocks are free on return and its
        stream ends with finish reason "abort". False when the owner has no such open request
        (another owner's id included, whether it exists or not)."""
        engine_id = self._streams.get((owner, request_id))
        return engine_id is not None and self._engine.abort_request(engine_id)

    # ---- draining ------------------------------------------------------------------------------
    @property
    def num_active_streams(self) -> int:
        return len(self._streams)

    async def wait_for_streams(self, timeout: float) -> bool:
        """Wait until no stream is open (or `timeout` s pass, or `end_grace`); True if none is."""
        try:
            await asyncio.wait_for(self._streams_done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return not self._streams

    def end_grace(self) -> None:
        """Make a pending `wait_for_streams` return now (a second shutdown signal)."""
        self._streams_done.set()

    # ---- what front ends may read --------------------------------------------------------------
    @property
    def config(self) -> EngineConfig:
        return self._engine.config

    @property
    def clock(self) -> Callable[[], float]:
        """The engine's clock: the times in its outputs are on it."""
        return self._engine.clock

    def stats(self) -> EngineStats:
        return self._engine.stats()

    def structured_stats(self) -> StructuredOutputStats:
        """Structured-output totals: constrained requests taken, compiles, masks (zeros until used)."""
        from pagedserve.structured.compiler import built_compiler
        compiler = built_compiler(self._model.tokenizer) if self._model is not None else None
        masks = getattr(self._engine.runner, "mask_stats", None)  # a fake runner in tests has none
        return StructuredOutputStats(
            num_constrained_requests=self._num_constrained_requests,
            num_compiled=compiler.num_compiled if compiler else 0,
            num_compile_errors=compiler.num_compile_errors if compiler else 0,
            compile_seconds_total=compiler.compile_seconds_total if compiler else 0.0,
            num_masks=masks.num_masks if masks else 0,
            mask_seconds_total=masks.mask_seconds_total if masks else 0.0)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._model.tokenizer

    @property
    def model_config(self) -> ModelConfig:
        return self._model.config

    @property
    def model_path(self) -> str:
        return self._model.path
