"""OpenAI-style request bodies to a Constraint: `response_format` and vLLM's guided_* extras."""

from __future__ import annotations

import json
from typing import Any, Optional

from pagedserve.sampling_params import InvalidRequestError
from pagedserve.structured.constraint import Constraint

_GUIDED = ("guided_regex", "guided_choice", "guided_grammar")


def _response_format(rf: Any) -> Optional[Constraint]:
    if not isinstance(rf, dict):
        raise InvalidRequestError("response_format", "response_format must be an object")
    kind = rf.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return Constraint("json_object", field="response_format")
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidRequestError("response_format.json_schema",
                                      "response_format.json_schema must be an object with a 'schema'")
        schema = spec["schema"]
        if not isinstance(schema, (dict, bool)):
            raise InvalidRequestError("response_format.json_schema.schema", "the schema must be a JSON object")
        return Constraint("json_schema", json.dumps(schema), field="response_format.json_schema.schema")
    raise InvalidRequestError("response_format.type",
                              f"response_format.type must be text, json_object or json_schema, got {kind!r}")


def constraint_from_openai(body: dict) -> Optional[Constraint]:
    """The constraint an OpenAI-style body asks for, or None.

    Reads `response_format` ({"type": "json_schema", "json_schema": {"schema": ...}} or
    {"type": "json_object"}) and vLLM's `guided_regex` (str), `guided_choice` (list of str) and
    `guided_grammar` (Lark, str). At most one may be given. Raises InvalidRequestError naming the
    field for a malformed one (the grammar itself is checked when compiled)."""
    found: list[Constraint] = []
    if body.get("response_format") is not None:
        c = _response_format(body["response_format"])
        if c is not None:
            found.append(c)
    for name in _GUIDED:
        value = body.get(name)
        if value is None:
            continue
        if name == "guided_choice":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidRequestError(name, f"{name} must be a list of strings")
            found.append(Constraint("choice", choices=tuple(value), field=name))
        else:
            if not isinstance(value, str):
                raise InvalidRequestError(name, f"{name} must be a string")
            found.append(Constraint("regex" if name == "guided_regex" else "grammar", value, field=name))
    if len(found) > 1:
        raise InvalidRequestError(found[1].field_name,
                                  "give at most one of response_format (json), guided_regex, guided_choice, guided_grammar")
    return found[0] if found else None
