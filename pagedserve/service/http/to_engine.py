"""OpenAI request body -> EngineRequest, through the gRPC front's own validation.

The body is written into a GenerateRequest (the proto is the one place where field types and
widths are defined) and checked by request_validation, so both fronts accept and refuse exactly
the same requests and sample the same way (float fields arrive as float32 on both). The field a
refusal names is then translated back to the OpenAI name the client used. Output constraints
(`response_format`, vLLM's `structured_outputs` and `guided_*`) have OpenAI/vLLM shapes the proto
does not mirror, so structured.openai_constraint reads them, naming the client's own fields.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from pagedserve.engine.engine_request import EngineRequest
from pagedserve.model.tokenizer import Tokenizer
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.service import request_validation as rv
from pagedserve.service.http.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingFields
from pagedserve.structured.openai_constraint import CONSTRAINT_FIELDS, constraint_from_openai

_FLOAT32_MAX = 3.4028234663852886e38
MAX_N = 16

# gRPC field path prefix -> the OpenAI field (first match wins; "{tokens}" is the prompt field)
_FIELD_NAMES = [("sampling.", ""), ("stopping.max_tokens", "{max_tokens}"), ("stopping.", ""),
                ("token_ids.ids", "prompt"), ("text", "prompt"), ("chat.messages", "messages"),
                ("chat", "messages"), ("logprobs", "{logprobs}")]


def _bad(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(field, f"{field}: {message}")


def _set(message, name: str, value, field: str) -> None:
    """Write `value` into the proto field, refusing what the field cannot hold (naming `field`)."""
    if isinstance(value, float) and abs(value) > _FLOAT32_MAX:
        raise _bad(field, f"{value} is out of range")
    try:
        setattr(message, name, value)
    except (ValueError, TypeError, OverflowError):
        raise _bad(field, f"{value!r} is out of range") from None


def _openai_field(grpc_field: str, names: dict[str, str]) -> str:
    for prefix, openai in _FIELD_NAMES:
        if grpc_field.startswith(prefix):
            return openai.format(**names) + grpc_field[len(prefix):]
    return grpc_field


def _renamed(exc: InvalidRequestError, names: dict[str, str]) -> InvalidRequestError:
    field = _openai_field(exc.field, names)
    message = str(exc)
    if message.startswith(exc.field):
        message = field + message[len(exc.field):]
    message = re.sub(r"\bstopping\.|\bsampling\.", "", message)
    return InvalidRequestError(field, message)


def _generate_request(body: SamplingFields, max_tokens: Optional[int], max_tokens_field: str,
                      num_logprobs: int) -> pb.GenerateRequest:
    request = pb.GenerateRequest()
    s, t = request.sampling, request.stopping
    for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                 "frequency_penalty", "top_k", "seed"):
        value = getattr(body, name)
        if value is not None:
            if name == "seed" and value < 0:
                raise _bad("seed", f"must be >= 0, got {value}")
            _set(s, name, value, name)
    if max_tokens is not None:
        if max_tokens < 1:
            raise _bad(max_tokens_field, f"must be >= 1, got {max_tokens}")
        _set(t, "max_tokens", max_tokens, max_tokens_field)
    stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    t.stop.extend(stops)
    for i, token_id in enumerate(body.stop_token_ids or []):
        if token_id < 0:
            raise _bad(f"stop_token_ids[{i}]", f"{token_id} is not a token id")
        t.stop_token_ids.append(min(token_id, 2**32 - 1))
    t.ignore_eos = body.ignore_eos
    _set(request, "logprobs", num_logprobs, "logprobs")
    return request


def _check_n(body: SamplingFields) -> None:
    if not 1 <= body.n <= MAX_N:
        raise _bad("n", f"must be in [1, {MAX_N}], got {body.n}")


def _validated(request: pb.GenerateRequest, body: SamplingFields, tokenizer: Tokenizer,
               limits: rv.RequestLimits, names: dict[str, str]) -> EngineRequest:
    """The checked engine request, with the output constraint the body asks for (compiled, and
    refused naming its field if invalid, when the engine takes the request)."""
    constraint = constraint_from_openai({name: getattr(body, name) for name in CONSTRAINT_FIELDS})
    try:
        engine_request = rv.engine_request(request, tokenizer, limits)
    except InvalidRequestError as exc:
        raise _renamed(exc, names) from None
    if constraint is None:
        return engine_request
    return dataclasses.replace(engine_request, params=dataclasses.replace(engine_request.params, constraint=constraint))


def completion_request(body: CompletionRequest, tokenizer: Tokenizer, limits: rv.RequestLimits) -> EngineRequest:
    """The engine request of a /v1/completions body (choice 0); raises InvalidRequestError."""
    _check_n(body)
    if body.logprobs is not None and not 0 <= body.logprobs <= rv.MAX_LOGPROBS:
        raise _bad("logprobs", f"must be in [0, {rv.MAX_LOGPROBS}], got {body.logprobs}")
    # the engine returns the sampled token's logprob only when asked for >= 1 alternative
    num_logprobs = 0 if body.logprobs is None else max(1, body.logprobs)
    # echo may score the prompt alone (max_tokens 0), as OpenAI's legacy completions allowed
    score_only = body.echo and body.max_tokens == 0
    if score_only and body.n > 1:
        raise _bad("n", "max_tokens 0 (scoring the echoed prompt) gives one choice; n must be 1")
    request = _generate_request(body, None if score_only else body.max_tokens, "max_tokens", num_logprobs)
    if isinstance(body.prompt, str):
        request.text = body.prompt
    else:
        for i, token_id in enumerate(body.prompt):
            if token_id < 0:
                raise _bad(f"prompt[{i}]", f"{token_id} is not a token id")
        request.token_ids.ids.extend(min(i, 2**32 - 1) for i in body.prompt)
        if not body.prompt:
            raise _bad("prompt", "the prompt has no token ids")
    engine_request = _validated(request, body, tokenizer, limits, {"max_tokens": "max_tokens", "logprobs": "logprobs"})
    changes = {}
    if score_only:
        changes["max_tokens"] = 0
    if body.echo and body.logprobs is not None:
        # the echoed prompt's logprobs: every prompt position's distribution is computed, so the
        # engine serves such a request without prefix-cache hits (cached positions have no logits)
        changes["prompt_logprobs"] = num_logprobs
    if not changes:
        return engine_request
    return dataclasses.replace(engine_request, params=dataclasses.replace(engine_request.params, **changes))


def chat_messages(messages: list[ChatMessage]) -> pb.ChatMessages:
    return pb.ChatMessages(messages=[pb.ChatMessage(role=m.role, content=m.text) for m in messages])


def chat_request(body: ChatCompletionRequest, tokenizer: Tokenizer, limits: rv.RequestLimits) -> EngineRequest:
    """The engine request of a /v1/chat/completions body (choice 0); raises InvalidRequestError."""
    _check_n(body)
    top = body.top_logprobs
    if top is not None and not 0 <= top <= rv.MAX_LOGPROBS:
        raise _bad("top_logprobs", f"must be in [0, {rv.MAX_LOGPROBS}], got {top}")
    num_logprobs = max(1, top or 0) if body.logprobs else 0
    max_field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    request = _generate_request(body, max_tokens, max_field, num_logprobs)
    request.chat.CopyFrom(chat_messages(body.messages))
    return _validated(request, body, tokenizer, limits, {"max_tokens": max_field, "logprobs": "top_logprobs"})


def choice_request(request: EngineRequest, n: int) -> EngineRequest:
    """One engine request for all n choices: the engine computes the prompt once, samples each
    choice's first token from the same logits (choice i with seed + i when a seed is given) and
    then forks the choices, which share the prompt's KV blocks."""
    if n == request.params.n:
        return request
    return dataclasses.replace(request, params=dataclasses.replace(request.params, n=n))
