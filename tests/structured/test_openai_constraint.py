"""OpenAI-style bodies to constraints: response_format and vLLM's guided_* extras."""

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


@pytest.mark.parametrize("body, field", [
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}, "response_format.json_schema.schema"),
    ({"guided_choice": "a"}, "guided_choice"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": 5}, "guided_regex"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
])
def test_malformed_bodies_name_the_field(body, field):
    with pytest.raises(InvalidRequestError) as err:
        constraint_from_openai(body)
    assert err.value.field == field
