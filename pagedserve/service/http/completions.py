"""POST /v1/completions: text (or token ids) in, OpenAI `text_completion` objects out."""

from __future__ import annotations

import contextlib
from typing import Optional

from pagedserve.model.tokenizer import Tokenizer
from pagedserve.sampled_token import SampledToken
from pagedserve.scheduler.request import RequestOutput
from pagedserve.service.http import responses as r
from pagedserve.service.http.choices import choice_outputs
from pagedserve.service.http.protocol import CompletionRequest
from pagedserve.service.http.to_engine import choice_request, completion_request
from pagedserve.service.servicer import Backend


class _Logprobs:
    """OpenAI completions logprobs of one choice: tokens, token_logprobs, top_logprobs, text_offset."""

    def __init__(self, tokenizer: Tokenizer, num_top: int, offset: int):
        self.tokenizer, self.num_top, self.offset = tokenizer, num_top, offset

    def of(self, sampled: list[SampledToken]) -> dict:
        tokenizer = self.tokenizer
        text = lambda token_id: r.token_string(tokenizer, token_id)  # noqa: E731
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for s in sampled:
            token = text(s.token_id)
            out["tokens"].append(token)
            out["token_logprobs"].append(s.logprob)
            out["top_logprobs"].append({text(i): lp for i, lp in s.top_logprobs[:self.num_top]})
            out["text_offset"].append(self.offset)
            self.offset += len(token)
        return out


async def create_completion(body: CompletionRequest, backend: Backend, owner: str, model_name: str):
    engine, tokenizer = backend.engine, backend.engine.tokenizer
    request = completion_request(body, tokenizer, backend.limits)
    echo_text = ""
    if body.echo:
        echo_text = body.prompt if isinstance(body.prompt, str) else tokenizer.decode(request.prompt_token_ids)
    logprobs = ([_Logprobs(tokenizer, body.logprobs, len(echo_text)) for _ in range(body.n)]
                if body.logprobs is not None else None)
    cid, created = r.new_id("cmpl"), r.now()
    usage = r.Usage()
    outputs = await r.primed(choice_outputs(engine, choice_request(request, body.n), owner))

    def choice(index: int, output: RequestOutput, text: str) -> dict:
        return {"index": index, "text": text,
                "logprobs": logprobs[index].of(output.new_logprobs) if logprobs is not None else None,
                "finish_reason": r.finish_reason(output), "stop_reason": output.stop_reason if output.finished else None}

    def envelope(choices: list[dict], with_usage: Optional[dict] = None) -> dict:
        body_ = {"id": cid, "object": "text_completion", "created": created, "model": model_name,
                 "choices": choices}
        if with_usage is not None:
            body_["usage"] = with_usage
        return body_

    if body.stream:
        echoed: set[int] = set()

        def chunks(index: int, output: RequestOutput) -> list[dict]:
            usage.add(index, output)
            text = output.new_text
            if body.echo and index not in echoed:
                echoed.add(index)
                text = echo_text + text
            return [envelope([choice(index, output, text)])]

        usage_chunk = (lambda: envelope([], usage.as_json())) if body.include_usage else None
        return r.streaming_response(r.event_stream(outputs, chunks, usage_chunk))

    texts = [echo_text] * body.n
    merged: dict[int, RequestOutput] = {}
    async with contextlib.aclosing(outputs):  # a cancelled call (client gone) aborts every choice
        async for index, output in outputs:
            usage.add(index, output)
            merged[index] = merged[index].merged_with(output) if index in merged else output
    choices = [choice(i, merged[i], texts[i] + merged[i].new_text) for i in range(body.n)]
    return r.json_response(envelope(choices, usage.as_json()))
