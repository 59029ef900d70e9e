"""/v1/chat/completions through the official openai client: the GGUF's chat template, OpenAI's
chat logprobs and chunk stream."""

from __future__ import annotations

import pytest

from pagedserve.sampling_params import SamplingParams

MESSAGES = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a color."}]


@pytest.fixture(scope="module")
def expected(offline_engine, smollm2_model):
    tokenizer = smollm2_model.tokenizer
    ids = tokenizer.encode(tokenizer.apply_chat_template(MESSAGES), add_special=False)
    return ids, offline_engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=10, logprobs=3))[0]


def test_chat_completion_matches_offline_with_logprobs(client, model_name, expected, smollm2_model):
    prompt_ids, want = expected
    result = client.chat.completions.create(model=model_name, messages=MESSAGES, max_completion_tokens=10,
                                            temperature=0, logprobs=True, top_logprobs=3)
    assert result.object == "chat.completion"
    (choice,) = result.choices
    assert choice.message.role == "assistant" and choice.message.content == want.new_text
    entries = choice.logprobs.content
    tokenizer = smollm2_model.tokenizer
    assert [e.token for e in entries] == [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in want.new_token_ids]
    assert [round(e.logprob, 4) for e in entries] == [round(s.logprob, 4) for s in want.new_logprobs]
    assert all(len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token for e in entries)
    assert all(bytes(e.bytes) == tokenizer.token_bytes(i) for e, i in zip(entries, want.new_token_ids))
    assert result.usage.prompt_tokens == len(prompt_ids)
    assert result.usage.completion_tokens == len(want.new_token_ids)


def test_chat_stream_is_chunks_with_role_first_and_usage_last(client, model_name, expected):
    _, want = expected
    chunks = list(client.chat.completions.create(model=model_name, messages=MESSAGES, max_tokens=10,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(want.new_token_ids)
    body = chunks[:-1]
    assert "".join(c.choices[0].delta.content or "" for c in body) == want.new_text
    assert body[-1].choices[0].finish_reason == {"length": "length", "stop": "stop"}[want.finish_reason]


def test_chat_content_parts_and_n(client, model_name, expected):
    _, want = expected
    parts = [dict(MESSAGES[0]), {"role": "user", "content": [{"type": "text", "text": "Name a "},
                                                           {"type": "text", "text": "color."}]}]
    result = client.chat.completions.create(model=model_name, messages=parts, max_tokens=10, temperature=0, n=2)
    assert [c.message.content for c in result.choices] == [want.new_text] * 2
