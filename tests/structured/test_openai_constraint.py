"""OpenAI-style bodies to constraints: response_format, vLLM's structured_outputs and guided_* extras."""

from __future__ import annotations

import json

import pytest

from pagedserve.sampling_params import InvalidRequestError
from pagedserve.structured.constraint import Constraint
from pagedserve.structured.openai_constraint import constraint_from_openai

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


def test_no_constraint():
    assert constraint_from_openai({"model": "m"}) is None
    assert constraint_from_openai({"response_format": {"type": "text"}}) is None


def test_each_kind():
    c = constraint_from_openai({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}})
    assert c.kind == "json_schema" and json.loads(c.text) == SCHEMA
    assert c.field_name == "response_format.json_schema.schema"
    assert constraint_from_openai({"response_format": {"type": "json_object"}}).kind == "json_object"
    assert constraint_from_openai({"guided_regex": "[0-9]+"}) == Constraint("regex", "[0-9]+", field="guided_regex")
    assert constraint_from_openai({"guided_choice": ["a", "b"]}).choices == ("a", "b")
    assert constraint_from_openai({"guided_grammar": 'start: "x"'}).kind == "grammar"


def test_structured_outputs_and_guided_json():
    body = {"structured_outputs": {"json": SCHEMA}}
    assert constraint_from_openai(body) == \
        Constraint("json_schema", json.dumps(SCHEMA), field="structured_outputs.json")
    text = '{"type": "string"}'
    assert constraint_from_openai({"structured_outputs": {"json": text}}).text == text  # schema text passes as is
    assert constraint_from_openai({"guided_json": SCHEMA}) == Constraint("json_schema", json.dumps(SCHEMA),
                                                                         field="guided_json")
    assert constraint_from_openai({"structured_outputs": {"regex": "[0-9]+"}}) == \
        Constraint("regex", "[0-9]+", field="structured_outputs.regex")
    assert constraint_from_openai({"structured_outputs": {"choice": ["a", "b"]}}).choices == ("a", "b")
    assert constraint_from_openai({"structured_outputs": {"grammar": 'start: "x"'}}).field_name == \
        "structured_outputs.grammar"
    assert constraint_from_openai({"structured_outputs": {"json_object": True}}).kind == "json_object"
    assert constraint_from_openai({"structured_outputs": {"json_object": False}}) is None
    assert constraint_from_openai({"structured_outputs": {"whitespace_pattern": " "}}) is None  # options only


def test_strict_is_accepted_either_way():
    for strict in (True, False, None):
        rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": strict}}
        assert json.loads(constraint_from_openai({"response_format": rf}).text) == SCHEMA


@pytest.mark.parametrize("body, field", [
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}, "response_format.json_schema.schema"),
    ({"guided_choice": "a"}, "guided_choice"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": 5}, "guided_regex"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}, "strict": 1}}},
     "response_format.json_schema.strict"),
    ({"structured_outputs": "json"}, "structured_outputs"),
    ({"structured_outputs": {"json": 5}}, "structured_outputs.json"),
    ({"structured_outputs": {"regex": ["a"]}}, "structured_outputs.regex"),
    ({"structured_outputs": {"choice": ["a", ""]}}, "structured_outputs.choice"),
    ({"structured_outputs": {"json_object": "yes"}}, "structured_outputs.json_object"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs.choice"),
    ({"response_format": {"type": "json_object"}, "guided_json": {}}, "guided_json"),
])
def test_malformed_bodies_name_the_field(body, field):
    with pytest.raises(InvalidRequestError) as err:
        constraint_from_openai(body)
    assert err.value.field == field
