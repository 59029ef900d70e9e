"""The llguidance view of a pagedserve tokenizer: every token id as its bytes, specials flagged."""

from __future__ import annotations

from typing import Sequence

import llguidance

from pagedserve.model.tokenizer import Tokenizer


class _VocabularyView:
    """What `llguidance.TokenizerWrapper` reads: tokens (bytes per id), eos/bos ids, specials and
    an encoder of bytes. Special tokens get a 0xFF prefix (llguidance's convention, as in its
    llama.cpp helper) so no grammar can spell them as text."""

    def __init__(self, tokenizer: Tokenizer, n_vocab: int):
        self._tokenizer = tokenizer
        self.special_token_ids = [i for i in range(tokenizer.vocab_size) if tokenizer.is_special(i)]
        specials = set(self.special_token_ids)
        self.tokens: list[bytes] = [
            (b"\xff" + tokenizer.token_bytes(i)) if i in specials else tokenizer.token_bytes(i)
            for i in range(tokenizer.vocab_size)
        ] + [b""] * (n_vocab - tokenizer.vocab_size)  # padding rows of the output matrix
        self.eos_token_id = tokenizer.eos_id
        self.bos_token_id = tokenizer.bos_id

    def __call__(self, text: bytes) -> Sequence[int]:
        return self._tokenizer.encode(text.decode("utf-8", errors="replace"), add_special=False, parse_special=False)


def build_ll_tokenizer(tokenizer: Tokenizer, n_vocab: int | None = None) -> llguidance.LLTokenizer:
    """An LLTokenizer over `n_vocab` ids (default: the tokenizer's); EOS = the tokenizer's stop
    ids (EOS and end-of-turn), so a finished grammar lets the model stop. Costs ~1 s: build once."""
    n_vocab = max(n_vocab or 0, tokenizer.vocab_size)
    view = _VocabularyView(tokenizer, n_vocab)
    eos = sorted(tokenizer.stop_ids) or None
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(view), n_vocab=n_vocab, eos_token=eos)
