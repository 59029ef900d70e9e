"""DaemonThreadPool hands the GIL over sooner while it runs calls, and puts the process's switch
interval back when none runs (also after an interrupted call)."""

from __future__ import annotations

import sys
import threading

import pytest

from pagedserve.service.tokenizer_threads import BUSY_SWITCH_INTERVAL_S, DaemonThreadPool, PoolClosed
from tests.service.conftest import wait_until


def test_switch_interval_is_short_while_calls_run_and_restored_after():
    before = sys.getswitchinterval()
    assert before > BUSY_SWITCH_INTERVAL_S  # CPython's default (5 ms): the test needs a difference
    pool = DaemonThreadPool(num_threads=2)
    release = threading.Event()
    try:
        first = pool.submit(lambda: (release.wait(30), sys.getswitchinterval())[1])
        second = pool.submit(sys.getswitchinterval)  # runs while the first still does
        assert second.result(30) == BUSY_SWITCH_INTERVAL_S
        assert sys.getswitchinterval() == BUSY_SWITCH_INTERVAL_S  # the first call still runs
        release.set()
        assert first.result(30) == BUSY_SWITCH_INTERVAL_S
        wait_until(lambda: sys.getswitchinterval() == before)
    finally:
        release.set()
        pool.close()


def test_switch_interval_restored_after_an_interrupted_call():
    before = sys.getswitchinterval()
    pool = DaemonThreadPool(num_threads=1)
    started = threading.Event()

    def spin():
        started.set()
        while True:
            pass

    running = pool.submit(spin)
    assert started.wait(30)
    assert sys.getswitchinterval() == BUSY_SWITCH_INTERVAL_S
    pool.close()
    with pytest.raises(PoolClosed):
        running.result(30)
    wait_until(lambda: sys.getswitchinterval() == before)
