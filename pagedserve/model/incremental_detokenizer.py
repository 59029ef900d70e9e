"""Turning a stream of generated token ids into text, piece by piece.

A token can end in the middle of a UTF-8 character (emoji and CJK often span two or three
byte-level tokens), so text is released only up to the last complete character; the incomplete
tail is held back until the next tokens complete it, or until `flush` at the end of the stream.
Joined together, the pieces equal `tokenizer.decode(all_ids, skip_special)`, except that a
stream is a continuation of its prompt: the leading space that `decode` drops from the first
token of SentencePiece models with a space prefix is kept (" Paris" continues "The capital is").
"""

from __future__ import annotations

from typing import Sequence

from pagedserve.model.tokenizer import Tokenizer


def _incomplete_tail(buf: bytes | bytearray) -> int:
    """How many bytes at the end of `buf` are the start of a UTF-8 character that needs more
    bytes. Only a valid lead byte followed by the right kind of bytes counts: anything else
    can never become valid and is released (as U+FFFD) straight away."""
    n = len(buf)
    # look back over at most 3 continuation bytes to find the lead byte
    for back in range(1, min(4, n + 1)):
        b = buf[n - back]
        if 0x80 <= b < 0xC0:
            continue  # continuation byte: keep looking for its lead
        if b >= 0xF0 and b <= 0xF4:
            need = 4
        elif b >= 0xE0:
            need = 3 if b < 0xF0 else 0
        elif b >= 0xC2:
            need = 2
        else:
            need = 0  # ASCII or a byte that can never lead
        return back if back < need else 0
    return 0


class IncrementalDetokenizer:
    """Decodes one generation stream. Not thread-safe: one instance per stream."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok = tokenizer
        self._skip = skip_special
        self._pending = bytearray()

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the text they complete (possibly ""). Never returns half of a
        UTF-8 character: its bytes wait for the next push or for flush."""
        for tid in token_ids:
            self._pending += self._tok.token_bytes(tid, self._skip)
        hold = _incomplete_tail(self._pending)
        cut = len(self._pending) - hold
        if cut == 0:
            return ""
        text = bytes(self._pending[:cut]).decode("utf-8", errors="replace")
        del self._pending[:cut]
        return text

    def flush(self) -> str:
        """End of stream: whatever was held back, with U+FFFD for bytes that never completed."""
        text = bytes(self._pending).decode("utf-8", errors="replace")
        self._pending.clear()
        return text
