"""The heap-based BPE merges against the plain quadratic algorithms they replace.

`reference_gpt2_merge` is the byte-level merge loop pagedserve used before (rescan every pair
after each merge), `reference_spm` the SentencePiece loop written the obvious way. Both are
slow but easy to check by eye; the heap versions must give the same symbols on every input.
"""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagedserve.model import bpe_gpt2
from pagedserve.model.bpe_gpt2 import ByteLevelBPE, byte_encode, merge_word
from pagedserve.model.bpe_spm import SPACE, SentencePieceBPE
from pagedserve.model.pretokenizers import PreTokenizer


def reference_gpt2_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merge the adjacent pair of lowest rank (leftmost on a tie) until no pair has a rank."""
    symbols = list(symbols)
    while len(symbols) > 1:
        best_rank, best_i = None, -1
        for i in range(len(symbols) - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:
            break
        symbols[best_i : best_i + 2] = [symbols[best_i] + symbols[best_i + 1]]
    return symbols


def reference_spm(text: str, vocab: dict[str, int], scores: list[float], byte_ids: list) -> list[int]:
    """Merge the adjacent pair whose concatenation is the best-scoring entry (leftmost on a tie)
    until no pair forms an entry; unknown single characters become byte tokens."""
    symbols = list(text.replace(" ", SPACE))
    while len(symbols) > 1:
        best_score, best_i = None, -1
        for i in range(len(symbols) - 1):
            tid = vocab.get(symbols[i] + symbols[i + 1])
            if tid is not None and (best_score is None or scores[tid] > best_score):
                best_score, best_i = scores[tid], i
        if best_score is None:
            break
        symbols[best_i : best_i + 2] = [symbols[best_i] + symbols[best_i + 1]]
    ids: list[int] = []
    for sym in symbols:
        if sym in vocab:
            ids.append(vocab[sym])
        else:
            ids.extend(byte_ids[b] for b in sym.encode("utf-8") if byte_ids[b] is not None)
    return ids


@st.composite
def merge_tables(draw, alphabet="abc"):
    """A rank table in which later merges build on earlier ones, ranks shuffled so that the
    order of ranks is not the order of building (real merge lists need not be either)."""
    symbols = list(alphabet)
    pairs: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 30))):
        left = draw(st.sampled_from(symbols))
        right = draw(st.sampled_from(symbols))
        if (left, right) not in pairs:
            pairs.append((left, right))
            if len(left + right) <= 8:
                symbols.append(left + right)
    ranks = draw(st.permutations(range(len(pairs))))
    # ranks are distinct, as in a merge list; ties come from one pair at several positions
    return {pair: rank for pair, rank in zip(pairs, ranks)}


@settings(max_examples=300, deadline=None)
@given(merge_tables(), st.text(alphabet="abc", max_size=80))
def test_gpt2_merge_equals_reference_on_random_tables(ranks, word):
    assert merge_word(list(word), ranks) == reference_gpt2_merge(list(word), ranks)


# runs of one or two characters are the inputs that used to be quadratic
_PUNCTUATION_TEXT = st.text(alphabet="!?. \n%ée🍕", max_size=200) | st.builds(
    lambda a, n: a * n, st.sampled_from(["!", "!?", "🍕", "  ", "%%!"]), st.integers(0, 300)
)


@settings(max_examples=150, deadline=None)
@given(_PUNCTUATION_TEXT)
def test_gpt2_merge_equals_reference_on_smollm2(smollm2_tokenizer, text):
    impl = smollm2_tokenizer._impl
    for word in impl._pre.split(text):
        symbols = list(byte_encode(word))
        assert merge_word(list(symbols), impl._ranks) == reference_gpt2_merge(symbols, impl._ranks)


@st.composite
def spm_vocabularies(draw, alphabet="ab" + SPACE):
    """A scored vocabulary over `alphabet` with byte tokens; scores from a small set, so ties
    between different pairs are common."""
    pieces = list(alphabet)
    for _ in range(draw(st.integers(1, 25))):
        piece = draw(st.sampled_from(pieces)) + draw(st.sampled_from(pieces))
        if piece not in pieces and len(piece) <= 8:
            pieces.append(piece)
    tokens = [f"<0x{b:02X}>" for b in range(256)] + pieces
    scores = [0.0] * 256 + [float(draw(st.integers(-4, 0))) for _ in pieces]
    return tokens, scores


@settings(max_examples=300, deadline=None)
@given(spm_vocabularies(), st.text(alphabet="ab c", max_size=80))
def test_spm_equals_reference_on_random_vocabularies(vocabulary, text):
    tokens, scores = vocabulary
    spm = SentencePieceBPE(tokens, scores)
    vocab = {t: i for i, t in enumerate(tokens)}
    assert spm.encode(text) == reference_spm(text, vocab, scores, spm._byte_ids)


@pytest.fixture(scope="module")
def gemma_spm():
    from pagedserve.model.gguf_file import read_metadata
    from pagedserve.model.model_fetch import fetch_model
    from pagedserve.model.tokenizer import load_tokenizer

    return load_tokenizer(read_metadata(fetch_model("gemma3-270m")))._impl


@settings(max_examples=100, deadline=None)
@given(_PUNCTUATION_TEXT)
def test_spm_equals_reference_on_gemma3(gemma_spm, text):
    vocab = gemma_spm._token_to_id
    assert gemma_spm.encode(text) == reference_spm(text, vocab, gemma_spm._scores, gemma_spm._byte_ids)


def _count_heap_pops(monkeypatch) -> list[int]:
    count = [0]

    def counting_heappop(heap):
        count[0] += 1
        return heapq.heappop(heap)

    monkeypatch.setattr(bpe_gpt2, "heappop", counting_heappop)
    return count


@pytest.mark.parametrize("run", ["!", "!?", "🍕"])
def test_long_word_examines_each_candidate_pair_once(smollm2_tokenizer, monkeypatch, run):
    """A merge queues one candidate per initial pair and at most two per merge, and examines each
    once: the work is linear in heap operations, where the old loop rescanned every pair after
    every merge (n^2 / 2 pair visits for a run of n bytes)."""
    impl = smollm2_tokenizer._impl
    symbols = list(byte_encode(run * 2000))
    pops = _count_heap_pops(monkeypatch)
    merged = merge_word(list(symbols), impl._ranks)
    num_merges = len(symbols) - len(merged)
    assert num_merges >= len(symbols) // 4  # the run merges a lot: the case that matters
    assert pops[0] <= (len(symbols) - 1) + 2 * num_merges


def test_cache_keeps_short_words_only_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(bpe_gpt2, "_CACHE_ENTRIES", 10)
    tokens = list(bpe_gpt2.BYTE_TO_CHAR)
    bpe = ByteLevelBPE(tokens, [], PreTokenizer("gpt-2"))
    long_word = "x" * (bpe_gpt2._CACHE_WORD_CHARS + 1)
    assert bpe.encode(long_word) == [ord("x")] * len(long_word)
    assert long_word not in bpe._cache
    words = [f"w{chr(ord('a') + i % 26)}{chr(ord('a') + i // 26)}" for i in range(50)]
    for word in words:
        assert bpe.encode(word) == [tokens.index(c) for c in word]
        assert len(bpe._cache) <= 10
    # a cached word gives the same ids as a fresh one
    assert bpe.encode(words[-1]) == [tokens.index(c) for c in words[-1]]
