"""int8 KV cache against the f32 KV cache: the same teacher-forced next-token distributions.

Both engines compute every position of a reference sequence in one prefill (`window_logits`);
the prefill's attention reads K and V back from the cache, so int8 rounding reaches every layer.
Sequences: the reference prompts + their greedy continuations (tests/data/oracle_smollm2.*) and
the first windows of tests/data/perplexity_en.txt.
"""

import json
import math

import numpy as np
import pytest

from model.perplexity import perplexity, window_logits
from tests.conftest import data_path

BLOCK_SIZE = 16


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


@pytest.fixture(scope="module")
def transformers(make_engine):
    f32 = make_engine(num_kv_blocks=48, kv_dtype="f32").runner.transformer
    int8 = make_engine(num_kv_blocks=48, kv_dtype="int8").runner.transformer
    return f32, int8


@pytest.fixture(scope="module")
def reference_sequences():
    meta = json.load(open(data_path("oracle_smollm2.json")))
    arrays = np.load(data_path("oracle_smollm2.npz"))
    return [[int(i) for i in arrays[f"{p['key']}_prompt_ids"]] + [int(i) for i in arrays[f"{p['key']}_gen_ids"]]
            for p in meta["prompts"]]


def test_int8_kv_matches_f32_kv_on_reference_sequences(transformers, reference_sequences):
    f32, int8 = transformers
    kls, agree, total = [], 0, 0
    nll_f32, nll_int8 = [], []
    for ids in reference_sequences:
        lp32 = log_softmax(window_logits(f32, ids, BLOCK_SIZE))
        lp8 = log_softmax(window_logits(int8, ids, BLOCK_SIZE))
        kls.extend((np.exp(lp32) * (lp32 - lp8)).sum(axis=1).tolist())  # KL(f32 || int8) per position
        agree += int((lp32.argmax(axis=1) == lp8.argmax(axis=1)).sum())
        total += len(ids)
        nxt = np.array(ids[1:])
        nll_f32.extend((-lp32[np.arange(len(ids) - 1), nxt]).tolist())
        nll_int8.extend((-lp8[np.arange(len(ids) - 1), nxt]).tolist())
    mean_kl = float(np.mean(kls))
    top1 = agree / total
    ppl32, ppl8 = math.exp(np.mean(nll_f32)), math.exp(np.mean(nll_int8))
    print(f"\nreference sequences ({total} positions): mean KL {mean_kl:.5f}, top-1 agreement {top1:.4f}, "
          f"ppl f32 {ppl32:.4f} int8 {ppl8:.4f} ({100 * (ppl8 / ppl32 - 1):+.3f}%)")
    assert mean_kl < 0.02
    assert top1 >= 0.98
    assert abs(ppl8 / ppl32 - 1) < 0.01


def test_int8_kv_perplexity_of_english_text_within_one_percent(transformers, smollm2_tokenizer):
    f32, int8 = transformers
    ids = smollm2_tokenizer.encode(open(data_path("perplexity_en.txt"), encoding="utf-8").read())
    ids = ids[:4 * 128]  # four windows of 128 tokens: enough text, cheap on two cores
    r32 = perplexity(f32, ids, 128, BLOCK_SIZE)
    r8 = perplexity(int8, ids, 128, BLOCK_SIZE)
    print(f"\nperplexity_en.txt ({r32.num_scored} scored tokens): ppl f32 {r32.ppl:.4f} int8 {r8.ppl:.4f} "
          f"({100 * (r8.ppl / r32.ppl - 1):+.3f}%)")
    assert r8.num_scored == r32.num_scored > 200
    assert abs(r8.ppl / r32.ppl - 1) < 0.01
