"""The machine's memory read bandwidth, as a decode roofline needs it: how fast all cores can
stream a buffer far larger than the last-level cache, read once, nothing written.

The probe is tuned like a weight stream, so it under-reads no engine (issue 14: a naive sum
under-reads): every thread reads its own contiguous chunks (`prange` over many chunks, so the
threads stay balanced); each chunk is summed as 64-bit integers, which LLVM vectorises into wide
loads with several independent vector accumulators (an integer sum needs no fastmath to be
reordered); the best of several passes is kept (the first touches the pages in).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from pagedserve.kernels.jit import parallel_jit

CHUNK_WORDS = 1 << 15  # 256 KiB a chunk: long sequential runs, many chunks per thread


@parallel_jit
def _read_pass(words):  # words: [num_chunks, CHUNK_WORDS] uint64
    """Sum of every word (wrapping), one chunk per prange iteration: a full read of `words`."""
    num_chunks = words.shape[0]
    partial = np.zeros(num_chunks, dtype=np.uint64)
    for c in numba.prange(num_chunks):
        row = words[c]
        acc = np.uint64(0)
        for i in range(row.shape[0]):
            acc += row[i]
        partial[c] = acc
    return partial.sum()


def measure_read_bandwidth(nbytes: int = 1 << 30, passes: int = 5) -> float:
    """Bytes per second of the fastest of `passes` full reads of an `nbytes` buffer (rounded down
    to whole 256 KiB chunks, at least one) by all Numba threads."""
    num_chunks = max(1, nbytes // (8 * CHUNK_WORDS))
    words = np.ones((num_chunks, CHUNK_WORDS), dtype=np.uint64)  # written: its pages are resident
    total = int(words.size)
    _read_pass(words[:1])  # compile (or load from the cache) before timing
    best = np.inf
    for _ in range(max(1, passes)):
        started = time.perf_counter()
        checksum = _read_pass(words)
        best = min(best, time.perf_counter() - started)
        if int(checksum) != total:  # the pass read every word, or the figure means nothing
            raise RuntimeError(f"bandwidth probe read a sum of {int(checksum)}, expected {total}")
    return words.nbytes / best
