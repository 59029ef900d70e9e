"""Constrained generation on Gemma 3 270M: a 262k SentencePiece vocabulary with byte-fallback
tokens and end-of-turn as a stop token, unlike SmolLM2's byte-level BPE. Sampled outputs satisfy
their JSON schema, regex or choice."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from pagedserve.sampling_params import SamplingParams
from pagedserve.structured.constraint import Constraint
from tests.structured.schemas import assert_sampled_json_validates, load_schema

SCHEMAS = ("person", "nested_address", "anyof_shape", "todo_list", "product", "coords_list", "pair_tuple",
           "nullable_string", "user_roles", "email_like")
SEEDS = (3, 4)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(gemma3_model):
    from pagedserve.engine.engine_factory import EngineArgs, build_engine

    args = EngineArgs(num_kv_blocks=256, kv_cache_memory=None)
    return build_engine(args, model=gemma3_model, warm_up=False)[0]


@pytest.fixture(scope="module")
def tokenizer(gemma3_model):
    return gemma3_model.tokenizer


def prompt_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text + "\n")  # the fixture GGUF has no chat template: plain text


def test_sampled_json_validates_on_gemma3(engine, tokenizer):
    assert_sampled_json_validates(engine, tokenizer, SCHEMAS, SEEDS, prompt_ids)


def test_regex_and_choice_on_gemma3(engine, tokenizer):
    prompt = prompt_ids(tokenizer, "Give a date and pick a colour.")
    regex = r"20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"
    choices = ("red", "green", "blue violet")
    params = [SamplingParams(temperature=1.0, seed=s, max_tokens=30, constraint=c)
              for s in SEEDS for c in (Constraint("regex", regex), Constraint("choice", choices=choices))]
    for p, out in zip(params, engine.generate([prompt] * len(params), params)):
        text = tokenizer.decode(out.new_token_ids, skip_special=True)
        assert out.finish_reason == "stop", text
        if p.constraint.kind == "regex":
            assert re.fullmatch(regex, text), text
        else:
            assert text in choices


def test_forked_constrained_choices_on_gemma3(engine, tokenizer):
    schema = load_schema("sentiment")
    params = SamplingParams(temperature=1.0, seed=7, max_tokens=100, n=3,
                            constraint=Constraint("json_schema", json.dumps(schema)))
    for out in engine.generate([prompt_ids(tokenizer, "Rate: the soup was cold.")], params):
        text = tokenizer.decode(out.new_token_ids, skip_special=True)
        assert out.finish_reason == "stop", text
        jsonschema.validate(json.loads(text), schema)
