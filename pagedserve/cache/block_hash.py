"""Prefix hashes of full blocks: each chains over its parent's hash and its own token ids.

The hash only finds a candidate. A hit is confirmed by comparing the stored key exactly
(`BlockKey`: the parent's cache entry and the token ids), so a collision can never serve wrong KV.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ROOT_PARENT_HASH = b""


def hash_block_tokens(parent_hash: bytes, token_ids: Sequence[int]) -> bytes:
    """sha256 of the parent block's hash and this block's token ids (deterministic across runs)."""
    digest = hashlib.sha256(parent_hash)
    digest.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return digest.digest()


@dataclass(frozen=True)
class BlockKey:
    """What a cached block holds, exactly.

    `parent_entry_id` is the cache entry id of the previous block of the prefix (0 for the first
    block). Entry ids are never reused, so an exact key match means the whole prefix matches.
    """

    block_hash: bytes
    parent_entry_id: int
    token_ids: tuple[int, ...]


def extend_block_hashes(
    block_hashes: list[bytes], token_ids: Sequence[int], block_size: int, num_full_blocks: int
) -> list[bytes]:
    """Extend `block_hashes` in place to cover the first `num_full_blocks` full blocks."""
    parent = block_hashes[-1] if block_hashes else ROOT_PARENT_HASH
    for j in range(len(block_hashes), num_full_blocks):
        # Looked up through the module so a test can monkeypatch a colliding hash.
        parent = hash_block_tokens(parent, token_ids[j * block_size : (j + 1) * block_size])
        block_hashes.append(parent)
    return block_hashes
