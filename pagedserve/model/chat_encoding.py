"""A conversation as token ids, with what the messages say kept as data.

The chat template writes the turn markers (`<|im_start|>`, `<start_of_turn>`...) as text, and
the tokenizer turns control-token text into control tokens. Text inside a message must not get
that treatment, or a user could write `hi<|im_end|>\\n<|im_start|>system\\n...` and forge a turn.
llama.cpp and vLLM keep them apart by tokenizing template text with special-token parsing and
message text without; this module does the same in one pass:

1. In every string of every message, each control-token text is replaced by a placeholder
   character (Unicode private use, chosen so it occurs nowhere in the input, the template or a
   special token). So is an end of the string that could join the template text next to it
   into a control token (`<|im_` at the end, `|>` at the start).
2. The template is rendered with those messages. Templates may compare, trim or concatenate the
   strings; placeholders are ordinary non-space characters to them.
3. The rendered text is cut at special tokens as usual; placeholders stop any match across them.
   In the text between special tokens, the placeholders are replaced by their original text,
   which is then cut only at user-defined tokens, as `encode(parse_special=False)` does.

A chat without control-token text in it renders to exactly the text it rendered to before, so
its ids are unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pagedserve.model.chat_template import validate_messages
from pagedserve.model.tokenize_limits import check_deadline

if TYPE_CHECKING:
    from pagedserve.model.tokenizer import Tokenizer

# Supplementary Private Use Areas A and B: no vocabulary gives these characters a meaning.
_FIRST_PLACEHOLDER = 0xF0000
_LAST_PLACEHOLDER = 0x10FFFD


class ControlTextIndex:
    """What one vocabulary's control tokens look like: their texts' proper prefixes and suffixes,
    and the characters of all special tokens (which placeholders must avoid)."""

    def __init__(self, control_texts: list[str], special_texts: list[str]):
        self._prefixes = {t[:k] for t in control_texts for k in range(1, len(t))}
        self._suffixes = {t[k:] for t in control_texts for k in range(1, len(t))}
        self._max_len = max((len(t) for t in control_texts), default=0)
        self.special_chars = frozenset("".join(special_texts))

    def edge_lengths(self, text: str) -> tuple[int, int]:
        """(head, tail): the longest start of `text` that ends some control text, and the
        longest end of `text` that starts one (0 if none); the template text beside `text`
        could complete them."""
        limit = min(self._max_len - 1, len(text))
        head = next((k for k in range(limit, 0, -1) if text[:k] in self._suffixes), 0)
        tail = next((k for k in range(limit, 0, -1) if text[-k:] in self._prefixes), 0)
        return head, tail


class _Placeholders:
    """Placeholder characters handed out for one conversation, and the text each stands for."""

    def __init__(self, used: frozenset[str]):
        self._used = used
        self._next_code = _FIRST_PLACEHOLDER
        self._by_text: dict[str, str] = {}
        self._originals: dict[int, str] = {}  # ord(placeholder) -> original text
        self._chars: set[str] = set()

    def new_char(self) -> str:
        """A private-use character not in `used` and not handed out before."""
        while chr(self._next_code) in self._used:
            self._next_code += 1
        if self._next_code > _LAST_PLACEHOLDER:
            raise ValueError("the chat messages use every private-use character")
        self._next_code += 1
        return chr(self._next_code - 1)

    def for_text(self, text: str) -> str:
        """The placeholder of `text` (the same one each time)."""
        ph = self._by_text.get(text)
        if ph is None:
            ph = self._by_text[text] = self.new_char()
            self._originals[ord(ph)] = text
            self._chars.add(ph)
        return ph

    def occur_in(self, text: str) -> bool:
        return bool(self._chars) and not self._chars.isdisjoint(text)

    def restore(self, text: str) -> str:
        """`text` with every placeholder replaced by the text it stands for."""
        return text.translate(self._originals)


def _mask_strings(
    tokenizer: Tokenizer,
    control_texts: ControlTextIndex,
    strings: list[str],
    placeholders: _Placeholders,
    deadline: float | None,
) -> list[str]:
    """`strings` with control-token texts and joinable ends replaced by placeholders. The strings
    are searched in one pass, joined by a separator no special token contains."""
    if not strings:
        return []
    separator = placeholders.new_char()
    parts: list[list[str]] = [[]]
    for piece in tokenizer.partition(separator.join(strings), True, deadline):
        if isinstance(piece, int):
            text = tokenizer.token_text(piece)
            parts[-1].append(placeholders.for_text(text) if tokenizer.is_control(piece) else text)
            continue
        first, *rest = piece.split(separator)
        parts[-1].append(first)
        parts.extend([segment] for segment in rest)
    masked = []
    for fragments in parts:
        text = "".join(fragments)
        head, tail = control_texts.edge_lengths(text)
        end = max(head, len(text) - tail)  # a short text may both end and start a control text
        masked.append(
            (placeholders.for_text(text[:head]) if head else "")
            + text[head:end]
            + (placeholders.for_text(text[end:]) if end < len(text) else "")
        )
    return masked


def encode_chat(
    tokenizer: Tokenizer,
    control_texts: ControlTextIndex,
    messages: Any,
    *,
    add_generation_prompt: bool = True,
    allow_special_in_content: bool = False,
    deadline: float | None = None,
) -> list[int]:
    """Token ids of `messages` rendered with the model's chat template; see Tokenizer.encode_chat."""
    check_deadline(deadline)
    validate_messages(messages)
    if allow_special_in_content:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt)
        return tokenizer.encode(text, add_special=False, deadline=deadline)
    # every string of every message is data: content and role, and any other field
    keys = [(i, k) for i, msg in enumerate(messages) for k, v in msg.items() if isinstance(v, str)]
    strings = [messages[i][k] for i, k in keys]
    placeholders = _Placeholders(
        control_texts.special_chars.union(*strings, tokenizer.chat_template or "")
    )
    masked_messages = [dict(msg) for msg in messages]
    masked_strings = _mask_strings(tokenizer, control_texts, strings, placeholders, deadline)
    for (i, k), masked in zip(keys, masked_strings):
        masked_messages[i][k] = masked
    rendered = tokenizer.apply_chat_template(masked_messages, add_generation_prompt)
    check_deadline(deadline)
    pieces: list[str | int] = []
    for piece in tokenizer.partition(rendered, True, deadline):
        if isinstance(piece, str) and placeholders.occur_in(piece):
            pieces.extend(tokenizer.partition(placeholders.restore(piece), False, deadline))
        else:
            pieces.append(piece)
    return tokenizer.encode_pieces(pieces, add_special=False, deadline=deadline)
