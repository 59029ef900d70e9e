"""Bounds on the work of tokenizing one input: a size limit applied before tokenizing, and a
deadline checked while tokenizing.

The service tokenizes in a worker thread that nobody can interrupt, so the tokenizer itself
stops when the request's deadline has passed, and input too large to be any prompt is refused
before the tokenizer sees it.
"""

from __future__ import annotations

import time

# No vocabulary entry we serve is longer than this many bytes. Measured: SmolLM2's longest
# token is 81 bytes (a newline and 80 spaces), Gemma 3's is 48 bytes (sixteen em dashes). 128 is
# the next power of two above both, leaving room for vocabularies with somewhat longer entries.
MAX_BYTES_PER_TOKEN = 128

# Between how many pre-tokenized words (or merge steps) the deadline is checked: a clock read
# costs about as much as tokenizing a short word, so checking every word would slow encoding.
DEADLINE_CHECK_EVERY = 64


class TokenizeDeadlineExceeded(Exception):
    """Tokenization stopped because the caller's deadline (a time.monotonic() value) passed."""


def check_deadline(deadline: float | None) -> None:
    """Raise TokenizeDeadlineExceeded if `deadline` (time.monotonic() value, None = no deadline)
    has passed."""
    if deadline is not None and time.monotonic() > deadline:
        raise TokenizeDeadlineExceeded("tokenization did not finish before the request's deadline")


def max_input_bytes(max_model_len: int) -> int:
    """The largest input, in UTF-8 bytes, that could still be a prompt of fewer than
    `max_model_len` tokens: `max_model_len * MAX_BYTES_PER_TOKEN`.

    Every token stands for at most MAX_BYTES_PER_TOKEN bytes of text (special tokens included),
    so a text of more bytes than this cannot tokenize to fewer than max_model_len tokens (bytes
    a vocabulary has no token for are dropped, but text made of those is no prompt either) and
    can be rejected before tokenizing. For chat input the bound applies to the total size of the
    message strings: the template only adds text around them, and so only adds tokens.
    """
    return max_model_len * MAX_BYTES_PER_TOKEN
