"""Physical KV blocks of one group: free queue (LRU), reference counts, prefix-cache lookup.

Every block exists from the start. Block 0 is the null block: never handed out, it fills block
table entries of blocks a sliding window dropped. A block whose refcount falls to 0 goes to the
free queue's tail but keeps its cached key, so a later request can still hit it ("cached but
free"); it is evicted (key dropped) only when `allocate` hands it out for new use. Allocation
takes from the head, so the least recently freed block is evicted first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from pagedserve.cache.block_hash import BlockKey

NULL_BLOCK_ID = 0


class BlockPoolError(RuntimeError):
    """A bookkeeping bug (double free, negative refcount): never silent."""


class BlockPool:
    def __init__(self, num_blocks: int):
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is the null block), got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        # Ordered dict as an O(1) removable queue: head = next to hand out.
        self._free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(1, num_blocks))
        self._key_of_block: dict[int, BlockKey] = {}
        self._entry_id_of_block: dict[int, int] = {}
        self._block_of_hash: dict[bytes, int] = {}
        self._next_entry_id = 1  # 0 means "no parent"
        self.num_evicted_blocks = 0

    # ---- usage ----
    @property
    def num_usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free_blocks(self) -> int:
        """Blocks allocatable now; cached-but-free blocks count as free."""
        return len(self._free_queue)

    @property
    def num_used_blocks(self) -> int:
        return self.num_usable_blocks - self.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        return len(self._key_of_block)

    def free_block_ids(self) -> list[int]:
        """The free queue, head (next evicted) first."""
        return list(self._free_queue)

    # ---- allocation ----
    def allocate(self, num_blocks: int) -> list[int] | None:
        """Take `num_blocks` blocks from the free queue's head (refcount 1), or None if too few.

        A handed-out block that was cached is evicted: its key leaves the lookup table.
        """
        if num_blocks < 0:
            raise ValueError(f"cannot allocate {num_blocks} blocks")
        if num_blocks > len(self._free_queue):
            return None
        block_ids = []
        for _ in range(num_blocks):
            block_id, _ = self._free_queue.popitem(last=False)
            self._evict(block_id)
            self.ref_counts[block_id] = 1
            block_ids.append(block_id)
        return block_ids

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one reference of each block, in order; at 0 a block joins the free queue's tail."""
        for block_id in block_ids:
            self._check_id(block_id)
            if self.ref_counts[block_id] <= 0:
                raise BlockPoolError(f"block {block_id} freed with refcount {self.ref_counts[block_id]}")
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                self._free_queue[block_id] = None

    def touch(self, block_ids: Iterable[int]) -> None:
        """Add one reference to each block (a prefix-cache hit); free blocks leave the free queue."""
        for block_id in block_ids:
            self._check_id(block_id)
            if self.ref_counts[block_id] == 0:
                if block_id not in self._free_queue:
                    raise BlockPoolError(f"block {block_id} has refcount 0 but is not in the free queue")
                del self._free_queue[block_id]
            self.ref_counts[block_id] += 1

    # ---- prefix cache ----
    def lookup(self, key: BlockKey) -> int | None:
        """The block holding exactly `key`, or None (a hash match with another key is a miss)."""
        block_id = self._block_of_hash.get(key.block_hash)
        if block_id is None or self._key_of_block[block_id] != key:
            return None
        return block_id

    def entry_id(self, block_id: int) -> int:
        """The cache entry id of a cached block (children chain to it)."""
        return self._entry_id_of_block[block_id]

    def cache_block(self, block_id: int, key: BlockKey) -> int | None:
        """Register a full, in-use block under `key`; return the entry id now holding that key.

        If another block already holds exactly `key`, that block's entry id is returned (the
        newer copy stays uncached). If the hash is taken by a *different* key (a collision), or
        the block is already cached under another key, nothing changes and None is returned.
        """
        self._check_id(block_id)
        if self.ref_counts[block_id] <= 0:
            raise BlockPoolError(f"cannot cache block {block_id}: not in use")
        existing = self._block_of_hash.get(key.block_hash)
        if existing is not None:
            return self._entry_id_of_block[existing] if self._key_of_block[existing] == key else None
        if block_id in self._key_of_block:
            return None
        entry_id = self._next_entry_id
        self._next_entry_id += 1
        self._block_of_hash[key.block_hash] = block_id
        self._key_of_block[block_id] = key
        self._entry_id_of_block[block_id] = entry_id
        return entry_id

    def reset_prefix_cache(self) -> None:
        """Forget every cached key (blocks in use stay in use)."""
        self._block_of_hash.clear()
        self._key_of_block.clear()
        self._entry_id_of_block.clear()

    def _evict(self, block_id: int) -> None:
        key = self._key_of_block.pop(block_id, None)
        if key is not None:
            del self._block_of_hash[key.block_hash]
            del self._entry_id_of_block[block_id]
            self.num_evicted_blocks += 1

    def _check_id(self, block_id: int) -> None:
        if not 0 < block_id < self.num_blocks:
            raise BlockPoolError(f"block id {block_id} out of range [1, {self.num_blocks}) (0 is the null block)")
