"""Compiling constraints into llguidance matchers, with limits and a bounded LRU cache.

Compilation (JSON schema -> grammar, grammar validation against the vocabulary) costs up to
milliseconds-to-seconds for big schemas, so front ends call `compile` in a worker thread before
the request enters the engine; the runner then only copies the cached, ready matcher.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict

import llguidance

from pagedserve.model.tokenizer import Tokenizer
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.structured.constraint import Constraint
from pagedserve.structured.ll_tokenizer import build_ll_tokenizer

# Limits so catastrophic inputs fail with an error instead of eating the server. Lexer fuel bounds
# regex -> DFA work (initial: ~50k/ms, so ~20 ms; per step: ~14k/ms, so ~7 ms per mask), the
# grammar-size and lexer-state caps bound memory, step_max_items bounds Earley work per token.
PARSER_LIMITS = dict(
    max_items_in_row=2000,
    initial_lexer_fuel=1_000_000,
    step_lexer_fuel=100_000,
    step_max_items=50_000,
    max_lexer_states=100_000,
    max_grammar_size=200_000,
)
MAX_CONSTRAINT_CHARS = 256 * 1024  # a schema or grammar text larger than this is refused unread
CACHE_SIZE = 256


class GrammarCompiler:
    """Compiles constraints for one vocabulary; thread-safe; caches matchers by constraint."""

    def __init__(self, tokenizer: Tokenizer, n_vocab: int | None = None, cache_size: int = CACHE_SIZE):
        self.ll_tokenizer = build_ll_tokenizer(tokenizer, n_vocab)
        self.n_vocab = self.ll_tokenizer.vocab_size
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self.num_compiled = 0
        self.num_compile_errors = 0
        self.compile_seconds_total = 0.0

    @staticmethod
    def _key(constraint: Constraint) -> tuple:
        return (constraint.kind, constraint.text, constraint.choices)

    def compile(self, constraint: Constraint) -> llguidance.LLMatcher:
        """A fresh matcher at the start of `constraint`'s grammar. Raises InvalidRequestError
        naming the constraint's field, with the compiler's message, for an invalid or too large
        constraint. Cached (LRU by kind+text+choices): a repeat costs a matcher copy."""
        key = self._key(constraint)
        with self._lock:
            template = self._cache.get(key)
            if template is not None:
                self._cache.move_to_end(key)
                return template.deep_copy()
        try:
            template = self._compile_uncached(constraint)
        except InvalidRequestError:
            with self._lock:
                self.num_compile_errors += 1
            raise
        with self._lock:
            self._cache[key] = template
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return template.deep_copy()

    def _compile_uncached(self, constraint: Constraint) -> llguidance.LLMatcher:
        field = constraint.field_name
        if len(constraint.text) > MAX_CONSTRAINT_CHARS:
            raise InvalidRequestError(field, f"{field}: longer than {MAX_CONSTRAINT_CHARS} characters")
        start = time.perf_counter()
        try:
            grammar = constraint.grammar_text()
        except Exception as e:  # the JSON schema compiler raises on a malformed schema
            raise InvalidRequestError(field, f"{field}: {e}") from None
        limits = llguidance.LLParserLimits(**PARSER_LIMITS)
        matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0, limits=limits)
        if matcher.is_error():
            raise InvalidRequestError(field, f"{field}: {matcher.get_error()}")
        with self._lock:
            self.num_compiled += 1
            self.compile_seconds_total += time.perf_counter() - start
        return matcher


_compilers: "weakref.WeakKeyDictionary[Tokenizer, GrammarCompiler]" = weakref.WeakKeyDictionary()
_compilers_lock = threading.Lock()


def compiler_for(tokenizer: Tokenizer, n_vocab: int | None = None) -> GrammarCompiler:
    """The one compiler of `tokenizer` (built on first use, ~1 s)."""
    with _compilers_lock:
        compiler = _compilers.get(tokenizer)
        if compiler is None:
            compiler = _compilers[tokenizer] = GrammarCompiler(tokenizer, n_vocab)
        return compiler


def built_compiler(tokenizer: Tokenizer) -> GrammarCompiler | None:
    """The compiler of `tokenizer` if one was built (a metrics scrape must not build one)."""
    with _compilers_lock:
        return _compilers.get(tokenizer)
