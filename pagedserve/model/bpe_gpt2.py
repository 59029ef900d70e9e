"""Byte-level BPE (GGUF `tokenizer.ggml.model == "gpt2"`).

Vocabulary entries are written in GPT-2's printable alphabet: every byte 0..255 is mapped to one
Unicode character (printable Latin-1 bytes map to themselves, the rest to U+0100 and up). A word
from the pre-tokenizer is turned into its UTF-8 bytes, each byte into its character, and then
merges are applied: always the adjacent pair with the lowest merge rank, the leftmost one on a
tie, until no adjacent pair has a rank. That is the order llama.cpp's priority queue produces.
"""

from __future__ import annotations

from typing import Sequence

from pagedserve.model.pretokenizers import PreTokenizer


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
        # word (in byte alphabet) -> ids; words repeat a lot in real text, so this pays off fast
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_limit = 200_000

    def encode(self, text: str) -> list[int]:
        """Ids for `text`, which is tokenized as ordinary text from start to end."""
        out: list[int] = []
        cache = self._cache
        for word in self._pre.split(text):
            enc = byte_encode(word)
            ids = cache.get(enc)
            if ids is None:
                ids = self._encode_word(enc)
                if len(cache) >= self._cache_limit:
                    cache.clear()
                cache[enc] = ids
            out.extend(ids)
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        vocab = self._token_to_id
        if self._ignore_merges and word in vocab:
            return (vocab[word],)
        symbols = self._merge(list(word))
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

    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply merges to `symbols` until none applies; returns the final symbols."""
        ranks = self._ranks
        if len(symbols) < 2:
            return symbols
        # rank of the pair (symbols[i], symbols[i+1]), None where there is no merge
        pair_ranks = [ranks.get((symbols[i], symbols[i + 1])) for i in range(len(symbols) - 1)]
        while True:
            best = None
            best_i = -1
            for i, r in enumerate(pair_ranks):
                if r is not None and (best is None or r < best):
                    best = r
                    best_i = i
            if best is None:
                return symbols
            i = best_i
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
            # only the pairs touching the merged symbol change
            del pair_ranks[i]
            if i > 0:
                pair_ranks[i - 1] = ranks.get((symbols[i - 1], symbols[i]))
            if i < len(symbols) - 1:
                pair_ranks[i] = ranks.get((symbols[i], symbols[i + 1]))
            if len(symbols) < 2:
                return symbols
