"""Gemma 3's tokenizer (SentencePiece BPE, BOS added, no space prefix) against reference ids.

tests/data/tokenize_gemma3_subset.json carries the reference prompts with their ids and the part
of Gemma 3's vocabulary those prompts can touch (see its "note"), so the test runs without the
250 MB model file. When the file is present the subset is checked against it as well.
"""

from __future__ import annotations

import json
import os

import pytest

from pagedserve.model.tokenizer import load_tokenizer

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "tokenize_gemma3_subset.json")
UNUSED = 5

with open(DATA, encoding="utf-8") as f:
    SUBSET = json.load(f)
CASES = SUBSET["cases"]


def subset_metadata(subset: dict) -> dict:
    """GGUF-like metadata from the subset; ids outside it get texts no input can contain."""
    n = subset["vocab_size"]
    tokens = [f"\x00unused{i}" for i in range(n)]
    types = [UNUSED] * n
    scores = [-1e9] * n
    for tid, text, score, ttype in subset["entries"]:
        tokens[tid], scores[tid], types[tid] = text, score, ttype
    md = dict(subset["metadata"])
    md.update({
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
    })
    return md


@pytest.fixture(scope="module")
def gemma_tok():
    return load_tokenizer(subset_metadata(SUBSET))


def test_metadata(gemma_tok):
    assert gemma_tok.add_bos and gemma_tok.bos_id == 2 and gemma_tok.eos_id == 1
    assert not gemma_tok.add_space_prefix
    # <end_of_turn> ends generation although the file names no eot token
    assert gemma_tok.stop_ids == frozenset({1, 106})


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_prompt_ids(gemma_tok, case):
    assert gemma_tok.encode(case["text"]) == case["ids"]


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_decode(gemma_tok, case):
    # decode keeps BOS and the turn markers as text; skipping them gives back the prompt
    assert gemma_tok.decode(case["ids"]) == "<bos>" + case["text"]
    if "<start_of_turn>" not in case["text"]:
        assert gemma_tok.decode(case["ids"], skip_special=True) == case["text"]


def test_newlines_and_space_runs_are_user_defined_tokens(gemma_tok):
    ids = gemma_tok.encode("def f():\n    return 1", add_special=False)
    texts = [gemma_tok.token_text(i) for i in ids]
    assert "\n" in texts and "    " in texts


@pytest.fixture(scope="module")
def gemma_full_metadata():
    from pagedserve.model.gguf_file import read_metadata
    from pagedserve.model.model_fetch import fetch_model

    return read_metadata(fetch_model("gemma3-270m"))  # fetched when missing: never a silent skip


def test_subset_matches_full_model(gemma_full_metadata):
    md = gemma_full_metadata
    assert len(md["tokenizer.ggml.tokens"]) == SUBSET["vocab_size"]
    for tid, text, score, ttype in SUBSET["entries"]:
        assert md["tokenizer.ggml.tokens"][tid] == text
        assert md["tokenizer.ggml.token_type"][tid] == ttype
        assert md["tokenizer.ggml.scores"][tid] == pytest.approx(score)
    tok = load_tokenizer(md)
    for case in CASES:
        assert tok.encode(case["text"]) == case["ids"]
