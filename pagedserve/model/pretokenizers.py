"""Pre-tokenizers for byte-level BPE vocabularies, chosen by the GGUF key `tokenizer.ggml.pre`.

A pre-tokenizer cuts text into "words" before BPE runs on each word separately. llama.cpp
describes each pre-tokenizer type as an ordered list of regexes that are applied one after the
other: the first regex cuts the whole text into pieces (both the matches and the text between
matches become pieces), then the next regex cuts each of those pieces again, and so on. A later
regex never sees across the boundary of a piece made by an earlier one, so `(?!\\S)` at the end
of a piece sees "end of text". We reproduce exactly that, because token ids must equal
llama.cpp's.

The `regex` package's `\\s` is Unicode White_Space, the same set llama.cpp's tables use, and its
`\\p{L}` / `\\p{N}` are the Unicode general categories llama.cpp uses as well.
"""

from __future__ import annotations

from typing import Callable

import regex

# GPT-2's pattern. llama.cpp's list omits the final `|\s+` but its hand-written matcher for this
# pattern falls back to "all whitespace" when `\s+(?!\S)` cannot match, which is what `|\s+` does.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Llama 3's pattern (contractions case-insensitive, numbers in groups of up to three, newlines
# kept with the whitespace before them).
LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
    r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2: as Llama 3, but every digit is a word of its own.
QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The regex lists per pre-tokenizer family (llama.cpp's `regex_exprs` for each pre type).
_FAMILIES: dict[str, tuple[str, ...]] = {
    # digits one by one first, then GPT-2 (StarCoder-style vocabularies, SmolLM)
    "starcoder": (r"\p{N}", GPT2),
    "gpt2": (GPT2,),
    "llama3": (LLAMA3,),
    "qwen2": (QWEN2,),
    "default": (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
}

# `tokenizer.ggml.pre` value -> family. Only names whose llama.cpp definition we reproduce.
PRE_TYPES: dict[str, str] = {
    "smollm": "starcoder",
    "starcoder": "starcoder",
    "refact": "starcoder",
    "codeshell": "starcoder",
    "gpt-2": "gpt2",
    "phi-2": "gpt2",
    "mpt": "gpt2",
    "olmo": "gpt2",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "qwen2": "qwen2",
    "deepseek-r1-qwen": "qwen2",
    "stablelm2": "qwen2",
    "default": "default",
}

# Families for which llama.cpp sets `ignore_merges`: a word that is itself a vocabulary entry is
# emitted as that token without running the merges (they could reach a different split).
IGNORE_MERGES_FAMILIES = frozenset({"llama3"})


class PreTokenizer:
    """Splits text into the words BPE works on, for one `tokenizer.ggml.pre` type."""

    def __init__(self, pre: str):
        """Raise KeyError if `pre` is not a pre-tokenizer type we know."""
        family = PRE_TYPES[pre]
        self.pre = pre
        self.family = family
        self.ignore_merges = family in IGNORE_MERGES_FAMILIES
        self._patterns = [regex.compile(p) for p in _FAMILIES[family]]
        self._split: Callable[[str], list[str]] = self._make_split()

    def _make_split(self) -> Callable[[str], list[str]]:
        patterns = self._patterns
        if len(patterns) == 1:
            # One pattern whose alternatives cover every character: matches are the whole story.
            findall = patterns[0].findall
            return lambda text: findall(text)
        return self._split_multi

    def _split_multi(self, text: str) -> list[str]:
        pieces = [text]
        for pattern in self._patterns:
            out: list[str] = []
            for piece in pieces:
                _split_keep_gaps(pattern, piece, out)
            pieces = out
        return pieces

    def split(self, text: str) -> list[str]:
        """The words of `text`, in order; their concatenation is exactly `text`."""
        if not text:
            return []
        return self._split(text)


def _split_keep_gaps(pattern: regex.Pattern, piece: str, out: list[str]) -> None:
    """Append to `out` the matches of `pattern` in `piece` and the non-empty gaps between them."""
    pos = 0
    for m in pattern.finditer(piece):
        start, end = m.span()
        if start == end:
            continue  # an empty match cuts nothing
        if start > pos:
            out.append(piece[pos:start])
        out.append(piece[start:end])
        pos = end
    if pos < len(piece):
        out.append(piece[pos:])


def supported_pre_types() -> list[str]:
    """The `tokenizer.ggml.pre` values `PreTokenizer` accepts."""
    return sorted(PRE_TYPES)
