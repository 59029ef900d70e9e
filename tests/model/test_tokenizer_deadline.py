"""Tokenization stops at its deadline, and inputs too large to be a prompt are recognised.

The clock is faked (one tick per read), so these tests say how often the deadline is checked,
never how long anything takes.
"""

from __future__ import annotations

import pytest

from pagedserve.model import tokenize_limits
from pagedserve.model.tokenizer import (
    TokenizeDeadlineExceeded,
    load_tokenizer,
    max_input_bytes,
)


class TickingClock:
    """time.monotonic stand-in that advances by one at every read."""

    def __init__(self):
        self.now = 0.0
        self.reads = 0

    def monotonic(self) -> float:
        self.now += 1.0
        self.reads += 1
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = TickingClock()
    monkeypatch.setattr(tokenize_limits, "time", fake)
    return fake


@pytest.fixture(scope="module")
def gemma_tok():
    from pagedserve.model.gguf_file import read_metadata
    from pagedserve.model.model_fetch import fetch_model

    return load_tokenizer(read_metadata(fetch_model("gemma3-270m")))


@pytest.fixture(params=["smollm2", "gemma3"])
def tok(request, smollm2_tokenizer, gemma_tok):
    return smollm2_tokenizer if request.param == "smollm2" else gemma_tok


def _reads(clock, fn) -> int:
    """How often `fn` reads the clock."""
    clock.reads = 0
    fn()
    return clock.reads


def test_deadline_already_passed_raises_before_any_work(tok, clock):
    with pytest.raises(TokenizeDeadlineExceeded):
        tok.encode("hello world", deadline=0.0)
    assert clock.reads == 1


def test_far_deadline_gives_the_ids_of_no_deadline(tok, clock):
    text = "The quick brown fox <|im_end|><end_of_turn> jumps! " * 300 + "!" * 5000
    assert tok.encode(text, deadline=1e12) == tok.encode(text)


def test_many_words_are_stopped_between_words(smollm2_tokenizer, clock):
    tok = smollm2_tokenizer
    text = "word " * 10_000  # 10,000 pre-tokenized words
    setup_reads = _reads(clock, lambda: tok.partition(text, deadline=1e12)) + 1
    full_reads = _reads(clock, lambda: tok.encode(text, deadline=1e12))
    # read once per DEADLINE_CHECK_EVERY words: not per word, and not only at the start
    assert full_reads - setup_reads == -(-10_000 // tokenize_limits.DEADLINE_CHECK_EVERY)
    clock.now = 0.0
    deadline = setup_reads + 2.0
    with pytest.raises(TokenizeDeadlineExceeded):
        tok.encode(text, deadline=deadline)
    assert clock.now == deadline + 1  # stopped at the first check after the deadline


def test_one_long_word_is_stopped_while_merging(smollm2_tokenizer, clock):
    tok = smollm2_tokenizer
    word = "!?" * 20_000
    assert len(tok._impl._pre.split(word)) == 1  # no check between words can stop it
    setup_reads = _reads(clock, lambda: tok.partition(word, deadline=1e12)) + 2  # encode, word 0
    tok._impl._cache.clear()
    full_reads = _reads(clock, lambda: tok.encode(word, deadline=1e12))
    assert full_reads >= setup_reads + 3  # the merge loop reads the clock
    clock.now = 0.0
    with pytest.raises(TokenizeDeadlineExceeded):
        tok.encode(word, deadline=setup_reads + 1.0)


def test_spm_text_is_stopped_while_merging(gemma_tok, clock):
    # SPM tokenizes a stretch of text as a whole: only its merge loop can stop it
    text = "!" * 40_000
    setup_reads = _reads(clock, lambda: gemma_tok.partition(text, deadline=1e12)) + 1
    full_reads = _reads(clock, lambda: gemma_tok.encode(text, deadline=1e12))
    assert full_reads > setup_reads + 5
    clock.now = 0.0
    with pytest.raises(TokenizeDeadlineExceeded):
        gemma_tok.encode(text, deadline=setup_reads + 1.0)


def test_special_token_search_is_stopped(gemma_tok, clock):
    # Gemma 3 has over 6,000 special tokens to look for before any BPE runs
    assert len(gemma_tok._specials_all) > 6000
    with pytest.raises(TokenizeDeadlineExceeded):
        gemma_tok.partition("text", deadline=3.0)
    assert clock.reads == 4


def _longest_token_bytes(tok) -> int:
    return max(len(tok.token_bytes(i)) for i in range(tok.vocab_size))


def test_no_token_is_longer_than_the_input_bound(smollm2_tokenizer, gemma_tok):
    # the measurements MAX_BYTES_PER_TOKEN is chosen from
    assert _longest_token_bytes(smollm2_tokenizer) == 81  # "\n" and 80 spaces
    assert _longest_token_bytes(gemma_tok) == 48
    assert 81 < tokenize_limits.MAX_BYTES_PER_TOKEN


def test_max_input_bytes_is_a_multiple_of_max_model_len():
    assert max_input_bytes(8192) == 8192 * tokenize_limits.MAX_BYTES_PER_TOKEN
    # a prompt one token short of max_model_len, all of SmolLM2's longest token, is not refused
    assert 8191 * 81 <= max_input_bytes(8192)
