"""SmolLM2's tokenizer (gpt2 byte-level BPE, pre-tokenizer 'smollm') against llama.cpp.

tests/data/tokenize_smollm2.json holds llama.cpp's `llama-tokenize` output for the real model
file. Strings we invented carry expectations worked out from llama.cpp's algorithm (digits
split one by one, then the GPT-2 regex on each remaining piece), written as vocabulary entries.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "tokenize_smollm2.json")
with open(DATA, encoding="utf-8") as f:
    REFERENCE = json.load(f)
CASES = REFERENCE["cases"]


def test_reference_flags_are_what_we_test():
    assert REFERENCE["add_bos"] is False and REFERENCE["parse_special"] is True
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[repr(c["text"])[:40] for c in CASES])
def test_ids_equal_llama_cpp(smollm2_tokenizer, case):
    tok = smollm2_tokenizer
    assert tok.encode(case["text"], add_special=False) == case["ids"]
    # the model does not add BOS, so add_special changes nothing
    assert tok.encode(case["text"]) == case["ids"]
    if "ids_no_parse_special" in case:
        got = tok.encode(case["text"], add_special=False, parse_special=False)
        assert got == case["ids_no_parse_special"]


@pytest.mark.parametrize("case", CASES, ids=[repr(c["text"])[:40] for c in CASES])
def test_decode_restores_reference_text(smollm2_tokenizer, case):
    assert smollm2_tokenizer.decode(case["ids"]) == case["text"]
    if "ids_no_parse_special" in case:
        assert smollm2_tokenizer.decode(case["ids_no_parse_special"]) == case["text"]


def test_metadata_fields(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.vocab_size == 49152
    assert tok.add_bos is False
    assert tok.eos_id == 2 and tok.bos_id == 1
    assert 2 in tok.stop_ids
    assert tok.token_text(2) == "<|im_end|>"
    assert tok.is_special(2) and tok.is_special(0)
    assert not tok.is_special(33)


# text -> vocabulary entries llama.cpp produces, derived from its pre-tokenizer rules
INVENTED = {
    # whitespace before a digit: "x  " is one piece (digits are cut first), so "  " ends a piece
    "x  1": ["x", "ĠĠ", "1"],
    # indented number: "   " (whitespace run minus one, followed by text) then " indented"
    "    indented = 42": ["ĠĠĠ", "Ġind", "ented", "Ġ=", "Ġ", "4", "2"],
    "trailing  ": ["tra", "iling", "ĠĠ"],
    "\n\n\n": ["ĊĊĊ"],
    # the run "  \n  " followed by "x": all but its last space, then " x"
    "  \n  x": ["ĠĠ", "ĊĠ", "Ġx"],
    # GPT-2 contractions are lower-case only
    "I'M don't": ["I", "'", "M", "Ġdon", "'t"],
    # special token between letters
    "a<|im_end|>b": ["a", "<|im_end|>", "b"],
    # other numerals count as \p{N}: each is its own piece
    "x½²": ["x", "Â½", "Â²"],
}


@pytest.mark.parametrize("text", list(INVENTED), ids=[repr(t) for t in INVENTED])
def test_invented_strings(smollm2_tokenizer, text):
    tok = smollm2_tokenizer
    ids = tok.encode(text)
    assert [tok.token_text(i) for i in ids] == INVENTED[text]
    assert tok.decode(ids) == text


def test_digits_are_always_single_tokens(smollm2_tokenizer):
    tok = smollm2_tokenizer
    digit_ids = {str(d): tok.encode(str(d))[0] for d in range(10)}
    assert digit_ids["0"] == 32 and digit_ids["1"] == 33
    for text in ["2024", " 12 ", "a1b22c333", "\t\t99"]:
        ids = tok.encode(text)
        digits_in_ids = [i for i in ids if i in digit_ids.values()]
        assert digits_in_ids == [digit_ids[c] for c in text if c.isdigit()]


def test_specials_without_parsing_are_text(smollm2_tokenizer):
    tok = smollm2_tokenizer
    parsed = tok.encode("<|im_start|>user")
    plain = tok.encode("<|im_start|>user", parse_special=False)
    assert parsed[0] == 1 and len(parsed) == 2
    assert 1 not in plain and len(plain) > 2
    assert tok.decode(plain) == "<|im_start|>user"


def test_text_between_specials_is_tokenized_independently(smollm2_tokenizer):
    tok = smollm2_tokenizer
    left, right = "Hello ", " world"
    assert tok.encode(left + "<|im_end|>" + right) == tok.encode(left) + [2] + tok.encode(right)


def test_decode_skip_special(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("<|im_start|>assistant\nHi<|im_end|>")
    assert tok.decode(ids) == "<|im_start|>assistant\nHi<|im_end|>"
    assert tok.decode(ids, skip_special=True) == "assistant\nHi"
    assert tok.token_bytes(2) == b"<|im_end|>"
    assert tok.token_bytes(2, skip_special=True) == b""


def test_decode_invalid_utf8_gives_replacement(smollm2_tokenizer):
    tok = smollm2_tokenizer
    pizza = tok.encode("🍕")
    assert len(pizza) > 1  # the emoji spans several byte-level tokens
    assert tok.decode(pizza[:-1]) == "\ufffd"
    assert b"".join(tok.token_bytes(i) for i in pizza) == "🍕".encode()


# SmolLM2's vocabulary has no token for a few bytes (0x04, 0xF1, ...): llama.cpp drops those
# bytes when encoding, and so do we. Round trips hold for text avoiding them.
_MISSING_BYTE_CHARS = "\x04\x06\x13\x14\x16\x1d"


@settings(max_examples=150, deadline=None)
@given(
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs",), max_codepoint=0x3FFFF, blacklist_characters=_MISSING_BYTE_CHARS
        ),
        max_size=60,
    )
)
def test_round_trip_any_text(smollm2_tokenizer, text):
    tok = smollm2_tokenizer
    ids = tok.encode(text, parse_special=False)
    assert tok.decode(ids) == text


def test_bytes_without_a_token_are_dropped(smollm2_tokenizer):
    tok = smollm2_tokenizer
    # U+40000 is F1 80 80 80; the vocabulary has no token for byte F1
    ids = tok.encode("a\U00040000")
    assert tok.decode(ids).encode("utf-8", "surrogatepass") == b"a" + "\ufffd".encode() * 3


def test_word_cache_gives_the_ids_of_a_cold_encode(smollm2_tokenizer):
    """Encoding with the word cache warm gives what encoding from scratch gives. (How much work
    a merge does is checked in test_tokenizer_merge.py, by counting heap operations.)"""
    import random

    rng = random.Random(1)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 10))) for _ in range(1500)]
    text = " ".join(words) + ". " + "The quick brown fox jumps over the lazy dog. " * 40
    tok = smollm2_tokenizer
    tok._impl._cache.clear()
    cold = tok.encode(text)
    assert len(tok._impl._cache) > 1000
    assert tok.encode(text) == cold
    assert len(cold) > 2000
    assert tok.decode(cold) == text
