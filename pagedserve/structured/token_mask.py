"""Applying constrained requests' allowed-token masks to their logits rows, and advancing them."""

from __future__ import annotations

import time
from typing import Sequence

import llguidance
import llguidance.numpy as llg_np
import numpy as np

_executor: llguidance.LLExecutor | None = None


def _get_executor() -> llguidance.LLExecutor:
    global _executor
    if _executor is None:
        _executor = llguidance.LLExecutor()
    return _executor


class MaskStats:
    """Counters the runner exposes for metrics: masks filled and seconds spent filling them."""

    def __init__(self):
        self.num_masks = 0
        self.mask_seconds_total = 0.0


def apply_masks(logits: np.ndarray, rows: Sequence[int], matchers: Sequence[llguidance.LLMatcher],
                stats: MaskStats | None = None) -> None:
    """Set logits[rows[i], t] = -inf for every token t that matchers[i] does not allow next.

    logits: [num_rows, vocab] float32, changed in place; other rows are untouched. Masks are
    filled by llguidance's thread pool with the GIL released."""
    if not rows:
        return
    start = time.perf_counter()
    vocab = logits.shape[1]
    bitmask = llg_np.allocate_token_bitmask(len(rows), vocab)  # [n, ceil(vocab/32)] int32
    llg_np.fill_next_token_bitmask_par(_get_executor(), [(m, i) for i, m in enumerate(matchers)], bitmask)
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, :vocab]  # [n, vocab]
    block = logits[np.asarray(rows)]
    block[allowed == 0] = -np.inf
    logits[np.asarray(rows)] = block
    if stats is not None:
        stats.num_masks += len(rows)
        stats.mask_seconds_total += time.perf_counter() - start


def advance(matcher: llguidance.LLMatcher, token_id: int) -> None:
    """Feed the sampled token to its matcher. A token the grammar refuses (only possible for the
    stop token after the grammar stopped) leaves the matcher in its error state: harmless, the
    request is finishing."""
    if not matcher.is_stopped():
        matcher.consume_token(token_id)
