"""apply_masks against a plain reference: masked rows keep exactly the allowed logits, others
are untouched bit for bit."""

from __future__ import annotations

import numpy as np

from pagedserve.structured.compiler import compiler_for
from pagedserve.structured.constraint import Constraint
from pagedserve.structured.token_mask import apply_masks


def test_masks_match_reference(smollm2_tokenizer):
    compiler = compiler_for(smollm2_tokenizer)
    matchers = [compiler.compile(Constraint("choice", choices=("alpha", "beta"))),
                compiler.compile(Constraint("regex", "[0-9]{2,4}"))]
    vocab = compiler.n_vocab
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, vocab)).astype(np.float32)  # [3, vocab]
    original = logits.copy()
    apply_masks(logits, [2, 0], matchers)
    assert np.array_equal(logits[1], original[1])  # unmasked row untouched
    for row, matcher in ((2, matchers[0]), (0, matchers[1])):
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), np.uint8), bitorder="little")[:vocab]
        allowed = bits.astype(bool)
        assert 0 < allowed.sum() < vocab
        assert np.array_equal(logits[row][allowed], original[row][allowed])
        assert np.all(np.isneginf(logits[row][~allowed]))
