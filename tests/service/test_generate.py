"""Generate over a real channel gives what the offline engine gives, alone and 32 at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.sampling_params import SamplingParams
from pagedserve.client import PagedServeClient

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,"]


def stream(client: PagedServeClient, request: pb.GenerateRequest) -> list[pb.GenerateResponse]:
    return list(client.generate(request, timeout=120))


def joined(responses):
    ids = [i for r in responses for i in r.token_ids]
    return ids, "".join(r.text for r in responses)


def test_greedy_stream_equals_offline_engine_token_for_token(served, offline_engine, smollm2_model):
    tokenizer = smollm2_model.tokenizer
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS]
    expected = offline_engine.generate(prompt_ids, SamplingParams(temperature=0.0, max_tokens=12, logprobs=2))
    for text, want in zip(PROMPTS, expected):
        responses = stream(served.client, served.client.build_request(text, temperature=0.0, max_tokens=12,
                                                                      logprobs=2, request_id=f"greedy-{text[:8]}"))
        ids, got_text = joined(responses)
        assert ids == want.new_token_ids
        assert got_text == want.new_text
        assert all(r.request_id == f"greedy-{text[:8]}" for r in responses)
        logprobs = [lp for r in responses for lp in r.logprobs]
        assert [lp.token.token_id for lp in logprobs] == ids
        assert [round(lp.token.logprob, 4) for lp in logprobs] == [round(s.logprob, 4) for s in want.new_logprobs]
        assert all(len(lp.top) == 2 and lp.top[0].token_id == lp.token.token_id for lp in logprobs)
        last = responses[-1]
        assert all(r.finish_reason == pb.FINISH_REASON_UNSPECIFIED for r in responses[:-1])
        assert last.finish_reason == {"length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP}[
            want.finish_reason]
        assert last.usage.prompt_tokens == len(tokenizer.encode(text))
        assert last.usage.completion_tokens == len(ids)
        t = last.timings
        assert 0 <= t.queue_seconds <= t.time_to_first_token_seconds <= t.total_seconds


def test_token_ids_and_chat_inputs_match_offline(served, offline_engine, smollm2_model):
    tokenizer = smollm2_model.tokenizer
    messages = [{"role": "user", "content": "Name a color."}]
    chat_ids = tokenizer.encode(tokenizer.apply_chat_template(messages), add_special=False)
    raw_ids = [1, 504, 3458, 282]
    expected = offline_engine.generate([chat_ids, raw_ids], SamplingParams(temperature=0.0, max_tokens=8))
    chat = stream(served.client, served.client.build_request(messages, chat=True, temperature=0.0, max_tokens=8))
    raw = stream(served.client, served.client.build_request(raw_ids, temperature=0.0, max_tokens=8))
    assert joined(chat)[0] == expected[0].new_token_ids
    assert chat[-1].usage.prompt_tokens == len(chat_ids)
    assert joined(raw)[0] == expected[1].new_token_ids
    assert raw[-1].usage.prompt_tokens == len(raw_ids)
    # The same chat again: its prompt blocks come from the prefix cache.
    again = stream(served.client, served.client.build_request(messages, chat=True, temperature=0.0, max_tokens=1))
    assert again[-1].usage.cached_prompt_tokens >= 16


def test_seeded_sampling_and_stop_string(served, offline_engine, smollm2_model):
    ids = smollm2_model.tokenizer.encode(PROMPTS[2])
    params = SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_tokens=10)
    want = offline_engine.generate([ids], params)[0]
    got = stream(served.client, served.client.build_request(PROMPTS[2], temperature=0.8, top_p=0.9, seed=7,
                                                            max_tokens=10))
    assert joined(got)[0] == want.new_token_ids
    greedy = offline_engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=10))[0].new_text
    stop = greedy.strip().split()[1]  # a word the greedy continuation is sure to contain
    got = stream(served.client, served.client.build_request(PROMPTS[2], temperature=0.0, max_tokens=10, stop=[stop]))
    assert got[-1].finish_reason == pb.FINISH_REASON_STOP
    assert got[-1].stop_string == stop
    assert joined(got)[1] == greedy[: greedy.index(stop)]


@pytest.mark.slow
def test_32_concurrent_streams_all_complete_correctly(served, offline_engine):
    prompts = [[1, 400 + 17 * i, 900 + 3 * i, 2000 + i] for i in range(32)]
    expected = offline_engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))

    def run(i):
        request = served.client.build_request(prompts[i], temperature=0.0, max_tokens=4, ignore_eos=True,
                                              request_id=f"concurrent-{i}")
        return stream(served.client, request)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(run, range(32)))
    for i, (responses, want) in enumerate(zip(results, expected)):
        assert {r.request_id for r in responses} == {f"concurrent-{i}"}
        assert joined(responses)[0] == want.new_token_ids
        assert responses[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert responses[-1].usage.completion_tokens == 4
    assert served.engine.stats().num_blocks_used_all_groups == 0
