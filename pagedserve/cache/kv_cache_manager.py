"""Request -> block ids, one block table per KV-cache group; prefix cache; sliding-window dropping.

The manager sees requests only through `request_id`, `all_token_ids` and `num_computed_tokens`
(the scheduler's Request has them). Per group g, `block_tables[g][j]` holds positions
[j * block_size, (j + 1) * block_size). A windowed group replaces entries of blocks no future
query can see with the null block 0 and frees them, so it holds at most
ceil(W / block_size) + 1 blocks per decoding request, however long it runs.

Prefix caching: a hit needs the block cached in *every* group (windowed groups included), so the
same token prefix is served for all layers; out-of-window hit blocks are not even touched.

Forking (the choices of an n > 1 request): `fork` gives a new request the parent's tables, every
block referenced once more. The parent's full blocks are shared for good (nobody writes them
again). A partially filled last block is copy-on-write for the child: the child's first
`allocate_slots` swaps it for a fresh block and queues a (src, dst) copy per group, which the
runner applies before the step's forward (`take_blocks_to_copy`). The parent keeps writing its
own tail in place: it only writes positions at or past the fork point, which no child reads from
the shared block (a child reads its copy, where its own writes overwrite those slots first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from pagedserve.cache import block_hash
from pagedserve.cache.block_hash import BlockKey
from pagedserve.cache.block_pool import NULL_BLOCK_ID, BlockPool
from pagedserve.cache.kv_cache_spec import KVCacheSpec


class CacheRequest(Protocol):
    request_id: str
    num_computed_tokens: int

    @property
    def all_token_ids(self) -> Sequence[int]: ...


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class _RequestBlocks:
    block_tables: list[list[int]]  # per group
    entry_ids: list[list[int]]  # per group: cache entry ids of the leading full blocks registered
    num_dropped: list[int]  # per group: leading entries already replaced by the null block
    cache_stopped: list[bool]  # per group: a hash collision stopped caching for this request
    copy_on_write: list[bool]  # per group: the last table entry is a parent's partial block


class KVCacheManager:
    def __init__(self, spec: KVCacheSpec, enable_prefix_caching: bool):
        self.spec = spec
        self.block_size = spec.block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pools = tuple(BlockPool(spec.num_blocks) for _ in spec.groups)
        self.windows = tuple(g.sliding_window for g in spec.groups)
        self._requests: dict[str, _RequestBlocks] = {}
        self._block_hashes: dict[str, list[bytes]] = {}
        self._blocks_to_copy: list[tuple[str, int, int, int]] = []  # (request_id, group, src, dst)
        self.num_window_freed_blocks = 0

    @property
    def num_groups(self) -> int:
        return len(self.pools)

    def block_tables(self, request_id: str) -> tuple[list[int], ...]:
        """The request's tables, one per group (live lists: copy before handing them out)."""
        state = self._requests.get(request_id)
        if state is None:
            return tuple([] for _ in self.pools)
        return tuple(state.block_tables)

    def has_blocks(self, request_id: str) -> bool:
        return request_id in self._requests

    def max_blocks_needed(self, num_tokens: int, max_chunk_tokens: int) -> tuple[int, ...]:
        """Per group, the most blocks one request of `num_tokens` tokens can hold at once."""
        needed = []
        for window in self.windows:
            full = cdiv(num_tokens, self.block_size)
            if window > 0:
                # Blocks in the window of a chunk's first query, plus the chunk's own blocks.
                full = min(full, cdiv(window - 1 + max_chunk_tokens, self.block_size) + 1)
            needed.append(full)
        return tuple(needed)

    # ---- prefix cache ----
    def get_computed_blocks(self, request: CacheRequest) -> tuple[tuple[list[int], ...], int]:
        """Longest prefix of full blocks cached in every group: (blocks per group, num tokens).

        Never covers the last known token (its logits are needed), so the count is at most
        len(tokens) - 1 rounded down to a block boundary. Nothing is reserved: pass the blocks to
        `allocate_slots` before anything else touches the cache.
        """
        empty = tuple([] for _ in self.pools)
        if not self.enable_prefix_caching:
            return empty, 0
        token_ids = request.all_token_ids
        max_num_blocks = (len(token_ids) - 1) // self.block_size
        if max_num_blocks <= 0:
            return empty, 0
        hashes = self._hashes_for(request, max_num_blocks)
        hits_per_group = []
        for pool in self.pools:
            hits: list[int] = []
            parent_entry_id = 0
            for j in range(max_num_blocks):
                block_id = pool.lookup(self._key(hashes[j], parent_entry_id, token_ids, j))
                if block_id is None:
                    break
                hits.append(block_id)
                parent_entry_id = pool.entry_id(block_id)
            hits_per_group.append(hits)
        num_hit_blocks = min(len(h) for h in hits_per_group)
        return tuple(h[:num_hit_blocks] for h in hits_per_group), num_hit_blocks * self.block_size

    def cache_full_blocks(self, request: CacheRequest) -> None:
        """Register the request's newly computed full blocks so later requests can hit them."""
        state = self._requests.get(request.request_id)
        if state is None or not self.enable_prefix_caching:
            return
        token_ids = request.all_token_ids
        num_full_blocks = min(request.num_computed_tokens, len(token_ids)) // self.block_size
        hashes = self._hashes_for(request, num_full_blocks)
        for g, pool in enumerate(self.pools):
            entries, table = state.entry_ids[g], state.block_tables[g]
            while not state.cache_stopped[g] and len(entries) < num_full_blocks:
                j = len(entries)
                block_id = table[j]
                parent = entries[-1] if entries else 0
                entry_id = None
                if block_id != NULL_BLOCK_ID:
                    entry_id = pool.cache_block(block_id, self._key(hashes[j], parent, token_ids, j))
                if entry_id is None:
                    state.cache_stopped[g] = True
                else:
                    entries.append(entry_id)

    # ---- allocation ----
    def allocate_slots(
        self,
        request: CacheRequest,
        num_new_tokens: int,
        computed_blocks: Sequence[Sequence[int]] | None = None,
    ) -> bool:
        """Make room for `num_new_tokens` more tokens after the computed ones (and the hits).

        Returns False when some group lacks free blocks; then nothing is allocated (out-of-window
        blocks may still have been dropped, which is always safe). `computed_blocks` are the hits
        from `get_computed_blocks`, only for a request that holds no blocks yet.
        """
        state = self._requests.get(request.request_id)
        if state is None:
            g_range = range(self.num_groups)
            state = _RequestBlocks([[] for _ in g_range], [[] for _ in g_range], [0 for _ in g_range],
                                   [False for _ in g_range], [False for _ in g_range])
        computed = [list(b) for b in computed_blocks] if computed_blocks else [[] for _ in self.pools]
        if any(computed) and any(state.block_tables):
            raise ValueError(f"request {request.request_id} already holds blocks; hits only on admission")
        num_computed = request.num_computed_tokens + len(computed[0]) * self.block_size
        num_blocks_total = cdiv(num_computed + num_new_tokens, self.block_size)

        for g in range(self.num_groups):
            self._drop_out_of_window(state, g, num_computed)
        plans = []
        for g, pool in enumerate(self.pools):
            num_skipped = self._num_out_of_window(g, num_computed)
            hits_to_touch = computed[g][num_skipped:]
            num_new_blocks = max(0, num_blocks_total - len(state.block_tables[g]) - len(computed[g]))
            num_copies = 1 if state.copy_on_write[g] and num_new_tokens > 0 else 0
            num_evictable_hits = sum(1 for b in hits_to_touch if pool.ref_counts[b] == 0)
            if num_new_blocks + num_copies > pool.num_free_blocks - num_evictable_hits:
                return False
            plans.append((min(num_skipped, len(computed[g])), hits_to_touch, num_new_blocks))

        for g in range(self.num_groups):
            if state.copy_on_write[g] and num_new_tokens > 0:
                self._copy_last_block(request.request_id, state, g)
        for g, (pool, (num_skipped_hits, hits_to_touch, num_new_blocks)) in enumerate(zip(self.pools, plans)):
            table = state.block_tables[g]
            if computed[g]:
                state.entry_ids[g] = [pool.entry_id(b) for b in computed[g]]
                pool.touch(hits_to_touch)
                table.extend([NULL_BLOCK_ID] * num_skipped_hits)
                table.extend(hits_to_touch)
                state.num_dropped[g] = num_skipped_hits
            new_block_ids = pool.allocate(num_new_blocks)
            assert new_block_ids is not None  # checked above
            table.extend(new_block_ids)
        self._requests[request.request_id] = state
        return True

    def free(self, request: CacheRequest | str) -> None:
        """Release every block of the request, tail first so tail blocks are evicted first.

        Safe to call for a request that holds nothing.
        """
        request_id = request if isinstance(request, str) else request.request_id
        self._block_hashes.pop(request_id, None)
        state = self._requests.pop(request_id, None)
        if state is None:
            return
        if self._blocks_to_copy:  # a copy into blocks it no longer holds must not run
            self._blocks_to_copy = [c for c in self._blocks_to_copy if c[0] != request_id]
        for pool, table in zip(self.pools, state.block_tables):
            pool.free(b for b in reversed(table) if b != NULL_BLOCK_ID)

    # ---- forking ----
    def fork(self, parent: CacheRequest, child_id: str) -> None:
        """Give `child_id` (holding nothing) the blocks of `parent`'s computed tokens: one more
        reference to each. The parent's tables must cover exactly its computed tokens (true right
        after a step computed them, before the next allocation).

        A partially filled last block becomes copy-on-write for the child, so the child needs no
        free block now: its first `allocate_slots` copies (and may then report no room, like any
        allocation). Prefix-cache state (hashes, registered entries) is the parent's too, since the
        child's tokens start with the parent's.
        """
        parent_id = parent.request_id
        num_computed = parent.num_computed_tokens
        parent_state = self._requests[parent_id]
        if child_id in self._requests:
            raise ValueError(f"request {child_id} already holds blocks")
        if any(len(t) != cdiv(num_computed, self.block_size) for t in parent_state.block_tables):
            raise ValueError(f"request {parent_id}: its tables do not cover exactly its {num_computed} computed tokens")
        for pool, table in zip(self.pools, parent_state.block_tables):
            pool.touch(b for b in table if b != NULL_BLOCK_ID)
        # A fully written last block is shared like the others; a partial one (the same in every
        # group: one block size) is the child's to copy before it writes.
        partial = num_computed % self.block_size != 0
        self._requests[child_id] = _RequestBlocks(
            [list(t) for t in parent_state.block_tables], [list(e) for e in parent_state.entry_ids],
            list(parent_state.num_dropped), list(parent_state.cache_stopped), [partial] * self.num_groups,
        )
        if parent_id in self._block_hashes:
            self._block_hashes[child_id] = list(self._block_hashes[parent_id])

    def take_blocks_to_copy(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """The (src, dst) block copies queued since the last call, per group, in order."""
        per_group: list[list[tuple[int, int]]] = [[] for _ in self.pools]
        for _, g, src, dst in self._blocks_to_copy:
            per_group[g].append((src, dst))
        self._blocks_to_copy = []
        return tuple(tuple(pairs) for pairs in per_group)

    def _copy_last_block(self, request_id: str, state: _RequestBlocks, g: int) -> None:
        pool, table = self.pools[g], state.block_tables[g]
        src = table[-1]
        dst_ids = pool.allocate(1)
        assert dst_ids is not None  # counted by the caller
        table[-1] = dst_ids[0]
        pool.free([src])
        state.copy_on_write[g] = False
        self._blocks_to_copy.append((request_id, g, src, dst_ids[0]))

    # ---- usage ----
    def num_used_blocks(self) -> tuple[int, ...]:
        return tuple(p.num_used_blocks for p in self.pools)

    def num_free_blocks(self) -> tuple[int, ...]:
        return tuple(p.num_free_blocks for p in self.pools)

    def num_total_blocks(self) -> tuple[int, ...]:
        """Usable blocks per group (the null block excluded)."""
        return tuple(p.num_usable_blocks for p in self.pools)

    def reset_prefix_cache(self) -> None:
        for pool in self.pools:
            pool.reset_prefix_cache()

    # ---- internals ----
    def _num_out_of_window(self, g: int, next_query_position: int) -> int:
        """Leading blocks whose every position p has next_query_position - p >= W."""
        window = self.windows[g]
        if window <= 0:
            return 0
        return max(0, (next_query_position - window + 1) // self.block_size)

    def _drop_out_of_window(self, state: _RequestBlocks, g: int, next_query_position: int) -> None:
        table = state.block_tables[g]
        num_skipped = min(self._num_out_of_window(g, next_query_position), len(table))
        to_free = []
        for j in range(state.num_dropped[g], num_skipped):
            if table[j] != NULL_BLOCK_ID:
                to_free.append(table[j])
                table[j] = NULL_BLOCK_ID
        state.num_dropped[g] = max(state.num_dropped[g], num_skipped)
        self.pools[g].free(to_free)
        self.num_window_freed_blocks += len(to_free)

    def _hashes_for(self, request: CacheRequest, num_full_blocks: int) -> list[bytes]:
        hashes = self._block_hashes.setdefault(request.request_id, [])
        return block_hash.extend_block_hashes(hashes, request.all_token_ids, self.block_size, num_full_blocks)

    def _key(self, h: bytes, parent_entry_id: int, token_ids: Sequence[int], j: int) -> BlockKey:
        bs = self.block_size
        return BlockKey(h, parent_entry_id, tuple(token_ids[j * bs : (j + 1) * bs]))
