"""OpenAI-style request bodies to a Constraint: `response_format`, vLLM's `structured_outputs`
dict, and the older vLLM `guided_*` fields (removed from vLLM in 0.12, still sent by clients)."""

from __future__ import annotations

import json
from typing import Any, Optional

from pagedserve.sampling_params import InvalidRequestError
from pagedserve.structured.constraint import Constraint

# The body fields a constraint can come from (front ends pass these through to `constraint_from_openai`).
CONSTRAINT_FIELDS = ("response_format", "structured_outputs", "guided_json", "guided_regex", "guided_choice",
                     "guided_grammar")
# vLLM's StructuredOutputsParams keys -> our constraint kind; its options (whitespace, structural tags) are not read.
_STRUCTURED_OUTPUTS_KINDS = {"json": "json_schema", "regex": "regex", "choice": "choice", "grammar": "grammar",
                             "json_object": "json_object"}


def _bad(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(field, f"{field}: {message}")


def _json_schema(value: Any, field: str) -> Constraint:
    """A schema given as a JSON object (or boolean schema) or as its text."""
    if isinstance(value, str):
        return Constraint("json_schema", value, field=field)  # the compiler reports text that is not JSON
    if isinstance(value, (dict, bool)):
        return Constraint("json_schema", json.dumps(value), field=field)
    raise _bad(field, "the schema must be a JSON object")


def _of_kind(kind: str, value: Any, field: str) -> Optional[Constraint]:
    """The constraint of `kind` (json_schema, regex, grammar, choice, json_object) given `value`."""
    if kind == "json_schema":
        return _json_schema(value, field)
    if kind == "json_object":
        if not isinstance(value, bool):
            raise _bad(field, "must be a boolean")
        return Constraint("json_object", field=field) if value else None
    if kind == "choice":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(field, "must be a list of strings")
        return Constraint("choice", choices=tuple(value), field=field)
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    return Constraint(kind, value, field=field)


def _response_format(rf: Any) -> Optional[Constraint]:
    if not isinstance(rf, dict):
        raise _bad("response_format", "must be an object")
    kind = rf.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return Constraint("json_object", field="response_format")
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise _bad("response_format.json_schema", "must be an object with a 'schema'")
        # The schema is enforced whether `strict` is true or not; only its type is checked.
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise _bad("response_format.json_schema.strict", "must be a boolean")
        schema = spec["schema"]
        if not isinstance(schema, (dict, bool)):
            raise _bad("response_format.json_schema.schema", "the schema must be a JSON object")
        return _json_schema(schema, "response_format.json_schema.schema")
    raise _bad("response_format.type", f"must be text, json_object or json_schema, got {kind!r}")


def _structured_outputs(so: Any) -> list[Constraint]:
    if not isinstance(so, dict):
        raise _bad("structured_outputs", "must be an object")
    found = []
    for key, kind in _STRUCTURED_OUTPUTS_KINDS.items():
        if so.get(key) is not None:
            c = _of_kind(kind, so[key], f"structured_outputs.{key}")
            if c is not None:
                found.append(c)
    return found


def constraint_from_openai(body: dict) -> Optional[Constraint]:
    """The constraint an OpenAI-style body asks for, or None.

    Reads `response_format` ({"type": "json_schema", "json_schema": {"schema": ..., "strict": ...}},
    {"type": "json_object"} or {"type": "text"}); vLLM's `structured_outputs` ({"json": schema
    object or text, "regex": str, "choice": [str], "grammar": Lark str, "json_object": bool}); and
    the older `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`. At most one
    constraint may be given. Raises InvalidRequestError naming the field for a malformed one (the
    grammar itself is checked when compiled, and errors name the same field)."""
    found: list[Constraint] = []
    if body.get("response_format") is not None:
        c = _response_format(body["response_format"])
        if c is not None:
            found.append(c)
    if body.get("structured_outputs") is not None:
        found.extend(_structured_outputs(body["structured_outputs"]))
    for name, kind in (("guided_json", "json_schema"), ("guided_regex", "regex"), ("guided_choice", "choice"),
                       ("guided_grammar", "grammar")):
        if body.get(name) is not None:
            found.append(_of_kind(kind, body[name], name))
    if len(found) > 1:
        raise _bad(found[1].field_name, f"give one constraint, not both {found[0].field_name} and "
                                        f"{found[1].field_name}")
    return found[0] if found else None
