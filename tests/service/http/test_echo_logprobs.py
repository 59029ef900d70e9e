"""/v1/completions with `echo` and `logprobs`: the prompt's own logprobs (OpenAI's legacy format),
through the official openai client.

Reference: the float32 logits of tests/data/oracle_smollm2.* (computed outside this project), held
to the tolerance the fidelity tests use (mean |logprob difference| <= 5e-3); and the offline
engine's prompt logprobs for the exact same computation.
"""

from __future__ import annotations

import json

import numpy as np
import openai
import pytest

from pagedserve.sampling_params import SamplingParams
from pagedserve.service.http.responses import token_string
from tests.conftest import data_path


@pytest.fixture(scope="module")
def oracle():
    prompts = json.load(open(data_path("oracle_smollm2.json")))["prompts"]
    arrays = np.load(data_path("oracle_smollm2.npz"))
    cases = []
    for p in prompts[:3]:
        key = p["key"]
        ids = [int(i) for i in arrays[f"{key}_prompt_ids"]] + [int(i) for i in arrays[f"{key}_gen_ids"]]
        # row t: float32 logprobs of token t + 1, for the reference's 64 best tokens
        ref_lp = arrays[f"{key}_topk_val"] - arrays[f"{key}_lse"][:, None]
        cases.append((ids, arrays[f"{key}_topk_idx"], ref_lp))
    return cases


def test_scored_prompt_matches_float32_reference(client, model_name, oracle, smollm2_model):
    """max_tokens 0 + echo + logprobs scores a prompt: every token's logprob given the ones before."""
    tokenizer = smollm2_model.tokenizer
    diffs = []
    for ids, top_idx, ref_lp in oracle:
        result = client.completions.create(model=model_name, prompt=ids, max_tokens=0, echo=True, logprobs=5)
        (choice,) = result.choices
        assert choice.text == tokenizer.decode(ids) and choice.finish_reason == "length"
        assert result.usage.completion_tokens == 0 and result.usage.prompt_tokens == len(ids)
        lp = choice.logprobs
        assert lp.tokens == [token_string(tokenizer, i) for i in ids]
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts token 0
        assert lp.text_offset[0] == 0
        assert lp.text_offset[1:] == [int(x) for x in np.cumsum([len(t) for t in lp.tokens])[:-1]]
        for i in range(1, len(ids)):
            top = lp.top_logprobs[i]
            assert lp.tokens[i] in top and top[lp.tokens[i]] == lp.token_logprobs[i]
            assert len(top) <= 6  # the 5 best and the token itself
            best = token_string(tokenizer, int(top_idx[i - 1, 0]))
            assert abs(top[best] - ref_lp[i - 1, 0]) < 0.05  # the reference's best is among ours
            where = np.flatnonzero(top_idx[i - 1] == ids[i])
            if where.size:  # the prompt token is among the reference's 64 best
                diffs.append(abs(lp.token_logprobs[i] - ref_lp[i - 1, where[0]]))
    assert len(diffs) >= 0.9 * sum(len(ids) - 1 for ids, _, _ in oracle)
    assert float(np.mean(diffs)) <= 5e-3


def test_echo_logprobs_equal_the_engines_prompt_logprobs(client, model_name, offline_engine, smollm2_model):
    """Text prompt, echo, logprobs and a completion: the prompt part is the engine's prompt logprobs,
    the completion part what the same request without echo returns."""
    tokenizer = smollm2_model.tokenizer
    prompt = "The quick brown fox jumps over the lazy dog because"
    ids = tokenizer.encode(prompt)
    scored = offline_engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=0, prompt_logprobs=2))[0]
    plain = client.completions.create(model=model_name, prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
    result = client.completions.create(model=model_name, prompt=prompt, max_tokens=6, temperature=0, logprobs=2,
                                       echo=True)
    (choice,) = result.choices
    assert choice.text == prompt + plain.choices[0].text
    lp, P = choice.logprobs, len(ids)
    assert len(lp.tokens) == P + len(plain.choices[0].logprobs.tokens)
    for i in range(1, P):
        entry = scored.prompt_logprobs[i]
        assert abs(lp.token_logprobs[i] - entry.logprob) < 1e-4
        want_top = {token_string(tokenizer, t): v for t, v in entry.top_logprobs}
        assert set(want_top) <= set(lp.top_logprobs[i])
    assert lp.tokens[P:] == plain.choices[0].logprobs.tokens
    np.testing.assert_allclose(lp.token_logprobs[P:], plain.choices[0].logprobs.token_logprobs, atol=1e-4)
    # offsets run on from the prompt's tokens into the completion's
    assert lp.text_offset[P] == lp.text_offset[P - 1] + len(lp.tokens[P - 1])


def test_echo_logprobs_never_take_prompt_positions_from_the_prefix_cache(client, model_name):
    """Cached positions have no logits: a request that wants the prompt's logprobs computes all of
    it (as vLLM does), even right after the same prompt filled the cache."""
    prompt = "Prefix caching keeps the KV blocks of prompts it has seen. " * 6  # several full blocks
    warm = client.completions.create(model=model_name, prompt=prompt, max_tokens=1, temperature=0)
    again = client.completions.create(model=model_name, prompt=prompt, max_tokens=1, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # the cache is warm for this prompt
    first = client.completions.create(model=model_name, prompt=prompt, max_tokens=1, temperature=0, echo=True,
                                      logprobs=1)
    second = client.completions.create(model=model_name, prompt=prompt, max_tokens=1, temperature=0, echo=True,
                                       logprobs=1)
    for result in (first, second):
        assert result.usage.prompt_tokens_details.cached_tokens == 0
        assert result.usage.prompt_tokens == warm.usage.prompt_tokens
        assert all(x is not None for x in result.choices[0].logprobs.token_logprobs[1:])
    assert second.choices[0].logprobs.token_logprobs == first.choices[0].logprobs.token_logprobs


def test_streamed_echo_logprobs_equal_the_whole_response(client, model_name):
    args = dict(model=model_name, prompt="Hello there, how are", max_tokens=5, temperature=0, logprobs=1, echo=True,
                n=2, extra_body={"ignore_eos": True})
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(stream=True, **args))
    for index in range(2):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert "".join(c.text for c in mine) == whole.choices[index].text
        tokens = [t for c in mine for t in c.logprobs.tokens]
        token_logprobs = [x for c in mine for x in c.logprobs.token_logprobs]
        offsets = [x for c in mine for x in c.logprobs.text_offset]
        want = whole.choices[index].logprobs
        assert tokens == want.tokens and offsets == want.text_offset
        assert token_logprobs[0] is None and want.token_logprobs[0] is None
        np.testing.assert_allclose(token_logprobs[1:], want.token_logprobs[1:], atol=1e-4)
    # both choices echo the same prompt logprobs (computed once, for choice 0)
    prompt_len = whole.usage.prompt_tokens
    assert whole.choices[0].logprobs.token_logprobs[:prompt_len] == whole.choices[1].logprobs.token_logprobs[:prompt_len]


def test_echo_without_logprobs_and_score_only_refusals(client, model_name, smollm2_model):
    prompt = "Echo me"
    result = client.completions.create(model=model_name, prompt=prompt, max_tokens=0, echo=True)
    assert result.choices[0].text == prompt and result.choices[0].logprobs is None
    assert result.usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError) as info:  # scoring gives one choice
        client.completions.create(model=model_name, prompt=prompt, max_tokens=0, echo=True, n=2)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as info:  # max_tokens 0 without echo returns nothing
        client.completions.create(model=model_name, prompt=prompt, max_tokens=0)
    assert info.value.body["param"] == "max_tokens"
