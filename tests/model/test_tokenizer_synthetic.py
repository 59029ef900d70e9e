"""Tokenizer algorithms on tiny hand-made vocabularies, and the pre-tokenizer regex lists.

Expected results are worked out by hand from llama.cpp's algorithms (see the comments).
"""

from __future__ import annotations

import pytest

from pagedserve.model.bpe_gpt2 import BYTE_TO_CHAR, byte_decode, byte_encode
from pagedserve.model.gguf_file import ModelLoadError
from pagedserve.model.pretokenizers import PreTokenizer
from pagedserve.model.tokenizer import load_tokenizer

# ---- pre-tokenizers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pre, text, words",
    [
        # smollm: every digit alone, then GPT-2 inside each remaining piece
        ("smollm", "abc 123", ["abc", " ", "1", "2", "3"]),
        ("smollm", "  7x", ["  ", "7", "x"]),
        ("smollm", "hi   there", ["hi", "  ", " there"]),
        # gpt-2: a space joins the number after it
        ("gpt-2", "abc 123", ["abc", " 123"]),
        ("gpt-2", "it's  ok\n", ["it", "'s", " ", " ok", "\n"]),
        # llama3: numbers in threes, case-insensitive contractions, newlines with their run
        (
            "llama-bpe",
            "Hello world 12345 I'M\n\n  x",
            ["Hello", " world", " ", "123", "45", " I", "'M", "\n\n", " ", " x"],
        ),
        # one non-letter, non-digit character joins the letters after it
        ("llama-bpe", "(x)", ["(x", ")"]),
        # qwen2: as llama3 but single digits
        ("qwen2", "abc 123", ["abc", " ", "1", "2", "3"]),
        # default: punctuation runs first, numbers cut into threes from the left
        ("default", "a+b=1234", ["a", "+", "b", "=", "123", "4"]),
    ],
)
def test_pretokenizer_words(pre, text, words):
    assert PreTokenizer(pre).split(text) == words


@pytest.mark.parametrize("pre", ["smollm", "gpt-2", "llama-bpe", "qwen2", "default"])
def test_pretokenizer_words_cover_text(pre):
    text = "  Mixed: café 42, 'quoted' \t\n  end  "
    words = PreTokenizer(pre).split(text)
    assert "".join(words) == text and all(words)


def test_byte_alphabet():
    assert len(set(BYTE_TO_CHAR)) == 256
    assert BYTE_TO_CHAR[ord(" ")] == "Ġ" and BYTE_TO_CHAR[ord("\n")] == "Ċ"
    assert BYTE_TO_CHAR[ord("a")] == "a"
    assert byte_decode(byte_encode("é 🍕")) == "é 🍕".encode()


# ---- byte-level BPE ---------------------------------------------------------------------------


def _gpt2_metadata(extra_tokens, merges, pre="gpt-2", **kw):
    tokens = ["<|end|>"] + BYTE_TO_CHAR + extra_tokens
    md = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 1),
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.eos_token_id": 0,
    }
    md.update(kw)
    return md


def _texts(tok, ids):
    return [tok.token_text(i) for i in ids]


def test_bpe_merges_by_rank_not_by_position():
    # "a b" has a better rank than "Ġ a", so " ab" becomes "Ġ" + "ab", not "Ġa" + "b"
    tok = load_tokenizer(_gpt2_metadata(["ab", "Ġa", "abc"], ["a b", "ab c", "Ġ a"]))
    assert _texts(tok, tok.encode(" ab")) == ["Ġ", "ab"]
    assert _texts(tok, tok.encode("abc")) == ["abc"]
    assert _texts(tok, tok.encode(" a")) == ["Ġa"]


def test_bpe_equal_ranks_merge_leftmost_first():
    tok = load_tokenizer(_gpt2_metadata(["aa"], ["a a"]))
    assert _texts(tok, tok.encode("aaa")) == ["aa", "a"]


def test_bpe_special_and_stop_ids():
    tok = load_tokenizer(_gpt2_metadata(["ab"], ["a b"]))
    assert tok.encode("ab<|end|>ab") == [tok.encode("ab")[0], 0, tok.encode("ab")[0]]
    assert 0 not in tok.encode("ab<|end|>ab", parse_special=False)
    assert tok.stop_ids == frozenset({0})
    assert tok.decode(tok.encode("ab<|end|>")) == "ab<|end|>"
    assert tok.decode(tok.encode("ab<|end|>"), skip_special=True) == "ab"


def test_bpe_add_bos_and_eos_from_metadata():
    md = _gpt2_metadata(
        ["<s>"],
        [],
        **{"tokenizer.ggml.bos_token_id": 257, "tokenizer.ggml.add_bos_token": True,
           "tokenizer.ggml.add_eos_token": True},
    )
    md["tokenizer.ggml.token_type"][257] = 3
    tok = load_tokenizer(md)
    assert tok.add_bos and tok.bos_id == 257
    assert tok.encode("a") == [257, tok.encode("a", add_special=False)[0], 0]
    assert tok.encode("", add_special=True) == [257, 0]
    assert tok.encode("", add_special=False) == []


def test_unsupported_pre_tokenizer_is_named():
    with pytest.raises(ModelLoadError, match="'made-up-pre'"):
        load_tokenizer(_gpt2_metadata([], [], pre="made-up-pre"))


def test_unsupported_tokenizer_model_is_named():
    md = _gpt2_metadata([], [])
    md["tokenizer.ggml.model"] = "bert"
    with pytest.raises(ModelLoadError, match="'bert'"):
        load_tokenizer(md)


def test_missing_vocabulary():
    with pytest.raises(ModelLoadError):
        load_tokenizer({"tokenizer.ggml.model": "gpt2"})


# ---- SentencePiece BPE ------------------------------------------------------------------------

SPM_NORMAL = {
    "▁": -10.0, "h": -10.0, "e": -10.0, "l": -10.0, "o": -10.0,
    "lo": -0.5, "▁h": -1.0, "▁he": -2.0, "ll": -3.0, "▁hell": -4.0,
}


def _spm_metadata(add_space_prefix=None):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    for text, score in SPM_NORMAL.items():
        tokens.append(text)
        types.append(1)
        scores.append(score)
    tokens.append("<tag>")
    types.append(4)
    scores.append(0.0)
    md = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    if add_space_prefix is not None:
        md["tokenizer.ggml.add_space_prefix"] = add_space_prefix
    return md


@pytest.fixture(scope="module")
def spm():
    return load_tokenizer(_spm_metadata())


def test_spm_defaults(spm):
    # SPM vocabularies add BOS and a space prefix unless the metadata says otherwise
    assert spm.add_bos and spm.add_space_prefix and spm.bos_id == 1


def test_spm_merges_highest_score_first(spm):
    # "▁hello": "lo" (-0.5) merges first, then "▁h" (-1) and "▁he" (-2); "ll" can no longer
    # merge because its right "l" became part of "lo"
    assert _texts(spm, spm.encode("hello", add_special=False)) == ["▁he", "l", "lo"]
    # "▁hell": ▁h, ▁he, then ll, then ▁he+ll = ▁hell
    assert _texts(spm, spm.encode("hell", add_special=False)) == ["▁hell"]


def test_spm_byte_fallback(spm):
    assert _texts(spm, spm.encode("hé", add_special=False)) == ["▁h", "<0xC3>", "<0xA9>"]
    assert spm.decode(spm.encode("hé", add_special=False)) == "hé"


def test_spm_space_prefix_after_special(spm):
    ids = spm.encode("hell<tag>hell")
    assert _texts(spm, ids) == ["<s>", "▁hell", "<tag>", "▁hell"]
    # user-defined tokens are cut out even without special parsing; control ones are not
    assert _texts(spm, spm.encode("<tag>", parse_special=False, add_special=False)) == ["<tag>"]
    assert 1 not in spm.encode("<s>", parse_special=False, add_special=False)


def test_spm_decode_drops_first_space_like_llama_cpp(spm):
    ids = spm.encode("hell hell", add_special=False)
    assert spm.decode(ids) == "hell hell"
    with_bos = spm.encode("hell")
    assert spm.decode(with_bos) == "<s> hell"
    assert spm.decode(with_bos, skip_special=True) == " hell"


def test_spm_without_space_prefix():
    tok = load_tokenizer(_spm_metadata(add_space_prefix=False))
    assert _texts(tok, tok.encode("hell", add_special=False)) == ["h", "e", "ll"]
    assert tok.decode(tok.encode(" hell", add_special=False)) == " hell"


def test_spm_stream_keeps_the_leading_space(spm):
    from pagedserve.model.incremental_detokenizer import IncrementalDetokenizer

    # a generated continuation: " hell" follows the prompt, so its space must survive
    ids = spm.encode("hell hell", add_special=False)
    detok = IncrementalDetokenizer(spm)
    assert "".join(detok.push([i]) for i in ids) + detok.flush() == " hell hell"
