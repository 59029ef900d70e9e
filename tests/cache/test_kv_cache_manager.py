import math
from dataclasses import dataclass, field

import pytest

from pagedserve.cache import block_hash
from pagedserve.cache.kv_cache_manager import KVCacheManager
from pagedserve.cache.kv_cache_spec import KVCacheSpec


@dataclass
class FakeRequest:
    request_id: str
    all_token_ids: list = field(default_factory=list)
    num_computed_tokens: int = 0


def create_manager(num_blocks=10, block_size=4, layer_windows=(0,), prefix=True):
    spec = KVCacheSpec.from_layer_windows(
        layer_windows, block_size=block_size, num_blocks=num_blocks, num_kv_heads=1, head_dim=4, kv_dtype="f32"
    )
    return KVCacheManager(spec, enable_prefix_caching=prefix)


def prefill(manager, request, num_tokens=None):
    """Admit the request with its prefix hits and compute all its tokens in one step."""
    hits, num_cached = manager.get_computed_blocks(request)
    num_tokens = len(request.all_token_ids) if num_tokens is None else num_tokens
    assert manager.allocate_slots(request, num_tokens - num_cached, hits)
    request.num_computed_tokens = num_tokens
    manager.cache_full_blocks(request)
    return hits, num_cached


def test_allocate_exact_ids_and_free_reverse_order():
    m = create_manager(num_blocks=10)
    a = FakeRequest("a", list(range(10)))
    assert m.allocate_slots(a, 10)
    assert m.block_tables("a") == ([1, 2, 3],)
    b = FakeRequest("b", list(range(100, 105)))
    assert m.allocate_slots(b, 5)
    assert m.block_tables("b") == ([4, 5],)
    m.free(a)
    assert m.pools[0].free_block_ids() == [6, 7, 8, 9, 3, 2, 1]
    assert m.num_used_blocks() == (2,)


def test_allocate_fails_without_partial_allocation():
    m = create_manager(num_blocks=4)  # 3 usable
    a = FakeRequest("a", list(range(8)))
    assert m.allocate_slots(a, 8)
    b = FakeRequest("b", list(range(8)))
    assert not m.allocate_slots(b, 8)
    assert m.num_free_blocks() == (1,)
    assert not m.has_blocks("b")


def test_decode_grows_table_one_block_at_a_time():
    m = create_manager()
    a = FakeRequest("a", list(range(4)))
    assert m.allocate_slots(a, 4)
    a.num_computed_tokens = 4
    a.all_token_ids.append(99)
    assert m.allocate_slots(a, 1)
    assert m.block_tables("a") == ([1, 2],)


def test_prefix_hit_reuses_exact_block_ids():
    m = create_manager(num_blocks=12)
    a = FakeRequest("a", list(range(10)))  # blocks [0..3] [4..7] + partial
    prefill(m, a)
    assert m.block_tables("a") == ([1, 2, 3],)
    b = FakeRequest("b", list(range(8)) + [50, 51, 52])
    hits, num_cached = prefill(m, b)
    assert hits == ([1, 2],) and num_cached == 8
    assert m.block_tables("b") == ([1, 2, 4],)
    assert m.pools[0].ref_counts[1:5] == [2, 2, 1, 1]
    # hits survive the first owner's free (cached but free) and are evicted only when reused
    m.free(a)
    m.free(b)
    c = FakeRequest("c", list(range(8)) + [7])
    hits, num_cached = m.get_computed_blocks(c)
    assert hits == ([1, 2],) and num_cached == 8


def test_last_prompt_token_never_cached():
    m = create_manager()
    a = FakeRequest("a", list(range(8)))
    prefill(m, a)
    b = FakeRequest("b", list(range(8)))  # identical, exactly two blocks
    hits, num_cached = m.get_computed_blocks(b)
    assert hits == ([1],) and num_cached == 4  # not 8: the last token must be computed
    c = FakeRequest("c", list(range(9)))
    assert m.get_computed_blocks(c) == (([1, 2],), 8)


def test_hash_collision_never_serves_wrong_blocks(monkeypatch):
    monkeypatch.setattr(block_hash, "hash_block_tokens", lambda parent, tokens: b"same")
    m = create_manager()
    a = FakeRequest("a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    prefill(m, a)
    b = FakeRequest("b", [1, 2, 3, 5, 5, 6, 7, 8, 9])  # first block differs
    assert m.get_computed_blocks(b) == (([],), 0)
    c = FakeRequest("c", [9, 9, 9, 9, 5, 6, 7, 8, 9])  # second block equal, its parent is not
    assert m.get_computed_blocks(c) == (([],), 0)
    d = FakeRequest("d", [1, 2, 3, 4, 0])
    assert m.get_computed_blocks(d) == (([1],), 4)


def test_evicted_parent_breaks_the_chain():
    m = create_manager(num_blocks=4)  # 3 usable
    a = FakeRequest("a", list(range(9)))
    prefill(m, a)
    m.free(a)  # free queue: 3, 2, 1 (block 1 holds tokens 0..3)
    x = FakeRequest("x", [77] * 4)
    assert m.allocate_slots(x, 4)
    assert m.block_tables("x") == ([3],)
    y = FakeRequest("y", [66] * 4)
    assert m.allocate_slots(y, 4)
    assert m.block_tables("y") == ([2],)  # evicted block 2 (tokens 4..7)
    assert m.get_computed_blocks(FakeRequest("z", list(range(9)))) == (([1],), 4)


def test_no_prefix_cache_flag():
    m = create_manager(prefix=False)
    a = FakeRequest("a", list(range(9)))
    prefill(m, a)
    assert m.get_computed_blocks(FakeRequest("b", list(range(9)))) == (([],), 0)
    assert m.pools[0].num_cached_blocks == 0


def test_window_keeps_table_bounded():
    window, block_size = 256, 16
    m = create_manager(num_blocks=40, block_size=block_size, layer_windows=(window,))
    a = FakeRequest("a", [1])
    max_held = 0
    for _ in range(3000):
        assert m.allocate_slots(a, 1)
        a.num_computed_tokens += 1
        m.cache_full_blocks(a)
        a.all_token_ids.append(a.num_computed_tokens % 7)
        table = m.block_tables("a")[0]
        held = [b for b in table if b != 0]
        max_held = max(max_held, len(held))
        assert m.num_used_blocks() == (len(held),)
        # every position a future query can see is still backed by a real block
        first_visible = max(0, a.num_computed_tokens - window + 1)
        assert all(b != 0 for b in table[first_visible // block_size :])
    assert max_held == math.ceil(window / block_size) + 1
    assert len(m.block_tables("a")[0]) == math.ceil(3000 / block_size)
    assert m.num_window_freed_blocks == math.ceil(3000 / block_size) - len(held)
    m.free(a)
    assert m.num_used_blocks() == (0,)


def test_window_prefix_hit_needs_all_groups_and_skips_out_of_window_blocks():
    # group 0 full attention, group 1 window 4 (one block of 4)
    m = create_manager(num_blocks=12, block_size=4, layer_windows=(0, 4))
    a = FakeRequest("a", list(range(13)))
    prefill(m, a)
    assert m.block_tables("a") == ([1, 2, 3, 4], [1, 2, 3, 4])
    b = FakeRequest("b", list(range(12)) + [99])
    hits, num_cached = m.get_computed_blocks(b)
    assert hits == ([1, 2, 3], [1, 2, 3]) and num_cached == 12
    assert m.allocate_slots(b, 1, hits)
    # window 4 at query position 12 sees positions 9..12: blocks 0 and 1 are not needed
    assert m.block_tables("b") == ([1, 2, 3, 5], [0, 0, 3, 5])
    assert m.pools[1].ref_counts[1:4] == [1, 1, 2]


def test_windowed_hits_missing_in_one_group_limit_the_hit():
    m = create_manager(num_blocks=12, block_size=4, layer_windows=(0, 4))
    a = FakeRequest("a", list(range(13)))
    prefill(m, a)
    m.pools[1].reset_prefix_cache()
    assert m.get_computed_blocks(FakeRequest("b", list(range(13)))) == (([], []), 0)


def test_hit_on_free_blocks_counts_against_free_space():
    m = create_manager(num_blocks=4, block_size=4)  # 3 usable
    a = FakeRequest("a", list(range(9)))
    prefill(m, a)
    m.free(a)  # all 3 free, blocks 1, 2 cached
    b = FakeRequest("b", list(range(8)) + [5, 5, 5, 5, 5])  # 13 tokens: 2 hits + 2 new blocks > 3
    hits, num_cached = m.get_computed_blocks(b)
    assert hits == ([1, 2],)
    assert not m.allocate_slots(b, 13 - num_cached, hits)
    assert m.num_free_blocks() == (3,)
    assert m.pools[0].ref_counts[1:3] == [0, 0]


def test_max_blocks_needed():
    m = create_manager(block_size=16, layer_windows=(0, 256))
    assert m.max_blocks_needed(3000, 1) == (188, 17)
    assert m.max_blocks_needed(100, 512) == (7, 7)


def test_reset_allocate_slots_rejects_hits_for_running_request():
    m = create_manager()
    a = FakeRequest("a", list(range(9)))
    prefill(m, a)
    with pytest.raises(ValueError):
        m.allocate_slots(a, 1, ([1],))


# ---- forking (the choices of an n > 1 request) ----
def test_fork_shares_every_block_and_copies_the_partial_one_on_first_write():
    m = create_manager(num_blocks=10, prefix=False)
    parent = FakeRequest("p", list(range(10)))
    prefill(m, parent)  # blocks 1, 2, 3 (block 3 holds positions 8, 9)
    child = FakeRequest("c", list(range(10)) + [42], num_computed_tokens=10)
    m.fork(parent, "c")
    assert m.block_tables("c") == ([1, 2, 3],)
    assert m.pools[0].ref_counts[1:4] == [2, 2, 2]
    assert m.take_blocks_to_copy() == ((),)  # nothing until the child writes
    assert m.allocate_slots(child, 1)
    assert m.block_tables("c") == ([1, 2, 4],)
    assert m.pools[0].ref_counts[1:5] == [2, 2, 1, 1]
    assert m.take_blocks_to_copy() == (((3, 4),),)
    assert m.take_blocks_to_copy() == ((),)
    parent.all_token_ids.append(7)
    assert m.allocate_slots(parent, 1)  # the parent writes its own block 3 in place
    assert m.block_tables("p") == ([1, 2, 3],) and m.take_blocks_to_copy() == ((),)
    m.free(parent)
    m.free(child)
    assert all(c == 0 for c in m.pools[0].ref_counts)


def test_fork_of_a_block_aligned_prompt_copies_nothing():
    m = create_manager(num_blocks=10, prefix=False)
    parent = FakeRequest("p", list(range(8)))
    prefill(m, parent)
    m.fork(parent, "c")
    child = FakeRequest("c", list(range(8)) + [1], num_computed_tokens=8)
    assert m.allocate_slots(child, 1)
    assert m.block_tables("c") == ([1, 2, 3],) and m.take_blocks_to_copy() == ((),)


def test_copy_on_write_counts_its_block_and_a_freed_child_drops_its_copy():
    m = create_manager(num_blocks=5, prefix=False)  # 4 usable blocks
    parent = FakeRequest("p", list(range(10)))
    prefill(m, parent)  # 3 blocks
    m.fork(parent, "c")
    m.fork(parent, "d")
    c = FakeRequest("c", list(range(11)), num_computed_tokens=10)
    d = FakeRequest("d", list(range(11)), num_computed_tokens=10)
    assert m.allocate_slots(c, 1)  # takes the last free block for its copy
    assert not m.allocate_slots(d, 1)  # no room for d's copy: nothing changes
    assert m.block_tables("d") == ([1, 2, 3],)
    m.free(c)  # c is preempted in the same step: its queued copy must not run
    assert m.take_blocks_to_copy() == ((),)
    m.free(d)
    m.free(parent)
    assert all(x == 0 for x in m.pools[0].ref_counts)


def test_fork_in_a_windowed_group_keeps_the_null_entries():
    m = create_manager(num_blocks=12, layer_windows=(0, 4), prefix=True)
    parent = FakeRequest("p", list(range(10)))
    prefill(m, parent, 8)
    assert m.allocate_slots(parent, 2)  # positions 8, 9: the window drops block 1 of group 1
    parent.num_computed_tokens = 10
    full, windowed = m.block_tables("p")
    assert windowed[0] == 0
    m.fork(parent, "c")
    assert m.block_tables("c") == (full, windowed)
    child = FakeRequest("c", list(range(11)), num_computed_tokens=10)
    assert m.allocate_slots(child, 1)  # copies the partial block in both groups
    assert [pairs[0][0] for pairs in m.take_blocks_to_copy()] == [full[-1], windowed[-1]]
    m.free(parent)
    m.free("c")
    assert all(all(x == 0 for x in pool.ref_counts) for pool in m.pools)
