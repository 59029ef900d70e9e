"""Tokenization off the event loop, in daemon threads that a shutdown never waits for.

Tokenizing is pure Python: a long prompt holds a thread for a while, and on the event loop it
would stall every stream and health check. asyncio's default executor will not do either: its
threads are joined when the loop closes (and at interpreter exit), so a tokenization in flight
would delay a SIGTERM for as long as it runs. These workers are daemon threads, so the process
exits whatever they are doing, and `close` interrupts what they run; the work takes the
request's deadline and stops once it passes, so an abandoned tokenization does not burn a core
for long either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import queue
import threading
from typing import Any, Callable

NUM_TOKENIZER_THREADS = 2  # the loop stays responsive; more threads would only contend for the GIL


class PoolClosed(BaseException):
    """The pool closed while the call ran or waited. A BaseException, so no `except Exception`
    in the interrupted code can swallow it."""


def _raise_in_thread(thread_id: int, exc_type: type) -> None:
    """Raise `exc_type` in thread `thread_id` at its next Python instruction (CPython's
    PyThreadState_SetAsyncExc: the way to stop pure-Python work in another thread)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


class DaemonThreadPool:
    """A fixed pool of daemon threads running submitted calls in order of submission.

    `close` interrupts the calls in flight: a process whose CPU-bound threads hold the GIL
    otherwise spends seconds exiting, every step of its shutdown waiting for a GIL switch.
    """

    def __init__(self, num_threads: int = NUM_TOKENIZER_THREADS, name: str = "pagedserve-tokenize"):
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy: set[int] = set()  # ids of the threads running a call
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
                         for i in range(num_threads)]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        me = threading.get_ident()
        try:
            while True:
                job = self._work.get()
                if job is None:
                    return
                future, fn, args, kwargs = job
                if not future.set_running_or_notify_cancel():
                    continue  # its caller gave up while it queued
                with self._lock:
                    if self._closed:
                        future.set_exception(PoolClosed("the tokenizer threads are closed"))
                        continue
                    self._busy.add(me)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    with self._lock:
                        self._busy.discard(me)
        except PoolClosed:
            return  # the interrupt of `close` arrived between calls: closing anyway

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a pool thread, awaited; cancelling the await drops a call
        that has not started (one that has runs on until its own deadline check stops it)."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def close(self) -> None:
        """Interrupt the calls in flight (they raise PoolClosed), fail the queued ones, end the
        threads. Returns at once."""
        with self._lock:
            self._closed = True
            busy = list(self._busy)
        for thread_id in busy:
            _raise_in_thread(thread_id, PoolClosed)
        for _ in self._threads:
            self._work.put(None)
