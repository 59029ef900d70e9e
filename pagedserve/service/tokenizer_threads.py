"""Tokenization off the event loop, in daemon threads that a shutdown never waits for.

Tokenizing is pure Python: a long prompt holds a thread for a while, and on the event loop it
would stall every stream and health check. asyncio's default executor will not do either: its
threads are joined when the loop closes (and at interpreter exit), so a tokenization in flight
would delay a SIGTERM for as long as it runs. These workers are daemon threads, so the process
exits whatever they are doing, and `close` interrupts what they run. A tokenization stops when
its caller goes away (the awaiting coroutine is cancelled: the client cancelled, the deadline
passed, the server stopped), and the tokenizer checks the deadline itself too, so abandoned
work does not burn a core.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import queue
import sys
import threading
from typing import Any, Callable, Optional

NUM_TOKENIZER_THREADS = 2  # the loop stays responsive; more threads would only contend for the GIL
# While any call runs, a thread waiting for the GIL gets it after this long (CPython's default is
# 5 ms). The event loop waits for the GIL at every step of answering a request; with two 30 KB
# tokenizations holding it, health checks took p99 74-119 ms at 5 ms and 28-31 ms at 1 ms
# (loaded dev box). The interval the process had comes back once no call runs.
BUSY_SWITCH_INTERVAL_S = 0.001

_switch_lock = threading.Lock()
_num_running_calls = 0  # over every pool of the process
_idle_switch_interval = sys.getswitchinterval()


def _call_started() -> None:
    global _num_running_calls, _idle_switch_interval
    with _switch_lock:
        _num_running_calls += 1
        if _num_running_calls == 1:
            _idle_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(BUSY_SWITCH_INTERVAL_S, _idle_switch_interval))


def _call_ended() -> None:
    global _num_running_calls
    with _switch_lock:
        _num_running_calls = max(0, _num_running_calls - 1)
        if _num_running_calls == 0:
            sys.setswitchinterval(_idle_switch_interval)


class CallInterrupted(BaseException):
    """The call was stopped in its thread: its caller went away. A BaseException, so no
    `except Exception` in the interrupted code can swallow it."""


class PoolClosed(CallInterrupted):
    """The pool closed while the call ran or waited."""


def _raise_in_thread(thread_id: int, exc_type: Optional[type]) -> None:
    """Raise `exc_type` in thread `thread_id` at its next Python instruction, or (None) withdraw
    one not raised yet (CPython's PyThreadState_SetAsyncExc: the way to stop pure-Python work
    in another thread)."""
    exc = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


class DaemonThreadPool:
    """A fixed pool of daemon threads running submitted calls in order of submission.

    A call whose awaiting coroutine is cancelled (the client went away, the server stopped) is
    interrupted: CallInterrupted is raised in its thread. `close` interrupts them all: a process
    whose CPU-bound threads hold the GIL otherwise spends seconds exiting.
    """

    def __init__(self, num_threads: int = NUM_TOKENIZER_THREADS, name: str = "pagedserve-tokenize"):
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[int, concurrent.futures.Future] = {}  # thread id -> the call's future
        self._interrupted: set[int] = set()  # ids of the threads told to stop their current call
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
                         for i in range(num_threads)]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        me = threading.get_ident()
        while True:
            future = None
            try:
                job = self._work.get()
                if job is None:
                    return
                future = job[0]
                try:
                    self._run(me, *job)
                finally:
                    with self._lock:
                        if self._running.pop(me, None) is not None:
                            _call_ended()
                        if me in self._interrupted:
                            self._interrupted.discard(me)
                            _raise_in_thread(me, None)  # not raised yet: it was meant for this call
            except CallInterrupted as exc:  # raised after the call itself had returned
                if future is not None and not future.done():
                    future.set_exception(exc)

    def _run(self, me: int, future: concurrent.futures.Future, fn, args, kwargs) -> None:
        if not future.set_running_or_notify_cancel():
            return  # its caller gave up while it queued
        with self._lock:
            if self._closed:
                future.set_exception(PoolClosed("the tokenizer threads are closed"))
                return
            self._running[me] = future
            _call_started()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _interrupt(self, future: Optional[concurrent.futures.Future], exc_type: type) -> None:
        """Raise exc_type in the thread running `future` (None: every running call), once."""
        with self._lock:
            for thread_id, running in self._running.items():
                if (future is None or running is future) and thread_id not in self._interrupted:
                    self._interrupted.add(thread_id)
                    _raise_in_thread(thread_id, exc_type)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a pool thread, awaited. Cancelling the await drops the call
        if it has not started and interrupts it if it has."""
        future = self.submit(fn, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._interrupt(future, CallInterrupted)
            raise

    def close(self) -> None:
        """Interrupt the calls in flight (they raise PoolClosed), fail the queued ones, end the
        threads. Returns at once."""
        with self._lock:
            self._closed = True
        self._interrupt(None, PoolClosed)
        for _ in self._threads:
            self._work.put(None)
