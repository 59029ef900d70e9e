"""Prompt-lookup drafts: for every sequence of a batch, continue its latest n-gram from its own past.

For sequence b (its tokens, prompt then outputs, packed as token_ids[offsets[b]:offsets[b + 1]]),
find the longest n in [min_n, max_n] such that its last n tokens also occur ending at an earlier
position; among the occurrences of that n-gram take the latest (nearest to the end: text that
repeats tends to repeat what it just said). The draft is the num_drafts[b] tokens that followed that
occurrence; a copy that reaches the end of the sequence goes on copying its own drafts (as an
LZ77 copy overlapping its output), so a pattern of period p ending the sequence keeps repeating.

One backward scan per sequence: at each candidate end position the match length with the suffix
is counted up to max_n, so the cost is O(len * max_n) in the worst case and about O(len) on text.
Sequences are independent and run in parallel (prange).
"""

from __future__ import annotations

import numba
import numpy as np

from pagedserve.kernels.jit import jit, parallel_jit


@jit
def _propose_one(seq, min_n, max_n, num_drafts, out):
    """Drafts for one sequence seq [L] int32 into out[:count]; returns count."""
    length = seq.shape[0]
    if num_drafts <= 0 or length < min_n + 1:
        return 0
    best_n = 0
    best_end = -1  # exclusive end of the best earlier occurrence
    # A candidate occurrence ends at `end` (exclusive), end < length, so at least one token follows.
    for end in range(length - 1, 0, -1):
        limit = min(max_n, end)
        n = 0
        while n < limit and seq[end - 1 - n] == seq[length - 1 - n]:
            n += 1
        if n > best_n:  # strictly longer: among equal lengths the latest (first found) is kept
            best_n = n
            best_end = end
            if n == max_n:
                break
    if best_n < min_n:
        return 0
    for i in range(num_drafts):
        source = best_end + i
        out[i] = seq[source] if source < length else out[source - length]
    return num_drafts


@parallel_jit
def propose_ngram_drafts(token_ids, offsets, min_n, max_n, num_drafts, out_ids, out_counts):
    """Prompt-lookup drafts for B packed sequences.

    token_ids [N] int32, offsets [B+1] int64, num_drafts [B] int32 (0: none for that sequence);
    writes out_ids [B, K] int32 (K >= max(num_drafts); entries past the count are left as they are)
    and out_counts [B] int32.
    """
    for b in numba.prange(offsets.shape[0] - 1):
        seq = token_ids[offsets[b]:offsets[b + 1]]
        out_counts[b] = _propose_one(seq, min_n, max_n, num_drafts[b], out_ids[b])
