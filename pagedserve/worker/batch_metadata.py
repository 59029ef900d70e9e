"""Flatten one step's sequences into the packed arrays the forward pass takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pagedserve.model.forward import AttentionMetadata


@dataclass(frozen=True)
class SequenceChunk:
    """One sequence's share of a batch: `token_ids` at positions start_position...

    `block_tables[g]` lists the physical blocks of KV group g covering positions
    [0, start_position + len(token_ids)); null blocks (0) stand for blocks a window freed.
    """

    token_ids: Sequence[int]  # [n] (a NumPy int32 view, or any sequence of ints)
    start_position: int
    block_tables: tuple[Sequence[int], ...]  # per group: [num_blocks]


def build_metadata(chunks: Sequence[SequenceChunk], block_size: int, num_groups: int
                   ) -> tuple[np.ndarray, AttentionMetadata]:
    """token_ids [T] int32 and the attention metadata of a step (a few NumPy calls per sequence)."""
    num_seqs = len(chunks)
    lens = np.fromiter((len(c.token_ids) for c in chunks), np.int64, num_seqs)  # [S]
    starts = np.fromiter((c.start_position for c in chunks), np.int64, num_seqs)  # [S]
    qsl = np.zeros(num_seqs + 1, dtype=np.int32)  # [S+1]
    np.cumsum(lens, out=qsl[1:])
    num_tokens = int(qsl[-1])
    token_ids = np.empty(num_tokens, dtype=np.int32)  # [T]
    for s, c in enumerate(chunks):
        token_ids[qsl[s]:qsl[s + 1]] = c.token_ids
    seq_of_token = np.repeat(np.arange(num_seqs), lens)  # [T]
    positions = np.arange(num_tokens, dtype=np.int64) + (starts - qsl[:-1])[seq_of_token]  # [T]
    seq_lens = (starts + lens).astype(np.int32)  # [S]
    tables, slots = [], []
    for g in range(num_groups):
        width = max(1, max((len(c.block_tables[g]) for c in chunks), default=0))
        table = np.zeros((num_seqs, width), dtype=np.int32)  # [S, max_blocks]
        for s, c in enumerate(chunks):
            table[s, :len(c.block_tables[g])] = c.block_tables[g]
        blocks = table[seq_of_token, positions // block_size].astype(np.int64)  # [T]
        slots.append(blocks * block_size + positions % block_size)
        tables.append(table)
    meta = AttentionMetadata(positions, qsl, seq_lens, tuple(tables), tuple(slots))
    return token_ids, meta
