"""A synthetic byte-level BPE vocabulary of any size, as GGUF tokenizer metadata.

Random-weight models still need a tokenizer that both pagedserve and llama.cpp load. This one is
GPT-2 style (`tokenizer.ggml.model = "gpt2"`): the 256 byte tokens, then merges that build
longer and longer words from letters (every merge "word letter" makes the token "wordletter", so
each token is unique and is the result of its merge), then control tokens at the end, named as
the real model family names them, so chat templates and end-of-turn detection work as usual.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Iterator

from pagedserve.model.bpe_gpt2 import BYTE_TO_CHAR
from pagedserve.model.tokenizer import CONTROL, NORMAL


@dataclass(frozen=True)
class VocabStyle:
    pre: str  # tokenizer.ggml.pre
    named_specials: tuple[str, ...]  # the first control tokens, in order; reserved ones fill the rest
    reserved_format: str  # name of the k-th filler control token
    bos: str
    eos: str
    add_bos: bool
    chat_template: str


_LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

VOCAB_STYLES: dict[str, VocabStyle] = {
    # Llama 3.1/3.2 instruct: ids 128000.. are <|begin_of_text|>, <|end_of_text|>, two reserved,
    # <|finetune_right_pad_id|>, a reserved one, the header markers, <|eom_id|>, <|eot_id|>...
    "llama3": VocabStyle(
        pre="llama-bpe",
        named_specials=("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                        "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"),
        reserved_format="<|reserved_special_token_{}|>",
        bos="<|begin_of_text|>", eos="<|eot_id|>", add_bos=True, chat_template=_LLAMA3_TEMPLATE),
    # Qwen2.5 instruct: 151643 <|endoftext|>, <|im_start|>, <|im_end|>, ... then padding entries.
    "qwen2": VocabStyle(
        pre="qwen2",
        named_specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                        "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                        "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                        "<|image_pad|>", "<|video_pad|>"),
        reserved_format="<|pad_{}|>",
        bos="<|endoftext|>", eos="<|im_end|>", add_bos=False, chat_template=_CHATML_TEMPLATE),
}

# Word-building letters in GPT-2's byte alphabet: a leading space ("Ġ") and the ASCII letters.
_LETTERS = (BYTE_TO_CHAR[ord(" ")],) + tuple(string.ascii_letters)


def _merges() -> Iterator[tuple[str, str]]:
    """(left, right) merges, shortest results first: all two-letter words, then three, ..."""
    words: list[str] = list(_LETTERS)
    while True:
        longer = []
        for word in words:
            for letter in _LETTERS:
                yield word, letter
                longer.append(word + letter)
        words = longer


def vocab_metadata(style_name: str, vocab_size: int, num_special: int) -> dict[str, Any]:
    """The tokenizer.* GGUF keys of a `vocab_size`-token vocabulary whose last `num_special`
    tokens are control tokens of `style_name` ("llama3" or "qwen2")."""
    style = VOCAB_STYLES[style_name]
    num_merges = vocab_size - 256 - num_special
    if num_merges < 0 or num_special < len(style.named_specials):
        raise ValueError(f"vocabulary of {vocab_size} tokens cannot hold 256 bytes and {num_special} "
                         f"special tokens (at least {len(style.named_specials)})")
    tokens = list(BYTE_TO_CHAR)
    merges = []
    merge_iter = _merges()
    for _ in range(num_merges):
        left, right = next(merge_iter)
        merges.append(f"{left} {right}")
        tokens.append(left + right)
    specials = list(style.named_specials)
    k = 0
    while len(specials) < num_special:  # fillers numbered on past the reserved names already used
        filler = style.reserved_format.format(k)
        if filler not in style.named_specials:
            specials.append(filler)
        k += 1
    first_special = len(tokens)
    tokens += specials
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": style.pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [NORMAL] * first_special + [CONTROL] * num_special,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": first_special + specials.index(style.bos),
        "tokenizer.ggml.eos_token_id": first_special + specials.index(style.eos),
        "tokenizer.ggml.add_bos_token": style.add_bos,
        "tokenizer.chat_template": style.chat_template,
    }
