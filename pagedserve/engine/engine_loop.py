"""The engine thread, and the bridge that hands each request's outputs to its own asyncio queue.

The engine computes in its own thread (the kernels release the GIL), so the asyncio loop keeps
serving while a step runs. A stream registers a queue before it adds its request, so no output
can be missed; the thread delivers with `loop.call_soon_threadsafe` because asyncio queues are not
thread-safe. Outputs of requests no stream listens to (any more) only feed the observer.
Requests are keyed by the engine's own request ids; callers' ids are AsyncEngine's business.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Optional, Protocol

from pagedserve.engine.errors import EngineFailure, RequestIdInUse
from pagedserve.scheduler.engine import LLMEngine
from pagedserve.scheduler.engine_stats import EngineStats
from pagedserve.scheduler.request import RequestOutput

log = logging.getLogger("pagedserve.engine_loop")

_IDLE_WAIT_S = 0.05  # how long the idle thread sleeps before re-checking the stop flag
_FAILURE_BACKOFF_S = 0.1  # pause after a step raised, so a persistent bug cannot spin a core


class EngineObserver(Protocol):
    """Told about every step and every output, on the engine thread (so it must be thread-safe).

    The server's metrics are one; the engine knows nothing else about them.
    """

    def observe_step(self, stats: EngineStats) -> None:
        """After each step, with the engine's stats."""
        ...

    def observe_output(self, output: RequestOutput) -> None:
        """Each step output of each request, whether or not a stream still listens to it."""
        ...


def _put_each(deliveries: list[tuple[asyncio.Queue, object]]) -> None:
    for queue, item in deliveries:
        queue.put_nowait(item)


class EngineLoop:
    """Runs `engine.step()` in a thread while there is work; routes outputs to per-request queues.

    Queue items are RequestOutput objects, or an EngineFailure when the step itself raised.
    """

    def __init__(self, engine: LLMEngine, loop: asyncio.AbstractEventLoop,
                 observer: Optional[EngineObserver] = None):
        self.engine = engine
        self._loop = loop
        self._observer = observer
        self._queues: dict[str, asyncio.Queue] = {}
        self._queues_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pagedserve-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop stepping (after the current step) and wait for the thread to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def open_stream(self, request_id: str) -> asyncio.Queue:
        """A fresh queue for the outputs of `request_id`; call before adding the request.

        Raises RequestIdInUse when another stream holds that id.
        """
        queue: asyncio.Queue = asyncio.Queue()
        with self._queues_lock:
            if request_id in self._queues:
                raise RequestIdInUse(request_id)
            self._queues[request_id] = queue
        return queue

    def close_stream(self, request_id: str) -> None:
        """Forget the queue: later outputs of this request are dropped."""
        with self._queues_lock:
            self._queues.pop(request_id, None)

    @property
    def num_streams(self) -> int:
        with self._queues_lock:
            return len(self._queues)

    def _run(self) -> None:
        engine = self.engine
        while not self._stop.is_set():
            if not engine.wait_for_work(_IDLE_WAIT_S):
                continue
            try:
                outputs = engine.step()
            except Exception as exc:  # the engine contains runner failures; this is a scheduler bug
                log.exception("engine step failed; failing every request of this server")
                self._fail_all(exc)
                time.sleep(_FAILURE_BACKOFF_S)
                continue
            if self._observer is not None:
                self._observer.observe_step(engine.stats())
            self._deliver(outputs)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        """Hand a step's outputs to their streams' queues in one wake-up of the event loop: one
        `call_soon_threadsafe` per output wrote the loop's self-pipe 32 times a step at 32 streams."""
        if self._observer is not None:  # also for closed streams: a cancelled request still finished
            for output in outputs:
                self._observer.observe_output(output)
        with self._queues_lock:
            deliveries = [(queue, output) for output in outputs
                          if (queue := self._queues.get(output.request_id)) is not None]
        if deliveries:
            self._call_soon(_put_each, deliveries)

    def _put(self, queue: asyncio.Queue, item) -> None:
        self._call_soon(queue.put_nowait, item)

    def _call_soon(self, callback, arg) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def _fail_all(self, exc: Exception) -> None:
        """The step raised outside the runner, so which requests it touched is unknown: abort
        every registered one (freeing its blocks) and end its stream with an engine failure."""
        with self._queues_lock:
            items = list(self._queues.items())
        for request_id, queue in items:
            try:
                self.engine.abort_request(request_id)
            except Exception:
                log.exception("could not abort request %s after a failed step", request_id)
            self._put(queue, EngineFailure(f"engine step raised {type(exc).__name__}: {exc}"))
