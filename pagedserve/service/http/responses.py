"""What completions and chat responses share: ids, usage, logprob entries, SSE framing, and the
loop that turns n choices' outputs into a JSON body or an event stream."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import AsyncIterator, Callable, Optional, Union

from fastapi.responses import JSONResponse, StreamingResponse

from pagedserve.scheduler.request import RequestOutput
from pagedserve.service.http.errors import error_body, http_error_of

DONE_EVENT = "data: [DONE]\n\n"
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort"}


def token_string(tokenizer, token_id: int) -> str:
    """A token as logprobs show it: its text (" Paris", not the vocabulary's "ĠParis"); a piece of
    a multi-byte character shows as U+FFFD, its `bytes` keep the truth (chat logprobs)."""
    return tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")


def sse(payload: dict) -> str:
    """One server-sent event carrying `payload` as JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


class TextChunkEvents:
    """`sse(make(index, text))` for the chunks of a stream that differ only in their choice index
    and one string (a token's text), without building and encoding a dict per token: `make` is
    rendered once with markers, and each event fills in the index and the escaped text. The bytes
    are the same as sse's (tested); a `make` whose rendering holds a marker twice gets sse itself."""

    _INDEX, _TEXT = 7_305_919_426_011_733, "\x00\x01"  # what no envelope holds

    def __init__(self, make: Callable[[int, str], dict]):
        self._make = make
        rendered = sse(make(self._INDEX, self._TEXT))
        head, index, rest = rendered.partition(str(self._INDEX))
        middle, text, tail = rest.partition(encode_basestring(self._TEXT))
        others = head + middle + tail
        unique = index and text and str(self._INDEX) not in others and encode_basestring(self._TEXT)[1:-1] not in others
        self._parts = (head, middle, tail) if unique else None

    def event(self, index: int, text: str) -> str:
        if self._parts is None:
            return sse(self._make(index, text))
        head, middle, tail = self._parts
        return f"{head}{index}{middle}{encode_basestring(text)}{tail}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


@dataclass
class Usage:
    """Token counts over all choices: the prompt once (as OpenAI and vLLM count it)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens_by_choice: dict[int, int] = field(default_factory=dict)

    def add(self, index: int, output: RequestOutput) -> None:
        self.prompt_tokens = output.num_prompt_tokens
        self.cached_tokens = max(self.cached_tokens, output.num_cached_tokens)
        self.completion_tokens_by_choice[index] = output.num_output_tokens

    def as_json(self) -> dict:
        completion = sum(self.completion_tokens_by_choice.values())
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


def finish_reason(output: RequestOutput) -> Optional[str]:
    return FINISH_REASONS.get(output.finish_reason) if output.finished else None


async def primed(outputs: AsyncIterator) -> AsyncIterator:
    """`outputs` with its first item already awaited, so that a refusal (queue full, bad input the
    engine found, not serving) raises here, before any response status is sent."""
    first = await outputs.__anext__()

    async def rest():
        async with contextlib.aclosing(outputs):
            yield first
            async for item in outputs:
                yield item
    return rest()


async def event_stream(outputs: AsyncIterator, chunks: Callable[[int, RequestOutput], list[Union[dict, str]]],
                       usage_chunk: Optional[Callable[[], dict]]) -> AsyncIterator[str]:
    """SSE events of the choices' chunks (a dict, or an event already rendered), an optional usage
    chunk, then [DONE]. An error after the first event (a later choice refused) is sent as an error
    event; a client disconnect closes `outputs`, which aborts every choice."""
    async with contextlib.aclosing(outputs):
        try:
            async for index, output in outputs:
                for chunk in chunks(index, output):
                    yield chunk if isinstance(chunk, str) else sse(chunk)
            if usage_chunk is not None:
                yield sse(usage_chunk())
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in-band
            err = http_error_of(exc)
            yield sse(error_body(err.status, str(err), err.param, err.code))
    yield DONE_EVENT


def streaming_response(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def json_response(body: dict) -> JSONResponse:
    return JSONResponse(body)
