"""POST /v1/completions: text (or token ids) in, OpenAI `text_completion` objects out."""

from __future__ import annotations

import contextlib
from typing import Any, Awaitable, Callable, Optional, Sequence

from pagedserve.model.tokenizer import Tokenizer
from pagedserve.sampled_token import SampledToken
from pagedserve.scheduler.request import PromptLogprobs, RequestOutput
from pagedserve.service.http import responses as r
from pagedserve.service.http.choices import choice_outputs
from pagedserve.service.http.protocol import CompletionRequest
from pagedserve.service.http.to_engine import choice_request, completion_request
from pagedserve.service.servicer import Backend


class _Logprobs:
    """OpenAI completions logprobs of one choice: tokens, token_logprobs, top_logprobs, text_offset.

    `top_logprobs` holds the num_top best alternatives and the token itself (OpenAI: "up to
    logprobs + 1" entries). text_offset counts characters of the token strings from the start of
    the choice's text: from 0 when the prompt's own logprobs come first (echo), else from the end
    of the echoed text."""

    def __init__(self, tokenizer: Tokenizer, num_top: int, offset: int):
        self.tokenizer, self.num_top, self.offset = tokenizer, num_top, offset

    def _add(self, out: dict, token_id: int, logprob: Optional[float],
             top: Optional[Sequence[tuple[int, float]]]) -> None:
        text = lambda i: r.token_string(self.tokenizer, i)  # noqa: E731
        token = text(token_id)
        out["tokens"].append(token)
        out["token_logprobs"].append(logprob)
        if top is None:
            out["top_logprobs"].append(None)
        else:
            alternatives = {text(i): lp for i, lp in top[:self.num_top]}
            alternatives.setdefault(token, logprob)
            out["top_logprobs"].append(alternatives)
        out["text_offset"].append(self.offset)
        self.offset += len(token)

    def of(self, sampled: list[SampledToken], prompt: Optional[tuple[Sequence[int], PromptLogprobs]] = None) -> dict:
        """The entries of `sampled`, after those of the prompt when `prompt` (its ids and the
        engine's prompt logprobs) is given: the first prompt token has no logprob (None)."""
        out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        if prompt is not None:
            prompt_ids, entries = prompt
            self._add(out, prompt_ids[0], None, None)
            for entry in entries[1:]:
                self._add(out, entry.token_id, entry.logprob, entry.top_logprobs)
        for s in sampled:
            self._add(out, s.token_id, s.logprob, s.top_logprobs)
        return out


async def create_completion(body: CompletionRequest, backend: Backend, owner: str, model_name: str,
                            run_off_loop: Callable[..., Awaitable[Any]]):
    """The response to `body`; a text prompt is tokenized by `run_off_loop` (in the tokenizer
    threads, off the event loop), token ids are only checked."""
    engine, tokenizer = backend.engine, backend.engine.tokenizer
    if isinstance(body.prompt, str):
        request = await run_off_loop(completion_request, body, tokenizer, backend.limits)
    else:
        request = completion_request(body, tokenizer, backend.limits)
    echo_text = ""
    if body.echo:
        echo_text = body.prompt if isinstance(body.prompt, str) else tokenizer.decode(request.prompt_token_ids)
    echo_logprobs = request.params.prompt_logprobs > 0
    logprobs = ([_Logprobs(tokenizer, body.logprobs, 0 if echo_logprobs else len(echo_text)) for _ in range(body.n)]
                if body.logprobs is not None else None)
    # The prompt's logprobs arrive once, on choice 0's output that completes the prompt; the other
    # choices' first outputs come after it (they fork from it), and every choice echoes them.
    prompt_logprobs: list[PromptLogprobs] = []
    cid, created = r.new_id("cmpl"), r.now()
    usage = r.Usage()
    outputs = await r.primed(choice_outputs(engine, choice_request(request, body.n), owner))

    def choice(index: int, output: RequestOutput, text: str, first: bool) -> dict:
        if output.prompt_logprobs is not None and not prompt_logprobs:
            prompt_logprobs.append(output.prompt_logprobs)
        entries = None
        if logprobs is not None:
            with_prompt = first and echo_logprobs and prompt_logprobs
            prompt = (request.prompt_token_ids, prompt_logprobs[0]) if with_prompt else None
            entries = logprobs[index].of(output.new_logprobs, prompt)
        return {"index": index, "text": text, "logprobs": entries,
                "finish_reason": r.finish_reason(output), "stop_reason": output.stop_reason if output.finished else None}

    def envelope(choices: list[dict], with_usage: Optional[dict] = None) -> dict:
        body_ = {"id": cid, "object": "text_completion", "created": created, "model": model_name,
                 "choices": choices}
        if with_usage is not None:
            body_["usage"] = with_usage
        return body_

    if body.stream:
        started: set[int] = set()
        # The chunks between a choice's first and its last carry only text (when no logprobs).
        text_events = r.TextChunkEvents(lambda index, text: envelope([
            {"index": index, "text": text, "logprobs": None, "finish_reason": None, "stop_reason": None}]))

        def chunks(index: int, output: RequestOutput) -> list[dict | str]:
            usage.add(index, output)
            first = index not in started
            if not first and logprobs is None and not output.finished:
                return [text_events.event(index, output.new_text)]
            started.add(index)
            text = echo_text + output.new_text if body.echo and first else output.new_text
            return [envelope([choice(index, output, text, first)])]

        usage_chunk = (lambda: envelope([], usage.as_json())) if body.include_usage else None
        return r.streaming_response(r.event_stream(outputs, chunks, usage_chunk))

    merged: dict[int, RequestOutput] = {}
    async with contextlib.aclosing(outputs):  # a cancelled call (client gone) aborts every choice
        async for index, output in outputs:
            usage.add(index, output)
            merged[index] = merged[index].merged_with(output) if index in merged else output
    choices = [choice(i, merged[i], echo_text + merged[i].new_text, True) for i in range(body.n)]
    return r.json_response(envelope(choices, usage.as_json()))
