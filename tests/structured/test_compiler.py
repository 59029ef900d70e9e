"""Compiling constraints: valid ones give matchers, invalid ones InvalidRequestError naming the
field with the compiler's message; the cache returns ready copies; masks allow what they should."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pagedserve.sampling_params import InvalidRequestError
from pagedserve.structured.compiler import GrammarCompiler, compiler_for
from pagedserve.structured.constraint import Constraint


@pytest.fixture(scope="module")
def compiler(smollm2_tokenizer) -> GrammarCompiler:
    return compiler_for(smollm2_tokenizer)


def allowed_ids(matcher) -> list[int]:
    bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), np.uint8), bitorder="little")
    return [int(i) for i in np.nonzero(bits)[0]]


def test_choice_allows_only_prefixes_of_the_choices(compiler, smollm2_tokenizer):
    matcher = compiler.compile(Constraint("choice", choices=("yes", "no")))
    pieces = {smollm2_tokenizer.token_bytes(i) for i in allowed_ids(matcher)}
    assert pieces and all(b"yes".startswith(p) or b"no".startswith(p) for p in pieces)
    assert b"yes" in pieces and b"no" in pieces


def test_completed_grammar_allows_only_stop_tokens(compiler, smollm2_tokenizer):
    matcher = compiler.compile(Constraint("regex", "ab"))
    assert matcher.consume_tokens(smollm2_tokenizer.encode("ab", add_special=False))
    assert set(allowed_ids(matcher)) <= set(smollm2_tokenizer.stop_ids)
    assert set(allowed_ids(matcher))


@pytest.mark.parametrize("constraint, field, fragment", [
    (Constraint("regex", "a(b"), "regex", "unclosed group"),
    (Constraint("json_schema", '{"type": "foo"}'), "json_schema", "foo"),
    (Constraint("json_schema", "{nope"), "json_schema", "key must be a string"),
    (Constraint("grammar", "start: x"), "grammar", "unknown name"),
    (Constraint("regex", "x", field="guided_regex"), None, None),  # valid: no error
])
def test_invalid_constraints_name_the_field(compiler, constraint, field, fragment):
    if field is None:
        compiler.compile(constraint)
        return
    with pytest.raises(InvalidRequestError) as err:
        compiler.compile(constraint)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and fragment in str(err.value)


def test_catastrophic_inputs_fail_cleanly(compiler):
    huge = Constraint("grammar", "start: " + " | ".join(f'"w{i}"' for i in range(40_000)))
    with pytest.raises(InvalidRequestError) as err:
        compiler.compile(huge)
    assert err.value.field == "grammar"
    with pytest.raises(InvalidRequestError, match="longer than"):
        compiler.compile(Constraint("regex", "a" * (300 * 1024)))


def test_empty_or_unknown_constraints_are_refused():
    with pytest.raises(InvalidRequestError):
        Constraint("choice", choices=())
    with pytest.raises(InvalidRequestError):
        Constraint("regex", "")
    with pytest.raises(InvalidRequestError):
        Constraint("xml", "<a/>")


def test_cache_returns_independent_copies(compiler, smollm2_tokenizer):
    c = Constraint("json_schema", json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}}))
    first = compiler.compile(c)
    num_compiled = compiler.num_compiled
    second = compiler.compile(c)
    assert compiler.num_compiled == num_compiled  # the repeat hit the cache
    assert first.consume_tokens(smollm2_tokenizer.encode('{"a"', add_special=False))
    assert allowed_ids(second) == allowed_ids(compiler.compile(c))  # untouched by the first


def test_cache_is_bounded(smollm2_tokenizer):
    small = GrammarCompiler(smollm2_tokenizer, cache_size=2)
    for i in range(4):
        small.compile(Constraint("regex", f"x{i}"))
    assert len(small._cache) == 2
