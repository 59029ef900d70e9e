"""IncrementalDetokenizer: streamed text equals one-shot decode, never half a UTF-8 character."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pagedserve.model.incremental_detokenizer import IncrementalDetokenizer, _incomplete_tail


def _stream(tok, ids, chunk=1, skip_special=False):
    detok = IncrementalDetokenizer(tok, skip_special=skip_special)
    pieces = [detok.push(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    return pieces, detok.flush()


def test_emoji_split_across_tokens_is_held_back(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("I love 🍕!")
    pieces, tail = _stream(tok, ids)
    assert "".join(pieces) + tail == "I love 🍕!"
    assert tail == ""
    for p in pieces:
        assert "\ufffd" not in p
    # the emoji appears whole, in one piece
    assert any("🍕" in p for p in pieces)
    # the token carrying the emoji's first bytes released nothing
    assert "" in pieces


def test_cjk_streaming(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "机器学习正在改变世界。"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # several characters span more than one token
    pieces, tail = _stream(tok, ids)
    assert "".join(pieces) == text and tail == ""
    assert all("\ufffd" not in p for p in pieces)


def test_flush_releases_broken_bytes(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("🚀")
    detok = IncrementalDetokenizer(tok)
    assert detok.push(ids[:-1]) == ""
    assert detok.flush() == "\ufffd"
    assert detok.flush() == ""


def test_skip_special(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("<|im_start|>assistant\nOK<|im_end|>")
    pieces, tail = _stream(tok, ids, skip_special=True)
    assert "".join(pieces) + tail == "assistant\nOK"
    pieces, tail = _stream(tok, ids)
    assert "".join(pieces) + tail == "<|im_start|>assistant\nOK<|im_end|>"


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x3FFFF), max_size=40),
    st.integers(min_value=1, max_value=4),
)
def test_stream_equals_decode(smollm2_tokenizer, text, chunk):
    tok = smollm2_tokenizer
    ids = tok.encode(text, parse_special=False)
    pieces, tail = _stream(tok, ids, chunk)
    assert "".join(pieces) + tail == tok.decode(ids)


def test_incomplete_tail():
    euro = "€".encode()  # E2 82 AC
    assert _incomplete_tail(b"a" + euro[:1]) == 1
    assert _incomplete_tail(b"a" + euro[:2]) == 2
    assert _incomplete_tail(b"a" + euro) == 0
    assert _incomplete_tail("🍕".encode()[:3]) == 3
    assert _incomplete_tail(b"\x80") == 0  # stray continuation byte: never completes
    assert _incomplete_tail(b"\xff") == 0
    assert _incomplete_tail(b"") == 0
