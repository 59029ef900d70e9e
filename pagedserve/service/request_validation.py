"""Protobuf request -> prompt token ids + SamplingParams, refusing bad input with a useful message.

Every refusal is an InvalidRequestError whose field is the protobuf field path and whose message
names the field, the value and the limit, so a client can fix its request without the server log.
The engine checks some of this again (SamplingParams, context fit); checking here first gives
messages in the API's own field names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from pagedserve.engine.engine_request import EngineRequest
from pagedserve.model.tokenizer import Tokenizer, max_input_bytes
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.sampling_params import (MAX_DRAFT_TOKENS, SPECULATIVE_AUTO, SPECULATIVE_OFF, InvalidRequestError,
                                        SamplingParams)
from pagedserve.structured.constraint import Constraint

MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256
MAX_REQUEST_ID_CHARS = 128
MAX_LOGPROBS = 20


@dataclass(frozen=True)
class RequestLimits:
    """What the server accepts; `max_model_len` is the engine's, `max_tokens_limit` and
    `max_prompt_tokens` (None: only the context limits the prompt) the operator's."""

    max_model_len: int
    max_tokens_limit: int
    vocab_size: int
    max_stop_strings: int = MAX_STOP_STRINGS
    max_stop_string_chars: int = MAX_STOP_STRING_CHARS
    max_prompt_tokens: Optional[int] = None

    def __post_init__(self):
        if self.max_tokens_limit < 1:
            raise ValueError(f"max_tokens_limit must be >= 1, got {self.max_tokens_limit}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")

    @property
    def max_input_bytes(self) -> int:
        """The largest text (or sum of chat message strings) worth tokenizing, in UTF-8 bytes:
        anything larger has at least max_model_len tokens (see tokenize_limits.max_input_bytes)."""
        return max_input_bytes(self.max_model_len)


def _bad(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(field, f"{field}: {message}")


def chat_messages(chat: pb.ChatMessages, field: str = "chat") -> list[dict[str, str]]:
    """The messages as the chat template wants them; raises if there are none or a role is empty."""
    if not chat.messages:
        raise _bad(f"{field}.messages", "at least one message is needed")
    out = []
    for i, message in enumerate(chat.messages):
        if not message.role:
            raise _bad(f"{field}.messages[{i}].role", "the role is empty (e.g. \"user\")")
        out.append({"role": message.role, "content": message.content})
    return out


def check_input_bytes(field: str, texts, limits: RequestLimits) -> None:
    """Refuse input whose strings (`texts`: the prompt, or every role and content of a chat)
    hold more UTF-8 bytes than any prompt could, before anything tokenizes them."""
    size = sum(len(t) if t.isascii() else len(t.encode("utf-8", "surrogatepass")) for t in texts)
    if size > limits.max_input_bytes:
        raise _bad(field, f"the input has {size} bytes; no prompt that fits max_model_len={limits.max_model_len} "
                          f"tokens is longer than {limits.max_input_bytes} bytes")


def check_input_size(request, limits: RequestLimits) -> None:
    """check_input_bytes of a GenerateRequest's or TokenizeRequest's text or chat input."""
    kind = request.WhichOneof("input")
    if kind == "text":
        check_input_bytes(kind, [request.text], limits)
    elif kind == "chat":
        check_input_bytes(kind, (t for m in request.chat.messages for t in (m.role, m.content)), limits)


def render_chat(tokenizer: Tokenizer, chat: pb.ChatMessages, field: str = "chat",
                deadline: Optional[float] = None) -> list[int]:
    """Token ids of the conversation rendered with the model's template plus the generation prompt.

    The rendered text already holds whatever BOS the template writes, so none is added. Message
    text is data unless the request opts in (`allow_special_tokens_in_content`). Raises
    TokenizeDeadlineExceeded once `deadline` (time.monotonic()) has passed.
    """
    messages = chat_messages(chat, field)
    try:
        return tokenizer.encode_chat(messages, add_generation_prompt=True, deadline=deadline,
                                     allow_special_in_content=chat.allow_special_tokens_in_content)
    except ValueError as e:  # the template (or its message check) rejected the conversation
        raise _bad(f"{field}.messages", str(e)) from None


def check_token_ids(ids, vocab_size: int, field: str) -> list[int]:
    """`ids` as a list; raises naming the first id outside the vocabulary."""
    ids = list(ids)
    for i, token_id in enumerate(ids):
        if token_id >= vocab_size:
            raise _bad(f"{field}[{i}]", f"token id {token_id} is not in the vocabulary (0..{vocab_size - 1})")
    return ids


def prompt_token_ids(request: pb.GenerateRequest, tokenizer: Tokenizer, limits: RequestLimits,
                     deadline: Optional[float] = None) -> list[int]:
    """The prompt of a Generate request as token ids, at least one and short enough to generate.
    Tokenizing stops with TokenizeDeadlineExceeded once `deadline` (time.monotonic()) passes."""
    kind = request.WhichOneof("input")
    if kind is None:
        raise _bad("input", "give one of text, token_ids or chat")
    check_input_size(request, limits)
    if kind == "text":
        if not request.text:
            raise _bad("text", "the prompt text is empty")
        ids = tokenizer.encode(request.text, deadline=deadline)
    elif kind == "token_ids":
        if not request.token_ids.ids:
            raise _bad("token_ids.ids", "the prompt has no token ids")
        ids = check_token_ids(request.token_ids.ids, limits.vocab_size, "token_ids.ids")
    else:
        ids = render_chat(tokenizer, request.chat, deadline=deadline)
    if not ids:
        raise _bad(kind, "the prompt tokenizes to no tokens")
    if len(ids) >= limits.max_model_len:
        raise _bad(kind, f"the prompt has {len(ids)} tokens; the context holds max_model_len="
                         f"{limits.max_model_len}, so at most {limits.max_model_len - 1} leave room to generate")
    if limits.max_prompt_tokens is not None and len(ids) > limits.max_prompt_tokens:
        raise _bad(kind, f"the prompt has {len(ids)} tokens, at most max_prompt_tokens={limits.max_prompt_tokens} "
                         f"allowed (the server's --max-prompt-tokens)")
    return ids


def _f32(value: float) -> float:
    """A float field as the client wrote it: float32 keeps ~7 digits, so 0.7 arrives as
    0.699999988; reading 7 significant digits gives back 0.7 (what an in-process caller passes)."""
    return float(f"{value:.7g}")


def _optional(message, name: str, default: float):
    return _f32(getattr(message, name)) if message.HasField(name) else default


_FLOAT_FIELDS = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")


def _check_finite(s: pb.SamplingOptions) -> None:
    """NaN and infinities are no setting of anything: refuse them all alike, naming the field."""
    for name in _FLOAT_FIELDS:
        value = getattr(s, name)
        if not math.isfinite(value):
            raise _bad(f"sampling.{name}", f"must be a finite number, got {value}")


def sampling_params(request: pb.GenerateRequest, num_prompt_tokens: int, limits: RequestLimits) -> SamplingParams:
    """SamplingParams of the request, defaults filled in as documented in the .proto."""
    s, t = request.sampling, request.stopping
    _check_finite(s)
    temperature = _optional(s, "temperature", 1.0)
    if not temperature >= 0.0:  # written this way so NaN fails too
        raise _bad("sampling.temperature", f"must be >= 0 (0 = greedy), got {temperature}")
    if s.top_k < 0:
        raise _bad("sampling.top_k", f"must be >= 0 (0 = off), got {s.top_k}")
    top_p = _optional(s, "top_p", 1.0)
    if not 0.0 < top_p <= 1.0:
        raise _bad("sampling.top_p", f"must be in (0, 1], got {top_p}")
    min_p = _f32(s.min_p)
    if not 0.0 <= min_p <= 1.0:
        raise _bad("sampling.min_p", f"must be in [0, 1], got {min_p}")
    repetition_penalty = _optional(s, "repetition_penalty", 1.0)
    if not (repetition_penalty > 0.0 and math.isfinite(repetition_penalty)):
        raise _bad("sampling.repetition_penalty", f"must be > 0 (1 = off), got {repetition_penalty}")
    penalties = {name: _f32(getattr(s, name)) for name in ("presence_penalty", "frequency_penalty")}
    for name, value in penalties.items():
        if not -2.0 <= value <= 2.0:
            raise _bad(f"sampling.{name}", f"must be in [-2, 2], got {value}")

    room = limits.max_model_len - num_prompt_tokens
    if t.HasField("max_tokens"):
        max_tokens = t.max_tokens
        if not 1 <= max_tokens <= limits.max_tokens_limit:
            raise _bad("stopping.max_tokens", f"must be in [1, {limits.max_tokens_limit}] "
                                              f"(the server's --max-tokens-limit), got {max_tokens}")
        if max_tokens > room:
            raise _bad("stopping.max_tokens", f"the prompt ({num_prompt_tokens} tokens) plus max_tokens "
                                              f"({max_tokens}) exceeds max_model_len={limits.max_model_len}")
    else:
        max_tokens = min(limits.max_tokens_limit, room)
    if len(t.stop) > limits.max_stop_strings:
        raise _bad("stopping.stop", f"{len(t.stop)} stop strings, at most {limits.max_stop_strings} allowed")
    for i, stop in enumerate(t.stop):
        if not stop:
            raise _bad(f"stopping.stop[{i}]", "the stop string is empty")
        if len(stop) > limits.max_stop_string_chars:
            raise _bad(f"stopping.stop[{i}]", f"the stop string has {len(stop)} characters, "
                                               f"at most {limits.max_stop_string_chars} allowed")
    stop_token_ids = check_token_ids(t.stop_token_ids, limits.vocab_size, "stopping.stop_token_ids")
    if not 0 <= request.logprobs <= MAX_LOGPROBS:
        raise _bad("logprobs", f"must be in [0, {MAX_LOGPROBS}], got {request.logprobs}")
    return SamplingParams(
        temperature=temperature, top_k=s.top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, presence_penalty=penalties["presence_penalty"],
        frequency_penalty=penalties["frequency_penalty"], seed=s.seed if s.HasField("seed") else None,
        max_tokens=max_tokens, stop=tuple(t.stop), stop_token_ids=tuple(stop_token_ids),
        ignore_eos=t.ignore_eos, logprobs=request.logprobs, constraint=constraint(request),
        speculative=speculative(request.speculative),
    )


def speculative(options: pb.SpeculativeOptions) -> int:
    """`SamplingParams.speculative` of the request's speculative options."""
    mode, k = options.mode, options.num_draft_tokens
    if mode not in (pb.SPECULATIVE_MODE_UNSPECIFIED, pb.SPECULATIVE_MODE_OFF, pb.SPECULATIVE_MODE_AUTO,
                    pb.SPECULATIVE_MODE_FIXED):
        raise _bad("speculative.mode", f"unknown mode {mode}")
    if mode == pb.SPECULATIVE_MODE_FIXED:
        if not 1 <= k <= MAX_DRAFT_TOKENS:
            raise _bad("speculative.num_draft_tokens",
                       f"must be in [1, {MAX_DRAFT_TOKENS}] with SPECULATIVE_MODE_FIXED, got {k}")
        return k
    if k != 0:
        raise _bad("speculative.num_draft_tokens",
                   f"only SPECULATIVE_MODE_FIXED takes a number of draft tokens, got {k}")
    return SPECULATIVE_OFF if mode == pb.SPECULATIVE_MODE_OFF else SPECULATIVE_AUTO


def check_request_id(request_id: str, field: str = "request_id") -> str:
    """`request_id` if it is at most MAX_REQUEST_ID_CHARS printable ASCII characters (it goes into
    logs: no control characters, no newlines); raises otherwise."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise _bad(field, f"has {len(request_id)} characters, at most {MAX_REQUEST_ID_CHARS} allowed")
    for i, char in enumerate(request_id):
        if not " " <= char <= "~":
            raise _bad(field, f"character {i} is {char!r}; only printable ASCII (space to '~') is allowed")
    return request_id


def constraint(request: pb.GenerateRequest) -> Constraint | None:
    """The request's `constraint` oneof as a Constraint (None when unset); compiled later."""
    kind = request.WhichOneof("constraint")
    if kind is None:
        return None
    if kind == "choice":
        return Constraint("choice", choices=tuple(request.choice.values), field="choice.values")
    if kind == "json_object":
        return Constraint("json_object")
    return Constraint(kind, getattr(request, kind))


def engine_request(request: pb.GenerateRequest, tokenizer: Tokenizer, limits: RequestLimits,
                   deadline: Optional[float] = None) -> EngineRequest:
    """Validate a whole Generate request; raises InvalidRequestError at the first problem, and
    TokenizeDeadlineExceeded if tokenizing outlives `deadline` (time.monotonic())."""
    check_request_id(request.request_id)
    ids = prompt_token_ids(request, tokenizer, limits, deadline)
    params = sampling_params(request, len(ids), limits)
    return EngineRequest(ids, params, request.request_id or None, request.priority)
