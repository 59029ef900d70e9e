"""/v1/completions through the official openai client: the same tokens as the offline engine."""

from __future__ import annotations

import pytest

from pagedserve.sampling_params import SamplingParams

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def expected(offline_engine, smollm2_model):
    """Greedy reference of PROMPT: 12 tokens with 2 alternatives each."""
    ids = smollm2_model.tokenizer.encode(PROMPT)
    return offline_engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=12, logprobs=2))[0]


def test_greedy_completion_with_logprobs_and_usage(client, model_name, expected, smollm2_model):
    tokenizer = smollm2_model.tokenizer
    result = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=2)
    assert result.object == "text_completion" and result.model == model_name
    (choice,) = result.choices
    assert choice.text == expected.new_text
    assert choice.finish_reason == {"length": "length", "stop": "stop"}[expected.finish_reason]
    lp = choice.logprobs
    assert lp.tokens == [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in expected.new_token_ids]
    assert [round(x, 4) for x in lp.token_logprobs] == [round(s.logprob, 4) for s in expected.new_logprobs]
    assert all(len(top) <= 2 and lp.tokens[k] in top for k, top in enumerate(lp.top_logprobs))
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    assert result.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert result.usage.completion_tokens == len(expected.new_token_ids)
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.usage.prompt_tokens_details.cached_tokens >= 0


def test_streaming_completion_with_usage_in_last_chunk(client, model_name, expected):
    chunks = list(client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == len(expected.new_token_ids)
    text_chunks = chunks[:-1]
    assert len(text_chunks) >= 2 and all(c.usage is None for c in text_chunks)
    assert "".join(c.choices[0].text for c in text_chunks) == expected.new_text
    assert [c.choices[0].finish_reason for c in text_chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_token_id_prompt_and_echo(client, model_name, smollm2_model, offline_engine):
    tokenizer = smollm2_model.tokenizer
    ids = tokenizer.encode(PROMPT)
    want = offline_engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=5))[0]
    result = client.completions.create(model=model_name, prompt=ids, max_tokens=5, temperature=0, echo=True)
    assert result.choices[0].text == tokenizer.decode(ids) + want.new_text
    streamed = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=5, temperature=0,
                                         echo=True, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == PROMPT + want.new_text


def test_n_choices_with_seed_are_reproducible_per_choice(client, model_name):
    def sample(n, seed):
        result = client.completions.create(model=model_name, prompt="Once upon a time", max_tokens=10,
                                           temperature=1.0, seed=seed, n=n, extra_body={"ignore_eos": True})
        assert [c.index for c in result.choices] == list(range(n))
        assert result.usage.completion_tokens == 10 * n
        return [c.text for c in result.choices]

    three = sample(3, seed=1234)
    assert three == sample(3, seed=1234)
    assert len(set(three)) > 1  # different seeds per choice: 10 sampled tokens never all agree thrice
    # choice i samples with seed + i: choice 1 of seed 1234 is choice 0 of seed 1235
    assert sample(1, seed=1235) == [three[1]]


def test_streaming_n_choices_each_finish(client, model_name):
    chunks = list(client.completions.create(model=model_name, prompt="Hello", max_tokens=6, temperature=0,
                                            n=3, stream=True, extra_body={"ignore_eos": True}))
    texts = {i: "".join(c.choices[0].text for c in chunks if c.choices[0].index == i) for i in range(3)}
    finished = [c.choices[0].index for c in chunks if c.choices[0].finish_reason == "length"]
    assert sorted(finished) == [0, 1, 2]
    assert texts[0] == texts[1] == texts[2] and texts[0]  # greedy: all choices agree


def test_stop_string_ends_with_stop(client, model_name, expected):
    # stop at a piece of the greedy continuation: the text ends right before it
    cut = expected.new_text.strip().split(" ")[1]
    result = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12, temperature=0, stop=[cut])
    choice = result.choices[0]
    assert choice.finish_reason == "stop"
    assert cut not in choice.text and expected.new_text.startswith(choice.text)


def test_n_choices_prefill_the_prompt_once(served, client, model_name):
    def computed_prompt_tokens() -> float:
        return sum(served.scrape().get("pagedserve_prefill_computed_tokens_total", {}).values())

    before = computed_prompt_tokens()
    # a prompt no earlier test sent (no prefix-cache hit), 37 tokens: not a whole number of blocks
    prompt = list(range(1000, 1037))
    result = client.completions.create(model=model_name, prompt=prompt, max_tokens=4, temperature=1.0, seed=7,
                                       n=4, extra_body={"ignore_eos": True})
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert result.usage.prompt_tokens == 37 and result.usage.completion_tokens == 16
    assert computed_prompt_tokens() - before == 37  # once, not 4 x 37
