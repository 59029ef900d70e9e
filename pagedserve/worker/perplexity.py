"""Perplexity of a text in consecutive windows, the way llama.cpp's llama-perplexity counts it.

The token stream is cut into windows of `ctx` tokens (a trailing partial window is dropped). Each
window is evaluated from scratch; the second half of its tokens is scored, each predicted from
everything before it in the window (the first half is context only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pagedserve.model.forward import Transformer
from pagedserve.worker.batch_metadata import SequenceChunk, build_metadata


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    nll: list[float]  # negative log-likelihood of every scored token

    @property
    def num_scored(self) -> int:
        return len(self.nll)


def _log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def window_logits(transformer: Transformer, token_ids: list[int], block_size: int) -> np.ndarray:
    """Logits [len, V] of one window evaluated alone (blocks 1.. of group 0 hold its KV)."""
    num_blocks = -(-len(token_ids) // block_size)
    if num_blocks >= transformer.kv.spec.num_blocks:  # block 0 is the null block
        raise ValueError(f"a window of {len(token_ids)} tokens needs {num_blocks + 1} KV blocks; "
                         f"the cache has {transformer.kv.spec.num_blocks}")
    tables = tuple(np.arange(1, num_blocks + 1, dtype=np.int32) for _ in transformer.kv_groups())
    ids, meta = build_metadata([SequenceChunk(token_ids, 0, tables)], block_size, len(tables))
    return transformer.logits(transformer.forward(ids, meta))


def perplexity(transformer: Transformer, token_ids: list[int], ctx: int, block_size: int,
               bos_id: int | None = None) -> PerplexityResult:
    """Score `token_ids` in windows of `ctx` tokens; with `bos_id`, each window starts with BOS."""
    if ctx < 4:
        raise ValueError(f"--ctx must be >= 4, got {ctx}")
    nll: list[float] = []
    first = ctx // 2
    for start in range(0, len(token_ids) - ctx + 1, ctx):
        window = list(token_ids[start:start + ctx])
        if bos_id is not None:
            window[0] = bos_id
        lp = _log_softmax_rows(window_logits(transformer, window, block_size))
        for i in range(first, ctx - 1):
            nll.append(-float(lp[i, window[i + 1]]))
    if not nll:
        raise ValueError(f"text has {len(token_ids)} tokens: fewer than one window of {ctx}")
    return PerplexityResult(math.exp(sum(nll) / len(nll)), nll)
