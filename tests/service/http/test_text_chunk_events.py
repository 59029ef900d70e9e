"""TextChunkEvents renders the same bytes as building the chunk's dict and encoding it with sse."""

import json

from hypothesis import given, settings, strategies as st

from pagedserve.service.http.responses import TextChunkEvents, sse


def completion_chunk(model: str):
    return lambda index, text: {"id": "cmpl-1", "object": "text_completion", "created": 1765000000, "model": model,
                                "choices": [{"index": index, "text": text, "logprobs": None,
                                             "finish_reason": None, "stop_reason": None}]}


def chat_chunk(index: int, text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1765000000, "model": "m",
            "choices": [{"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]}


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 10_000), text=st.text(), model=st.text(max_size=20))
def test_events_equal_sse_of_the_dict(index, text, model):
    make = completion_chunk(model)
    assert TextChunkEvents(make).event(index, text) == sse(make(index, text))
    assert TextChunkEvents(chat_chunk).event(index, text) == sse(chat_chunk(index, text))


def test_texts_that_need_escaping_round_trip():
    events = TextChunkEvents(chat_chunk)
    for text in ('"quoted"', "back\\slash", "new\nline", "\x00\x01", "é😀", "\u2028", "</script>"):
        payload = json.loads(events.event(3, text)[len("data: "):])
        assert payload["choices"][0] == {"index": 3, "delta": {"content": text}, "logprobs": None,
                                         "finish_reason": None}


def test_an_envelope_holding_a_marker_falls_back_to_sse():
    """A model name that happens to contain the markers cannot corrupt the events."""
    for model in (str(TextChunkEvents._INDEX), TextChunkEvents._TEXT):
        make = completion_chunk(model)
        events = TextChunkEvents(make)
        assert events._parts is None
        assert events.event(2, "hi") == sse(make(2, "hi"))
