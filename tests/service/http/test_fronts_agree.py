"""Same tokens on both fronts: greedy output over HTTP equals gRPC's and the offline engine's, for
the fidelity prompts of tests/data (llama.cpp's greedy continuations)."""

from __future__ import annotations

import json

from pagedserve.sampling_params import SamplingParams
from tests.conftest import data_path

NUM_TOKENS = 16


def fidelity_cases(count: int = 4) -> list[dict]:
    with open(data_path("greedy_llamacpp_smollm2.json"), encoding="utf-8") as f:
        return json.load(f)["cases"][:count]


def test_greedy_http_equals_grpc_equals_offline(served, client, model_name, offline_engine, smollm2_model):
    tokenizer = smollm2_model.tokenizer
    token_text = lambda i: tokenizer.token_bytes(i).decode("utf-8", errors="replace")  # noqa: E731
    cases = fidelity_cases()
    expected = offline_engine.generate([c["prompt_ids"] for c in cases],
                                       SamplingParams(temperature=0.0, max_tokens=NUM_TOKENS))
    for case, want in zip(cases, expected):
        grpc_responses = list(served.client.generate(served.client.build_request(
            case["prompt_ids"], temperature=0.0, max_tokens=NUM_TOKENS), timeout=600))
        grpc_ids = [i for r in grpc_responses for i in r.token_ids]
        http = client.completions.create(model=model_name, prompt=case["prompt_ids"], max_tokens=NUM_TOKENS,
                                         temperature=0, logprobs=0)
        http_tokens = http.choices[0].logprobs.tokens
        # the prompt as text tokenizes to the same ids, so both prompt forms agree too
        by_text = client.completions.create(model=model_name, prompt=case["prompt"], max_tokens=NUM_TOKENS,
                                            temperature=0)
        assert grpc_ids == want.new_token_ids, case["prompt"]
        assert http_tokens == [token_text(i) for i in want.new_token_ids], case["prompt"]
        assert http.choices[0].text == want.new_text == "".join(r.text for r in grpc_responses), case["prompt"]
        assert http.usage.completion_tokens == len(want.new_token_ids)
        assert by_text.choices[0].text == want.new_text, case["prompt"]
