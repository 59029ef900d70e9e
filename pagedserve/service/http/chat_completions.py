"""POST /v1/chat/completions: messages rendered with the model's chat template, OpenAI
`chat.completion` (or streamed `chat.completion.chunk`) objects out."""

from __future__ import annotations

import contextlib
from typing import Any, Awaitable, Callable, Optional

from pagedserve.model.tokenizer import Tokenizer
from pagedserve.sampled_token import SampledToken
from pagedserve.scheduler.request import RequestOutput
from pagedserve.service.http import responses as r
from pagedserve.service.http.choices import choice_outputs
from pagedserve.service.http.protocol import ChatCompletionRequest
from pagedserve.service.http.to_engine import chat_request, choice_request
from pagedserve.service.servicer import Backend


def _logprob_entry(tokenizer: Tokenizer, token_id: int, logprob: float) -> dict:
    return {"token": r.token_string(tokenizer, token_id), "logprob": logprob,
            "bytes": list(tokenizer.token_bytes(token_id))}


def chat_logprobs(tokenizer: Tokenizer, sampled: list[SampledToken], num_top: int) -> dict:
    """OpenAI chat logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}."""
    return {"content": [dict(_logprob_entry(tokenizer, s.token_id, s.logprob),
                             top_logprobs=[_logprob_entry(tokenizer, i, lp) for i, lp in s.top_logprobs[:num_top]])
                        for s in sampled]}


async def create_chat_completion(body: ChatCompletionRequest, backend: Backend, owner: str, model_name: str,
                                 run_off_loop: Callable[..., Awaitable[Any]]):
    """The response to `body`; its messages are rendered and tokenized by `run_off_loop` (in the
    tokenizer threads, off the event loop)."""
    engine, tokenizer = backend.engine, backend.engine.tokenizer
    request = await run_off_loop(chat_request, body, tokenizer, backend.limits)
    num_top = body.top_logprobs or 0
    cid, created = r.new_id("chatcmpl"), r.now()
    usage = r.Usage()
    outputs = await r.primed(choice_outputs(engine, choice_request(request, body.n), owner))

    def logprobs_of(output: RequestOutput) -> Optional[dict]:
        return chat_logprobs(tokenizer, output.new_logprobs, num_top) if body.logprobs else None

    def envelope(obj: str, choices: list[dict], with_usage: Optional[dict] = None) -> dict:
        out = {"id": cid, "object": obj, "created": created, "model": model_name, "choices": choices}
        if with_usage is not None:
            out["usage"] = with_usage
        return out

    if body.stream:
        started: set[int] = set()
        # The chunks between a choice's role chunk and its last carry only content (when no logprobs).
        content_events = r.TextChunkEvents(lambda index, text: envelope("chat.completion.chunk", [
            {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]))

        def chunks(index: int, output: RequestOutput) -> list[dict | str]:
            usage.add(index, output)
            if index in started and output.new_text and not body.logprobs and not output.finished:
                return [content_events.event(index, output.new_text)]
            out = []
            if index not in started:  # OpenAI's first delta of a choice carries the role
                started.add(index)
                out.append(envelope("chat.completion.chunk", [
                    {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None}]))
            if output.new_text or output.new_logprobs or output.finished:
                delta = {"content": output.new_text} if output.new_text else {}
                out.append(envelope("chat.completion.chunk", [
                    {"index": index, "delta": delta, "logprobs": logprobs_of(output),
                     "finish_reason": r.finish_reason(output)}]))
            return out

        usage_chunk = (lambda: envelope("chat.completion.chunk", [], usage.as_json())) if body.include_usage else None
        return r.streaming_response(r.event_stream(outputs, chunks, usage_chunk))

    merged: dict[int, RequestOutput] = {}
    async with contextlib.aclosing(outputs):  # a cancelled call (client gone) aborts every choice
        async for index, output in outputs:
            usage.add(index, output)
            merged[index] = merged[index].merged_with(output) if index in merged else output
    choices = [{"index": i, "message": {"role": "assistant", "content": merged[i].new_text},
                "logprobs": logprobs_of(merged[i]), "finish_reason": r.finish_reason(merged[i])}
               for i in range(body.n)]
    return r.json_response(envelope("chat.completion", choices, usage.as_json()))
