"""Perplexity of ordinary English with --ctx 512 against llama.cpp's llama-perplexity.

tests/data/llamacpp_perplexity.json records llama.cpp's figure for tests/data/perplexity_en.txt
(command and version inside). llama.cpp rounds activations to 8 bits; we keep float32, so the two
differ slightly but must agree within 1%.
"""

import json

import pytest

from pagedserve.worker.perplexity import perplexity
from tests.conftest import data_path

pytestmark = pytest.mark.slow


def test_perplexity_within_one_percent_of_llamacpp(make_engine, smollm2_tokenizer):
    reference = json.load(open(data_path("llamacpp_perplexity.json")))
    text = open(data_path("perplexity_en.txt"), encoding="utf-8").read()
    ids = smollm2_tokenizer.encode(text)
    assert len(ids) == reference["num_tokens"]
    engine = make_engine(num_kv_blocks=40)
    result = perplexity(engine.runner.transformer, ids, ctx=512, block_size=16)
    assert result.num_scored == reference["num_chunks"] * 255
    assert abs(result.ppl - reference["ppl"]) / reference["ppl"] < 0.01, (result.ppl, reference["ppl"])
