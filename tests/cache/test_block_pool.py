import pytest

from pagedserve.cache.block_hash import BlockKey
from pagedserve.cache.block_pool import BlockPool, BlockPoolError


def key(h, tokens=(1, 2), parent=0):
    return BlockKey(bytes([h]), parent, tuple(tokens))


def test_allocate_hands_out_ids_in_order_and_never_null():
    pool = BlockPool(5)
    assert pool.allocate(2) == [1, 2]
    assert pool.allocate(2) == [3, 4]
    assert pool.allocate(1) is None
    assert pool.num_free_blocks == 0 and pool.num_used_blocks == 4


def test_allocate_too_many_allocates_nothing():
    pool = BlockPool(4)
    assert pool.allocate(4) is None
    assert pool.num_free_blocks == 3


def test_free_goes_to_tail_and_is_reused_in_lru_order():
    pool = BlockPool(6)
    assert pool.allocate(5) == [1, 2, 3, 4, 5]
    pool.free([4, 2])
    pool.free([5])
    assert pool.free_block_ids() == [4, 2, 5]
    assert pool.allocate(2) == [4, 2]


def test_double_free_raises():
    pool = BlockPool(4)
    ids = pool.allocate(1)
    pool.free(ids)
    with pytest.raises(BlockPoolError):
        pool.free(ids)
    with pytest.raises(BlockPoolError):
        pool.free([0])


def test_refcounts_with_touch():
    pool = BlockPool(4)
    [b] = pool.allocate(1)
    pool.touch([b])
    assert pool.ref_counts[b] == 2
    pool.free([b])
    assert pool.num_free_blocks == 2
    pool.free([b])
    assert pool.num_free_blocks == 3


def test_cached_free_block_is_hit_then_evicted_in_lru_order():
    pool = BlockPool(4)
    assert pool.allocate(3) == [1, 2, 3]
    e1 = pool.cache_block(1, key(1))
    e2 = pool.cache_block(2, key(2))
    assert (e1, e2) == (1, 2)
    pool.free([2, 1, 3])  # tail-first order of a request's free
    assert pool.free_block_ids() == [2, 1, 3]
    # a hit on a free cached block takes it out of the free queue
    assert pool.lookup(key(1)) == 1
    pool.touch([1])
    assert pool.free_block_ids() == [2, 3]
    # block 2 is at the head: handing it out evicts its key
    assert pool.allocate(1) == [2]
    assert pool.lookup(key(2)) is None
    assert pool.num_evicted_blocks == 1
    assert pool.lookup(key(1)) == 1


def test_lookup_needs_exact_key():
    pool = BlockPool(3)
    [b] = pool.allocate(1)
    pool.cache_block(b, key(7, tokens=(1, 2)))
    assert pool.lookup(key(7, tokens=(1, 3))) is None  # same hash, other tokens: a collision
    assert pool.lookup(key(7, tokens=(1, 2), parent=5)) is None
    # a colliding key cannot be registered over the existing one
    [c] = pool.allocate(1)
    assert pool.cache_block(c, key(7, tokens=(9, 9))) is None
    # the same key again returns the existing entry
    assert pool.cache_block(c, key(7, tokens=(1, 2))) == pool.entry_id(b)
