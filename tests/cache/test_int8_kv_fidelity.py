"""int8 and f16 KV caches against the f32 KV cache: the same teacher-forced next-token distributions.

Each engine computes every position of a reference sequence in one prefill (`window_logits`);
the prefill's attention reads K and V back from the cache, so the int8 / half rounding reaches
every layer.  Sequences: the reference prompts + their greedy continuations
(tests/data/oracle_smollm2.*) and the first windows of tests/data/perplexity_en.txt.
"""

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from pagedserve.worker.perplexity import perplexity, window_logits
from pagedserve.sampling_params import SamplingParams
from tests.conftest import data_path

BLOCK_SIZE = 16
LOW_PRECISION = ("int8", "f16")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


@dataclass(frozen=True)
class Agreement:
    """One KV dtype against f32 KV over the reference sequences."""

    mean_kl: float  # mean over positions of KL(f32 || dtype)
    top1: float  # fraction of positions with the same argmax
    ppl_ratio: float  # perplexity of the sequences' own next tokens, dtype / f32


@pytest.fixture(scope="module")
def transformers(make_engine):
    return {d: make_engine(num_kv_blocks=48, kv_dtype=d).runner.transformer for d in ("f32",) + LOW_PRECISION}


@pytest.fixture(scope="module")
def reference_sequences():
    meta = json.load(open(data_path("oracle_smollm2.json")))
    arrays = np.load(data_path("oracle_smollm2.npz"))
    return [[int(i) for i in arrays[f"{p['key']}_prompt_ids"]] + [int(i) for i in arrays[f"{p['key']}_gen_ids"]]
            for p in meta["prompts"]]


@pytest.fixture(scope="module")
def agreement(transformers, reference_sequences) -> dict[str, Agreement]:
    lp32 = [log_softmax(window_logits(transformers["f32"], ids, BLOCK_SIZE)) for ids in reference_sequences]
    result = {}
    for dtype in LOW_PRECISION:
        kls, agree, total, nll32, nll = [], 0, 0, [], []
        for ids, a in zip(reference_sequences, lp32):
            b = log_softmax(window_logits(transformers[dtype], ids, BLOCK_SIZE))
            kls.extend((np.exp(a) * (a - b)).sum(axis=1).tolist())  # KL(f32 || dtype) per position
            agree += int((a.argmax(axis=1) == b.argmax(axis=1)).sum())
            total += len(ids)
            nxt = np.array(ids[1:])
            nll32.extend((-a[np.arange(len(ids) - 1), nxt]).tolist())
            nll.extend((-b[np.arange(len(ids) - 1), nxt]).tolist())
        result[dtype] = Agreement(float(np.mean(kls)), agree / total, math.exp(np.mean(nll) - np.mean(nll32)))
        print(f"\n{dtype} vs f32 KV on the reference sequences ({total} positions): "
              f"mean KL {result[dtype].mean_kl:.2e}, top-1 agreement {result[dtype].top1:.4f}, "
              f"ppl {100 * (result[dtype].ppl_ratio - 1):+.3f}%")
    return result


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_kv_dtype_matches_f32_kv_on_reference_sequences(agreement, dtype):
    a = agreement[dtype]
    assert a.mean_kl < 0.02
    assert a.top1 >= 0.98
    assert abs(a.ppl_ratio - 1) < 0.01


def test_f16_kv_is_at_least_as_close_to_f32_as_int8(agreement):
    f16, int8 = agreement["f16"], agreement["int8"]
    assert f16.mean_kl <= int8.mean_kl and f16.top1 >= int8.top1
    # Half keeps 11 significant bits (int8 about 7): measured mean KL 4e-7, top-1 0.999.
    assert f16.mean_kl < 1e-5 and f16.top1 >= 0.995


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_kv_dtype_perplexity_of_english_text_within_one_percent(transformers, smollm2_tokenizer, dtype):
    ids = smollm2_tokenizer.encode(open(data_path("perplexity_en.txt"), encoding="utf-8").read())
    ids = ids[:4 * 128]  # four windows of 128 tokens: enough text, cheap on two cores
    r32 = perplexity(transformers["f32"], ids, 128, BLOCK_SIZE)
    r = perplexity(transformers[dtype], ids, 128, BLOCK_SIZE)
    print(f"\nperplexity_en.txt ({r32.num_scored} scored tokens): ppl f32 {r32.ppl:.4f} {dtype} {r.ppl:.4f} "
          f"({100 * (r.ppl / r32.ppl - 1):+.3f}%)")
    assert r.num_scored == r32.num_scored > 200
    assert abs(r.ppl / r32.ppl - 1) < 0.01


def test_f16_kv_greedy_continuations_equal_f32_kv(make_engine, smollm2_tokenizer):
    # Own engines: the transformers above write their KV blocks behind the block pool's back.
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
               "1, 2, 3, 4,", "The theory of relativity states that"]
    ids = [smollm2_tokenizer.encode(p) for p in prompts]
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    f16 = make_engine(num_kv_blocks=32, kv_dtype="f16")
    assert f16.runner.transformer.fused  # the compiled all-layers path, as for f32
    got = [o.new_token_ids for o in f16.generate(ids, params)]
    want = [o.new_token_ids for o in make_engine(num_kv_blocks=32, kv_dtype="f32").generate(ids, params)]
    assert got == want
