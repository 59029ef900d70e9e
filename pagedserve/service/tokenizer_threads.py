"""Tokenization off the event loop, in daemon threads that a shutdown never waits for.

Tokenizing is pure Python: a long prompt holds a thread for a while, and on the event loop it
would stall every stream and health check. asyncio's default executor will not do either: its
threads are joined when the loop closes (and at interpreter exit), so a tokenization in flight
would delay a SIGTERM for as long as it runs. These workers are daemon threads, so the process
exits whatever they are doing; the work they run takes the request's deadline and stops once it
passes, so an abandoned tokenization does not burn a core for long either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from typing import Any, Callable

NUM_TOKENIZER_THREADS = 2  # the loop stays responsive; more threads would only contend for the GIL


class DaemonThreadPool:
    """A fixed pool of daemon threads running submitted calls in order of submission."""

    def __init__(self, num_threads: int = NUM_TOKENIZER_THREADS, name: str = "pagedserve-tokenize"):
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(num_threads):
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            future, fn, args, kwargs = self._work.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up while it queued
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)
            else:
                future.set_result(result)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a pool thread, awaited; cancelling the await drops a call
        that has not started (one that has runs on until its own deadline check stops it)."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))


_shared_pool: DaemonThreadPool | None = None
_shared_lock = threading.Lock()


def tokenizer_pool() -> DaemonThreadPool:
    """The process's tokenizer threads, started on first use."""
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = DaemonThreadPool()
        return _shared_pool
