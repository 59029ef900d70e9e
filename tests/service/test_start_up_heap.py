"""freeze_start_up_heap: what is alive at the call leaves the collector's generations, what is
made afterwards is still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from pagedserve.service.start_up_heap import freeze_start_up_heap


class _Node:
    def __init__(self):
        self.other = None


@pytest.fixture
def unfreeze_after():
    yield
    gc.unfreeze()  # the rest of the test session keeps its ordinary collector


def _in_generations(obj) -> bool:
    return any(o is obj for o in gc.get_objects())  # the permanent generation is not listed


def test_objects_alive_at_the_call_are_frozen(unfreeze_after):
    start_up = [_Node() for _ in range(10)]
    assert _in_generations(start_up)
    freeze_start_up_heap()
    assert gc.get_freeze_count() > 0
    assert not _in_generations(start_up)


def test_garbage_from_before_the_call_is_collected_not_frozen(unfreeze_after):
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle only the collector can free
    freed = []
    weakref.finalize(a, freed.append, "a")
    del a, b
    freeze_start_up_heap()
    assert freed == ["a"]


def test_cycles_made_after_the_call_are_still_collected(unfreeze_after):
    freeze_start_up_heap()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    assert _in_generations(a)
    freed = []
    weakref.finalize(a, freed.append, "a")
    del a, b
    gc.collect()
    assert freed == ["a"]
