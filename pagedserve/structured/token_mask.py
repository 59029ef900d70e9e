"""Applying constrained requests' allowed-token masks to their logits rows, and advancing them.

The runner starts filling a step's masks (`start_masks`) before the forward pass and applies them
once the logits exist (`PendingMasks.apply`): llguidance fills bitmasks on its own threads with the
GIL released, so the mask work overlaps the forward pass instead of adding to the step."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Sequence

import llguidance
import llguidance.numpy as llg_np
import numpy as np

_executor: llguidance.LLExecutor | None = None
_waiter: concurrent.futures.ThreadPoolExecutor | None = None


def _get_executor() -> llguidance.LLExecutor:
    global _executor
    if _executor is None:
        _executor = llguidance.LLExecutor()
    return _executor


def _get_waiter() -> concurrent.futures.ThreadPoolExecutor:
    # One Python thread that hands the matchers to llguidance's pool and waits (GIL released).
    global _waiter
    if _waiter is None:
        _waiter = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-masks")
    return _waiter


class MaskStats:
    """Counters the runner exposes for metrics: masks filled and seconds spent filling them."""

    def __init__(self):
        self.num_masks = 0
        self.mask_seconds_total = 0.0


def _fill(matchers: Sequence[llguidance.LLMatcher], bitmask: np.ndarray) -> float:
    start = time.perf_counter()
    llg_np.fill_next_token_bitmask_par(_get_executor(), [(m, i) for i, m in enumerate(matchers)], bitmask)
    return time.perf_counter() - start


class PendingMasks:
    """The next-token bitmasks of some matchers, being filled in the background.

    The matchers must not be advanced until `apply` (or `wait`) has returned."""

    def __init__(self, matchers: Sequence[llguidance.LLMatcher], vocab_size: int, stats: MaskStats | None):
        self.vocab_size = vocab_size
        self.stats = stats
        self.bitmask = llg_np.allocate_token_bitmask(len(matchers), vocab_size)  # [n, ceil(vocab/32)] int32
        self.future = _get_waiter().submit(_fill, list(matchers), self.bitmask)

    def wait(self) -> None:
        """Block until the masks are filled (re-raises the fill's error)."""
        seconds = self.future.result()
        if self.stats is not None:
            self.stats.num_masks += self.bitmask.shape[0]
            self.stats.mask_seconds_total += seconds
            self.stats = None  # counted once

    def apply(self, logits: np.ndarray, rows: Sequence[int]) -> None:
        """Set logits[rows[i], t] = -inf for every token t that matcher i does not allow next.

        logits: [num_rows, vocab] float32, changed in place; other rows are untouched."""
        self.wait()
        vocab = logits.shape[1]
        allowed = np.unpackbits(self.bitmask.view(np.uint8), axis=1, bitorder="little")[:, :vocab]  # [n, vocab]
        index = np.asarray(rows)
        block = logits[index]
        block[allowed == 0] = -np.inf
        logits[index] = block


def start_masks(matchers: Sequence[llguidance.LLMatcher], vocab_size: int,
                stats: MaskStats | None = None) -> PendingMasks:
    """Begin filling the masks of `matchers` (their current state) in the background."""
    return PendingMasks(matchers, vocab_size, stats)


def apply_masks(logits: np.ndarray, rows: Sequence[int], matchers: Sequence[llguidance.LLMatcher],
                stats: MaskStats | None = None) -> None:
    """Set logits[rows[i], t] = -inf for every token t that matchers[i] does not allow next
    (the masks filled now; `start_masks` overlaps them with other work)."""
    if rows:
        start_masks(matchers, logits.shape[1], stats).apply(logits, rows)


def advance(matcher: llguidance.LLMatcher, token_id: int) -> None:
    """Feed the sampled token to its matcher. A token the grammar refuses (only possible for the
    stop token after the grammar stopped) leaves the matcher in its error state: harmless, the
    request is finishing."""
    if not matcher.is_stopped():
        matcher.consume_token(token_id)
