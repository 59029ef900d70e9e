"""Prompt-lookup (n-gram) drafts: continue a request's latest n-gram from where it occurred before.

Input-grounded work (summaries, code edits, answers that quote their context) repeats its prompt,
so the tokens that followed the last occurrence of the request's latest few tokens are a good
guess of the next ones; the lookup is one Numba call over all requests of a step
(kernels/ngram_lookup.py), nearly free next to a forward pass.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pagedserve.kernels.ngram_lookup import propose_ngram_drafts


class NgramProposer:
    """Implements `spec.proposer.DraftProposer` by prompt lookup with n-grams of min_n..max_n tokens."""

    def __init__(self, min_n: int, max_n: int):
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got {min_n} and {max_n}")
        self.min_n = min_n
        self.max_n = max_n

    def propose(self, request_ids: Sequence[str], contexts: Sequence[np.ndarray],
                num_drafts: Sequence[int]) -> list[np.ndarray]:
        num_seqs = len(contexts)
        if num_seqs == 0:
            return []
        lengths = np.fromiter((len(c) for c in contexts), np.int64, num_seqs)  # [B]
        offsets = np.zeros(num_seqs + 1, np.int64)  # [B+1]
        np.cumsum(lengths, out=offsets[1:])
        token_ids = np.concatenate([np.asarray(c, np.int32) for c in contexts])  # [N]
        wanted = np.asarray(num_drafts, np.int32)  # [B]
        out_ids = np.empty((num_seqs, max(1, int(wanted.max()))), np.int32)  # [B, K]
        out_counts = np.zeros(num_seqs, np.int32)  # [B]
        propose_ngram_drafts(token_ids, offsets, self.min_n, self.max_n, wanted, out_ids, out_counts)
        return [out_ids[b, :out_counts[b]].copy() for b in range(num_seqs)]
