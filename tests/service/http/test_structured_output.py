"""Structured output over the OpenAI HTTP front, through the official `openai` client:
`response_format` (json_schema, json_object, text), vLLM's `structured_outputs` and `guided_*`
extras on both endpoints, streamed and with n > 1; invalid constraints are 400s naming the field."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.service.conftest import test_options
from tests.service.http.conftest import openai_client
from tests.structured.schemas import load_schema

SCHEMAS = ("person", "nested_address", "anyof_shape", "todo_list", "product", "pair_tuple")
MAX_TOKENS = 200


@pytest.fixture(scope="module")
def server(start_server):
    """A server allowing max_tokens up to 256 (the shared one stops at 64, short for some JSON)."""
    return start_server(test_options(max_tokens_limit=256))


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai_client(server)


@pytest.fixture(scope="module")
def model(sdk) -> str:
    return sdk.models.list().data[0].id


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def json_schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.mark.parametrize("name", SCHEMAS)
def test_chat_response_format_json_schema_validates(sdk, model, name):
    schema = load_schema(name)
    result = sdk.chat.completions.create(model=model, messages=ask(f"A {name.replace('_', ' ')} as JSON."),
                                         response_format=json_schema_format(name, schema),
                                         temperature=1.0, seed=21, max_completion_tokens=MAX_TOKENS)
    (choice,) = result.choices
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_n3_constrained_choices_each_validate(sdk, model):
    """Forked choices keep a matcher each: every one is a complete, valid document."""
    schema = load_schema("todo_list")
    result = sdk.chat.completions.create(model=model, messages=ask("Two todo items as JSON."), n=3,
                                         response_format=json_schema_format("todo", schema),
                                         temperature=1.0, seed=5, max_completion_tokens=MAX_TOKENS)
    assert [c.index for c in result.choices] == [0, 1, 2]
    for choice in result.choices:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_streamed_json_schema_validates(sdk, model):
    schema = load_schema("score_card")
    chunks = list(sdk.chat.completions.create(model=model, messages=ask("A score card as JSON."), stream=True,
                                              response_format=json_schema_format("card", schema),
                                              temperature=1.0, seed=8, max_completion_tokens=MAX_TOKENS, n=2))
    texts, reasons = {0: "", 1: ""}, {}
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason is not None:
                reasons[c.index] = c.finish_reason
    assert reasons == {0: "stop", 1: "stop"}
    for text in texts.values():
        jsonschema.validate(json.loads(text), schema)


def test_json_object_and_text(sdk, model):
    result = sdk.chat.completions.create(model=model, messages=ask("Describe a cat as JSON."),
                                         response_format={"type": "json_object"}, temperature=1.0, seed=3,
                                         max_completion_tokens=MAX_TOKENS)
    if result.choices[0].finish_reason == "stop":  # an object may legitimately outgrow max_tokens
        assert isinstance(json.loads(result.choices[0].message.content), dict)
    else:
        assert result.choices[0].message.content.startswith("{")
    plain = sdk.chat.completions.create(model=model, messages=ask("Name a colour."), temperature=0,
                                        max_completion_tokens=8)
    text = sdk.chat.completions.create(model=model, messages=ask("Name a colour."), temperature=0,
                                       max_completion_tokens=8, response_format={"type": "text"})
    assert text.choices[0].message.content == plain.choices[0].message.content


def test_completions_structured_outputs_and_guided_fields(sdk, model):
    schema = load_schema("sentiment")
    regex = r"[A-Z]{3}-[0-9]{3}"
    choices = ["positive", "negative", "mixed feelings"]
    cases = [({"structured_outputs": {"json": schema}}, "json"), ({"guided_json": json.dumps(schema)}, "json"),
             ({"structured_outputs": {"regex": regex}}, "regex"), ({"guided_regex": regex}, "regex"),
             ({"structured_outputs": {"choice": choices}}, "choice"), ({"guided_choice": choices}, "choice")]
    for extra, kind in cases:
        result = sdk.completions.create(model=model, prompt="Review: the soup was cold. Verdict:", temperature=1.0,
                                        seed=4, max_tokens=MAX_TOKENS, extra_body=extra)
        (choice,) = result.choices
        assert choice.finish_reason == "stop", (extra, choice.text)
        if kind == "json":
            jsonschema.validate(json.loads(choice.text), schema)
        elif kind == "regex":
            assert re.fullmatch(regex, choice.text), choice.text
        else:
            assert choice.text in choices


def test_chat_guided_grammar(sdk, model):
    grammar = 'start: "The answer is " NUMBER "."\nNUMBER: /[0-9]{1,3}/\n'
    result = sdk.chat.completions.create(model=model, messages=ask("What is 6 times 7?"), temperature=1.0, seed=2,
                                         max_completion_tokens=32, extra_body={"guided_grammar": grammar})
    assert re.fullmatch(r"The answer is [0-9]{1,3}\.", result.choices[0].message.content)


class Pet(BaseModel):
    name: str = Field(max_length=10)
    legs: int = Field(ge=0, le=4)


def test_sdk_parse_with_a_pydantic_model(sdk, model):
    """The SDK's own structured-output helper: it sends a strict json_schema and parses the reply."""
    result = sdk.chat.completions.parse(model=model, messages=ask("A pet as JSON."), response_format=Pet,
                                        temperature=1.0, seed=9, max_completion_tokens=MAX_TOKENS)
    pet = result.choices[0].message.parsed
    assert isinstance(pet, Pet) and len(pet.name) <= 10 and 0 <= pet.legs <= 4


@pytest.mark.parametrize("extra, param, message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}},
     "response_format.json_schema.schema", "Invalid type: foo"),
    ({"structured_outputs": {"regex": "a(b"}}, "structured_outputs.regex", "structured_outputs.regex: "),
    ({"guided_regex": "a(b"}, "guided_regex", "guided_regex: "),
    ({"guided_grammar": "start: x"}, "guided_grammar", "guided_grammar: "),
    ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json", "structured_outputs.json: "),
    ({"guided_choice": []}, "guided_choice", "at least one choice"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "xml"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "strict": "yes"}}},
     "response_format.json_schema.strict", "boolean"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "one constraint"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_invalid_constraints_are_400_naming_the_field(sdk, model, extra, param, message, stream):
    with pytest.raises(openai.BadRequestError) as info:  # raised by create: the status line is the 400
        sdk.chat.completions.create(model=model, messages=ask("Hi"), max_completion_tokens=4, stream=stream,
                                    extra_body=extra)
    error = info.value
    assert error.status_code == 400
    assert error.param == param, error.body
    assert message in error.body["message"], error.body
    assert sdk.models.list().data  # the server still serves


def test_invalid_schema_on_completions_is_400(sdk, model):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model=model, prompt="Hi", max_tokens=4,
                               extra_body={"structured_outputs": {"json": {"type": "object", "minProperties": "x"}}})
    assert info.value.param == "structured_outputs.json" and "structured_outputs.json: " in info.value.body["message"]
