"""The `pagedserve` command-line contract, through real subprocesses (`python -m pagedserve.cli.main`).

Each call loads the default model (a few seconds), so calls are few and share what they check.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import data_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout under test


def pagedserve(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pagedserve.cli.main", "--log-level", "WARNING", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tokenize_cases(smollm2_path):  # smollm2_path: the model is fetched before the subprocesses need it
    return json.load(open(data_path("tokenize_smollm2.json")))["cases"]


@pytest.mark.parametrize("index", [12, 17])  # emoji; chat special tokens (parsed as specials)
def test_tokenize_text_prints_reference_ids(tokenize_cases, index):
    case = tokenize_cases[index]
    assert json.loads(pagedserve("tokenize", "--text", case["text"])) == case["ids"]


def test_tokenize_file_keeps_trailing_newline(tokenize_cases, tmp_path):
    case = tokenize_cases[9]
    assert case["text"].endswith("\n")
    path = tmp_path / "code.py"
    path.write_bytes(case["text"].encode("utf-8"))
    assert json.loads(pagedserve("tokenize", "--file", str(path))) == case["ids"]


def test_generate_json_two_prompts_with_logprobs(smollm2_path):
    out = pagedserve("generate", "--json", "--prompt", "The capital of France is", "--prompt", "1, 2, 3,",
                     "--max-tokens", "3", "--ignore-eos", "--logprobs", "2", "--num-kv-blocks", "16")
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"prompt_ids", "token_ids", "text", "finish_reason", "logprobs"}
        assert len(record["token_ids"]) == 3 and record["finish_reason"] == "length"
        assert len(record["logprobs"]) == 3 and all(len(top) == 2 for top in record["logprobs"])
        for token_id, top in zip(record["token_ids"], record["logprobs"]):
            assert top[0][0] == token_id and top[0][1] >= top[1][1]  # greedy: the sampled id is top-1


def test_generate_prompt_ids_exactly_and_prompt_logprobs_scoring(make_engine, smollm2_tokenizer):
    from pagedserve.worker.perplexity import window_logits

    # "Hello world" split as "Hel" "lo" " world" (the tokenizer would give [19556, 905]).
    ids = smollm2_tokenizer.encode("Hel") + smollm2_tokenizer.encode("lo") + [905]
    assert ids != smollm2_tokenizer.encode("Hello world")
    out = pagedserve("generate", "--json", "--prompt-ids", json.dumps(ids), "--prompt-logprobs", "3",
                     "--max-tokens", "0", "--num-kv-blocks", "16")
    [record] = [json.loads(line) for line in out.strip().splitlines()]
    assert record["prompt_ids"] == ids and record["token_ids"] == [] and record["text"] == ""
    entries = record["prompt_logprobs"]
    assert len(entries) == len(ids) and entries[0] is None
    logits = window_logits(make_engine(num_kv_blocks=8).runner.transformer, ids, 16).astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    lp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    for i in range(1, len(ids)):
        assert len(entries[i]) == 3
        assert entries[i][0][0] == int(lp[i - 1].argmax())
        for token_id, logprob in entries[i]:
            assert abs(logprob - lp[i - 1, token_id]) < 1e-3
    own = record["prompt_token_logprobs"]  # each prompt token's logprob, in the top 3 or not
    assert own[0] is None and len(own) == len(ids)
    for i in range(1, len(ids)):
        assert abs(own[i] - lp[i - 1, ids[i]]) < 1e-3


def test_perplexity_json(tmp_path, smollm2_path):
    path = tmp_path / "text.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 6)
    result = json.loads(pagedserve("perplexity", "--json", "--file", str(path), "--ctx", "16"))
    assert set(result) == {"ppl", "num_scored", "nll"}
    assert result["num_scored"] == len(result["nll"]) > 0
    assert math.isclose(result["ppl"], math.exp(sum(result["nll"]) / len(result["nll"])), rel_tol=1e-9)


def test_bench_json_tiny(smollm2_path):
    result = json.loads(pagedserve("bench", "--json", "--prefill-tokens", "32", "--decode-tokens", "4",
                                   "--batch-sizes", "1,2", "--repeats", "1", "--num-kv-blocks", "32",
                                   "--bandwidth-probe-mib", "0"))
    assert result["prefill_tok_s"] > 0
    assert set(result["decode_tok_s"]) == {"1", "2"} and all(v > 0 for v in result["decode_tok_s"].values())
