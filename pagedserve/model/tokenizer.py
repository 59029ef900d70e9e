"""The tokenizer of a GGUF model, built from its metadata alone.

`load_tokenizer(metadata)` returns a `Tokenizer` whose ids equal llama.cpp's for the same file:
special-token texts are cut out of the input first (llama.cpp's `tokenizer_st_partition`), then
each stretch of ordinary text between them is tokenized on its own by the model's algorithm
(byte-level BPE for `gpt2`, SentencePiece-style BPE for `llama`).

Both algorithms are O(n log n) in the length of a word. `encode` and `encode_chat` take an
optional deadline and stop with TokenizeDeadlineExceeded once it passes; `max_input_bytes`
says how large an input can be and still be a prompt (see tokenize_limits). `encode_chat`
treats message text as data: only the chat template's own markers become control tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

from pagedserve.model.bpe_gpt2 import ByteLevelBPE, byte_decode
from pagedserve.model.bpe_spm import SPACE, SentencePieceBPE
from pagedserve.model.gguf_file import ModelLoadError
from pagedserve.model.pretokenizers import PreTokenizer, supported_pre_types
from pagedserve.model.tokenize_limits import (  # noqa: F401  (re-exported for callers)
    DEADLINE_CHECK_EVERY,
    TokenizeDeadlineExceeded,
    check_deadline,
    max_input_bytes,
)

# GGUF token types (llama.cpp's LLAMA_TOKEN_TYPE_*)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Texts of end-of-turn tokens, for files without tokenizer.ggml.eot_token_id.
_END_OF_TURN_TEXTS = frozenset({"<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>"})


class Tokenizer:
    """Text <-> token ids for one model. Build it with `load_tokenizer`."""

    def __init__(self, metadata: dict[str, Any]):
        """Raise ModelLoadError if the metadata has no usable tokenizer."""
        model = metadata.get("tokenizer.ggml.model")
        tokens = metadata.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens:
            raise ModelLoadError("model metadata has no tokenizer vocabulary (tokenizer.ggml.tokens)")
        self._tokens: list[str] = tokens
        self.vocab_size: int = len(tokens)
        types = metadata.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
        self._types: list[int] = list(types) + [NORMAL] * (len(tokens) - len(types))
        self.model = model
        self.pre = metadata.get("tokenizer.ggml.pre")

        if model == "gpt2":
            pre = self.pre or "default"
            try:
                pretok = PreTokenizer(pre)
            except KeyError:
                raise ModelLoadError(
                    f"unsupported pre-tokenizer tokenizer.ggml.pre={pre!r} "
                    f"(supported: {', '.join(supported_pre_types())})"
                ) from None
            merges = metadata.get("tokenizer.ggml.merges")
            if not isinstance(merges, list):
                raise ModelLoadError("gpt2 tokenizer without tokenizer.ggml.merges")
            self._impl: Any = ByteLevelBPE(tokens, merges, pretok)
            self._spm = False
            default_add_bos, default_space_prefix = False, False
            if pretok.family == "llama3":
                default_add_bos = True
        elif model == "llama":
            self._impl = SentencePieceBPE(tokens, metadata.get("tokenizer.ggml.scores") or [])
            self._spm = True
            default_add_bos, default_space_prefix = True, True
        else:
            raise ModelLoadError(
                f"unsupported tokenizer model tokenizer.ggml.model={model!r} (supported: gpt2, llama)"
            )

        self.bos_id: int | None = self._valid_id(metadata.get("tokenizer.ggml.bos_token_id"))
        self.eos_id: int | None = self._valid_id(metadata.get("tokenizer.ggml.eos_token_id"))
        eot_id = self._valid_id(metadata.get("tokenizer.ggml.eot_token_id"))
        if eot_id is None:
            eot_id = self._find_end_of_turn()
        self.stop_ids: frozenset[int] = frozenset(i for i in (self.eos_id, eot_id) if i is not None)
        self.add_bos: bool = bool(metadata.get("tokenizer.ggml.add_bos_token", default_add_bos))
        self.add_eos: bool = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
        self.add_space_prefix: bool = bool(
            metadata.get("tokenizer.ggml.add_space_prefix", default_space_prefix)
        )
        if self.add_bos and self.bos_id is None:
            raise ModelLoadError("tokenizer.ggml.add_bos_token is true but there is no bos_token_id")
        if self.add_eos and self.eos_id is None:
            raise ModelLoadError("tokenizer.ggml.add_eos_token is true but there is no eos_token_id")
        self.chat_template: str | None = metadata.get("tokenizer.chat_template")

        # Texts cut out before ordinary tokenization, longest first (llama.cpp's special cache).
        # User-defined ones are cut out even when special parsing is off.
        specials = [
            i for i, t in enumerate(self._types) if t in (CONTROL, USER_DEFINED, UNKNOWN) and tokens[i]
        ]
        specials.sort(key=lambda i: -len(tokens[i].encode("utf-8")))
        self._specials_all = [(tokens[i], i) for i in specials]
        self._specials_user = [(tokens[i], i) for i in specials if self._types[i] == USER_DEFINED]
        self._piece_cache: dict[int, bytes] = {}
        self._control_text_index: Any = None  # built on the first encode_chat

    def _find_end_of_turn(self) -> int | None:
        """The end-of-turn control token of a file that does not name one (Gemma's converter
        omits eot_token_id): llama.cpp finds it by its text, so do we."""
        for i, text in enumerate(self._tokens):
            if text in _END_OF_TURN_TEXTS and self._types[i] == CONTROL:
                return i
        return None

    def _valid_id(self, value: Any) -> int | None:
        if isinstance(value, int) and 0 <= value < self.vocab_size:
            return value
        return None

    # ---- encoding -------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        add_special: bool = True,
        parse_special: bool = True,
        *,
        deadline: float | None = None,
    ) -> list[int]:
        """Token ids for `text`.

        add_special: put BOS first if the model's metadata asks for it (add_bos_token), and EOS
        last if it asks for that (add_eos_token). parse_special: texts of control tokens written
        in `text` become those tokens; when False they are ordinary text (user-defined tokens are
        still recognized, as llama.cpp does). deadline: a time.monotonic() value; once it has
        passed, TokenizeDeadlineExceeded is raised (checked between words, see tokenize_limits).
        """
        check_deadline(deadline)
        return self.encode_pieces(self.partition(text, parse_special, deadline), add_special, deadline)

    def encode_pieces(
        self, pieces: Sequence[str | int], add_special: bool = True, deadline: float | None = None
    ) -> list[int]:
        """Token ids for `pieces` as `partition` returns them: ids are kept, each string is
        tokenized as ordinary text on its own. add_special and deadline as in `encode`."""
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self.bos_id)  # type: ignore[arg-type]
        prev_special = True  # SPM: a space prefix goes before text that starts the input
        for piece in pieces:
            if isinstance(piece, int):
                out.append(piece)
                prev_special = True
                continue
            if self._spm:
                if self.add_space_prefix and prev_special:
                    piece = " " + piece
                prev_special = False
            out.extend(self._impl.encode(piece, deadline))
        if add_special and self.add_eos:
            out.append(self.eos_id)  # type: ignore[arg-type]
        return out

    def partition(
        self, text: str, parse_special: bool = True, deadline: float | None = None
    ) -> list[str | int]:
        """`text` cut into ordinary-text strings and special-token ids, in order.

        Like llama.cpp, each special token (longest text first) is cut out of all the text
        that remains, so a longer token wins over a shorter one that overlaps it. Without
        parse_special only user-defined tokens are cut out.
        """
        pieces: list[str | int] = [text] if text else []
        specials = self._specials_all if parse_special else self._specials_user
        for num_checked, (tok_text, tid) in enumerate(specials):
            if deadline is not None and num_checked % DEADLINE_CHECK_EVERY == 0:
                check_deadline(deadline)  # Gemma has 6,400 specials to look for
            if tok_text not in text:
                continue  # cheap test against the whole input first
            new: list[str | int] = []
            for p in pieces:
                if isinstance(p, int) or tok_text not in p:
                    new.append(p)
                    continue
                parts = p.split(tok_text)
                for k, part in enumerate(parts):
                    if k:
                        new.append(tid)
                    if part:
                        new.append(part)
            pieces = new
        return pieces

    # ---- decoding -------------------------------------------------------------------------

    def is_special(self, token_id: int) -> bool:
        """True for tokens that are not ordinary text: control, user-defined and unknown."""
        return self._types[token_id] in (CONTROL, USER_DEFINED, UNKNOWN)

    def is_control(self, token_id: int) -> bool:
        """True for control and unknown tokens: the ones `skip_special` leaves out."""
        return self._types[token_id] in (CONTROL, UNKNOWN)

    def token_bytes(self, token_id: int, skip_special: bool = False) -> bytes:
        """The raw bytes `token_id` stands for (control tokens: their text, or b"" when
        skip_special). Raises IndexError for an id outside the vocabulary."""
        if not 0 <= token_id < self.vocab_size:
            raise IndexError(f"token id {token_id} outside vocabulary of {self.vocab_size}")
        if skip_special and self.is_control(token_id):
            return b""
        piece = self._piece_cache.get(token_id)
        if piece is None:
            piece = self._piece(token_id)
            self._piece_cache[token_id] = piece
        return piece

    def _piece(self, token_id: int) -> bytes:
        text = self._tokens[token_id]
        ttype = self._types[token_id]
        if ttype in (CONTROL, USER_DEFINED, UNKNOWN):
            return text.encode("utf-8")
        if ttype == BYTE and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            return bytes([int(text[3:5], 16)])
        if self._spm:
            return text.replace(SPACE, " ").encode("utf-8")
        return byte_decode(text)

    def decode_bytes(self, ids: Sequence[int], skip_special: bool = False) -> bytes:
        """The bytes of `ids` joined (see `decode`)."""
        out = bytearray()
        first = True
        for tid in ids:
            piece = self.token_bytes(tid, skip_special)
            if first:
                piece = self.strip_first_piece(piece)
                first = False
            out += piece
        return bytes(out)

    def strip_first_piece(self, piece: bytes) -> bytes:
        """The first token's bytes as they appear in decoded text: SPM models that add a space
        prefix when encoding drop it again from the first token (llama.cpp's detokenize)."""
        if self._spm and self.add_space_prefix and piece.startswith(b" "):
            return piece[1:]
        return piece

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """The text of `ids`. Control tokens appear as their text unless skip_special. Bytes
        that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of `token_id` as written in the model file."""
        return self._tokens[token_id]

    # ---- chat -----------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The model's chat template rendered for `messages` (a list of {role, content} dicts).
        Raises ValueError for malformed messages or a model without a template."""
        from pagedserve.model.chat_template import render_chat_template

        return render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self._tokens[self.bos_id] if self.bos_id is not None else "",
            eos_token=self._tokens[self.eos_id] if self.eos_id is not None else "",
        )

    def encode_chat(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        *,
        allow_special_in_content: bool = False,
        deadline: float | None = None,
    ) -> list[int]:
        """Token ids of the conversation `messages` rendered with the model's chat template
        (whatever BOS the template writes is in it; none is added).

        The messages are data: special-token text inside their strings (content, role) is
        tokenized as plain text, and only the template's own markers become control tokens.
        allow_special_in_content=True tokenizes the whole rendered text with special parsing,
        as before, which lets a message forge turns: only for callers trusted with that.
        Raises ValueError for malformed messages or a template that fails, and
        TokenizeDeadlineExceeded once `deadline` (a time.monotonic() value) has passed.
        """
        from pagedserve.model.chat_encoding import ControlTextIndex, encode_chat

        if self._control_text_index is None:
            self._control_text_index = ControlTextIndex(
                control_texts=[text for text, tid in self._specials_all if self.is_control(tid)],
                special_texts=[text for text, _ in self._specials_all],
            )
        return encode_chat(
            self,
            self._control_text_index,
            messages,
            add_generation_prompt=add_generation_prompt,
            allow_special_in_content=allow_special_in_content,
            deadline=deadline,
        )


def load_tokenizer(metadata: dict) -> Tokenizer:
    """The tokenizer described by GGUF `metadata` (as returned by gguf_file.read_metadata).
    Raises ModelLoadError naming an unsupported tokenizer model or pre-tokenizer."""
    return Tokenizer(metadata)
