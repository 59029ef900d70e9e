"""Byte-level BPE (GGUF `tokenizer.ggml.model == "gpt2"`).

Vocabulary entries are written in GPT-2's printable alphabet: every byte 0..255 is mapped to one
Unicode character (printable Latin-1 bytes map to themselves, the rest to U+0100 and up). A word
from the pre-tokenizer is turned into its UTF-8 bytes, each byte into its character, and then
merges are applied: always the adjacent pair with the lowest merge rank, the leftmost one on a
tie, until no adjacent pair has a rank. That is the order llama.cpp's priority queue produces.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Sequence

from pagedserve.model.pretokenizers import PreTokenizer
from pagedserve.model.tokenize_limits import DEADLINE_CHECK_EVERY, check_deadline


def _byte_alphabet() -> list[str]:
    """byte value -> the character GPT-2 vocabularies write it as."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = [""] * 256
    for b in printable:
        table[b] = chr(b)
    extra = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR: list[str] = _byte_alphabet()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_CHAR)}
# Translating a latin-1 decoded str with this table is the fastest way to map a word's bytes.
_TRANSLATE = {b: c for b, c in enumerate(BYTE_TO_CHAR)}


def byte_encode(text: str) -> str:
    """`text` as UTF-8 bytes, each written as its GPT-2 alphabet character."""
    return text.encode("utf-8").decode("latin-1").translate(_TRANSLATE)


def byte_decode(token_text: str) -> bytes:
    """The bytes a vocabulary entry stands for. Characters outside the alphabet (which a
    well-formed vocabulary does not contain) are kept as their own UTF-8 bytes."""
    out = bytearray()
    for ch in token_text:
        b = CHAR_TO_BYTE.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


# Words longer than this (in bytes) are not cached, and at most this many words are.
_CACHE_WORD_CHARS = 64
_CACHE_ENTRIES = 100_000
# Merge steps between two looks at the deadline inside one word.
_MERGE_DEADLINE_CHECK_EVERY = 4096


class ByteLevelBPE:
    """Encodes plain text (no special tokens in it) into ids of a byte-level BPE vocabulary."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        pretokenizer: PreTokenizer,
    ):
        self._token_to_id: dict[str, int] = {}
        for i, t in enumerate(tokens):
            # keep the first id of a duplicated entry (llama.cpp refuses such files)
            self._token_to_id.setdefault(t, i)
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            # split at the first space after position 0, as llama.cpp does
            pos = merge.find(" ", 1)
            if pos < 0:
                continue
            self._ranks.setdefault((merge[:pos], merge[pos + 1 :]), rank)
        self._pre = pretokenizer
        self._ignore_merges = pretokenizer.ignore_merges
        # word (in byte alphabet) -> ids. Words repeat a lot in real text, so this pays off fast;
        # long words (runs of punctuation, emoji) rarely repeat and are not kept, so the cache
        # holds at most _CACHE_ENTRIES * _CACHE_WORD_CHARS characters.
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str, deadline: float | None = None) -> list[int]:
        """Ids for `text`, which is tokenized as ordinary text from start to end.

        deadline: a time.monotonic() value; past it, TokenizeDeadlineExceeded is raised (checked
        between words and while merging a long word)."""
        out: list[int] = []
        cache = self._cache
        for num_words, word in enumerate(self._pre.split(text)):
            if deadline is not None and num_words % DEADLINE_CHECK_EVERY == 0:
                check_deadline(deadline)
            enc = byte_encode(word)
            ids = cache.get(enc)
            if ids is None:
                ids = self._encode_word(enc, deadline)
                if len(enc) <= _CACHE_WORD_CHARS:
                    if len(cache) >= _CACHE_ENTRIES:
                        cache.clear()
                    cache[enc] = ids
            out.extend(ids)
        return out

    def _encode_word(self, word: str, deadline: float | None = None) -> tuple[int, ...]:
        vocab = self._token_to_id
        if self._ignore_merges and word in vocab:
            return (vocab[word],)
        symbols = merge_word(list(word), self._ranks, deadline)
        ids: list[int] = []
        for sym in symbols:
            tid = vocab.get(sym)
            if tid is not None:
                ids.append(tid)
                continue
            # A merge result missing from the vocabulary (malformed file): fall back to the
            # single-byte tokens, skipping any the vocabulary lacks, as llama.cpp does.
            for ch in sym:
                tid = vocab.get(ch)
                if tid is not None:
                    ids.append(tid)
        return tuple(ids)


def merge_word(
    symbols: list[str], ranks: dict[tuple[str, str], int], deadline: float | None = None
) -> list[str]:
    """`symbols` after applying merges until none applies: always the adjacent pair with the
    lowest rank, the leftmost one on a tie. O(n log n) in the number of symbols.

    The symbols form a doubly linked list; a heap holds (rank, left, right, size) for every
    adjacent pair that has a rank. Merging never moves a symbol, so the original index of the
    left symbol orders pairs by position, and an entry is stale once one of its symbols died or
    grew (its size no longer matches), which is checked when it is popped (as llama.cpp does).
    """
    n = len(symbols)
    if n < 2:
        return symbols
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prev = list(range(-1, n - 1))
    heap: list[tuple[int, int, int, int]] = []
    for i in range(n - 1):
        rank = ranks.get((symbols[i], symbols[i + 1]))
        if rank is not None:
            heap.append((rank, i, i + 1, len(symbols[i]) + len(symbols[i + 1])))
    heapify(heap)
    num_popped = 0
    while heap:
        _, left, right, size = heappop(heap)
        num_popped += 1
        if deadline is not None and num_popped % _MERGE_DEADLINE_CHECK_EVERY == 0:
            check_deadline(deadline)
        left_sym = symbols[left]
        right_sym = symbols[right]
        if not left_sym or not right_sym or nxt[left] != right:
            continue
        if len(left_sym) + len(right_sym) != size:
            continue
        merged = left_sym + right_sym
        symbols[left] = merged
        symbols[right] = ""  # dead
        after = nxt[right]
        nxt[left] = after
        if after >= 0:
            prev[after] = left
            rank = ranks.get((merged, symbols[after]))
            if rank is not None:
                heappush(heap, (rank, left, after, len(merged) + len(symbols[after])))
        before = prev[left]
        if before >= 0:
            rank = ranks.get((symbols[before], merged))
            if rank is not None:
                heappush(heap, (rank, before, left, len(symbols[before]) + len(merged)))
    return [s for s in symbols if s]
