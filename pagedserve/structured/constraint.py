"""What a request's output must match, and the llguidance grammar text that says it."""

from __future__ import annotations

import json
from dataclasses import dataclass

CONSTRAINT_KINDS = ("json_schema", "regex", "grammar", "choice", "json_object")
_JSON_DEFAULTS = {"whitespace_flexible": False}


@dataclass(frozen=True)
class Constraint:
    """One output constraint. `text` holds the JSON schema / regex / Lark grammar; `choices` the
    alternatives of kind "choice"; kind "json_object" takes neither (any JSON object).

    Hashable: compiled grammars are cached by it. `field` names the request field it came from,
    for error messages (defaults to the kind)."""

    kind: str
    text: str = ""
    choices: tuple[str, ...] = ()
    field: str = ""

    def __post_init__(self):
        from pagedserve.sampling_params import InvalidRequestError

        if self.kind not in CONSTRAINT_KINDS:
            raise InvalidRequestError(self.field_name, f"{self.field_name}: unknown constraint kind {self.kind!r}")
        if self.kind == "choice":
            if not self.choices or any(not c for c in self.choices):
                raise InvalidRequestError(self.field_name, f"{self.field_name}: give at least one choice, none empty")
        elif self.kind != "json_object" and not self.text:
            raise InvalidRequestError(self.field_name, f"{self.field_name}: must not be empty")

    @property
    def field_name(self) -> str:
        return self.field or self.kind

    def grammar_text(self) -> str:
        """The llguidance grammar for this constraint (not yet validated)."""
        from llguidance import LLMatcher

        # Compact JSON by default (a schema's "x-guidance" may say otherwise): with free whitespace
        # a sampled model can pad newlines until max_tokens instead of closing the object.
        if self.kind == "json_schema":
            return LLMatcher.grammar_from_json_schema(self.text, defaults=_JSON_DEFAULTS)
        if self.kind == "json_object":
            return LLMatcher.grammar_from_json_schema('{"type": "object"}', defaults=_JSON_DEFAULTS)
        if self.kind == "regex":
            return LLMatcher.grammar_from_regex(self.text)
        if self.kind == "grammar":
            return LLMatcher.grammar_from_lark(self.text)
        # choice: a Lark alternation of string literals (JSON string syntax is Lark's).
        alternatives = " | ".join(json.dumps(c) for c in self.choices)
        return LLMatcher.grammar_from_lark(f"start: {alternatives}\n")
