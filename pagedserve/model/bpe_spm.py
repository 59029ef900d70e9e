"""SentencePiece-style BPE (GGUF `tokenizer.ggml.model == "llama"`: Llama 2, TinyLlama, Gemma).

The vocabulary has a score per token instead of a merge list. Starting from single characters,
the adjacent pair whose concatenation is a vocabulary entry with the highest score is merged
(leftmost on a tie), until no adjacent pair forms an entry. Spaces are written as U+2581 ("▁")
before this starts. A final symbol that is not an entry is taken apart again along the merges
that built it, and pieces that still are not entries become byte tokens `<0xXX>` ("byte
fallback"). This is the algorithm of llama.cpp's `llm_tokenizer_spm`, whose ids we must match.
"""

from __future__ import annotations

import heapq
from typing import Sequence

from pagedserve.model.tokenize_limits import check_deadline

SPACE = "\u2581"
_DEADLINE_CHECK_EVERY = 4096


class SentencePieceBPE:
    """Encodes plain text (no special tokens in it) into ids of a scored SPM vocabulary."""

    def __init__(self, tokens: Sequence[str], scores: Sequence[float]):
        self._token_to_id: dict[str, int] = {}
        for i, t in enumerate(tokens):
            self._token_to_id.setdefault(t, i)
        self._scores = list(scores) if scores else [0.0] * len(tokens)
        self._byte_ids: list[int | None] = []
        for b in range(256):
            tid = self._token_to_id.get(f"<0x{b:02X}>")
            if tid is None:
                # some vocabularies carry the raw byte as a character instead
                tid = self._token_to_id.get(chr(b)) if b < 128 else None
            self._byte_ids.append(tid)

    def encode(self, text: str, deadline: float | None = None) -> list[int]:
        """Ids for `text` exactly as given: the caller has already added any space prefix.
        Spaces are escaped to U+2581 here. O(n log n) in the length of `text`.

        deadline: a time.monotonic() value; past it, TokenizeDeadlineExceeded is raised (checked
        every _DEADLINE_CHECK_EVERY merge steps: SPM has no words to check between)."""
        text = text.replace(" ", SPACE)
        if not text:
            return []
        vocab = self._token_to_id
        scores = self._scores
        n = len(text)
        # symbol i covers text[start[i]:end[i]]; prev/next link the live symbols
        start = list(range(n))
        end = list(range(1, n + 1))
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        # text -> (left, right) symbol indices of the last bigram seen with that text; used to
        # take an unknown symbol apart again (llama.cpp keeps the same table)
        rev_merge: dict[str, tuple[int, int]] = {}
        heap: list[tuple[float, int, int, int]] = []

        def try_add(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            piece = text[start[left] : end[right]]
            tid = vocab.get(piece)
            if tid is None:
                return
            # max-heap on score, then smallest left index first
            heapq.heappush(heap, (-scores[tid], left, right, len(piece)))
            rev_merge[piece] = (left, right)

        for i in range(1, n):
            if deadline is not None and i % _DEADLINE_CHECK_EVERY == 0:
                check_deadline(deadline)
            try_add(i - 1, i)

        num_popped = 0
        while heap:
            _, left, right, size = heapq.heappop(heap)
            num_popped += 1
            if deadline is not None and num_popped % _DEADLINE_CHECK_EVERY == 0:
                check_deadline(deadline)
            # skip bigrams whose symbols changed since they were queued
            if end[left] == start[left] or end[right] == start[right]:
                continue
            if (end[left] - start[left]) + (end[right] - start[right]) != size:
                continue
            if nxt[left] != right:
                continue
            end[left] = end[right]
            start[right] = end[right]  # right symbol is now empty
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            try_add(prev[left], left)
            try_add(left, nxt[left])

        out: list[int] = []
        i = 0
        while i != -1:
            self._resegment(text, start[i], end[i], start, end, rev_merge, out)
            i = nxt[i]
        return out

    def _resegment(self, text, s, e, start, end, rev_merge, out) -> None:
        piece = text[s:e]
        tid = self._token_to_id.get(piece)
        if tid is not None:
            out.append(tid)
            return
        pair = rev_merge.get(piece)
        if pair is None:
            for b in piece.encode("utf-8"):
                bid = self._byte_ids[b]
                if bid is not None:
                    out.append(bid)
            return
        left, right = pair
        # llama.cpp re-reads the two symbols' current extents here
        self._resegment(text, start[left], end[left], start, end, rev_merge, out)
        self._resegment(text, start[right], end[right], start, end, rev_merge, out)
