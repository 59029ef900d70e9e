"""Workloads are deterministic per index, sized as asked, and prepared to exact token lengths."""

from __future__ import annotations

import json
import random

import pytest

from pagedserve.loadtest.workloads import Workload, prepare, sample_len


def fake_tokenize(text: str, add_special: bool) -> list[int]:
    """One id per word (plus BOS 1 when asked): what the word list aims for."""
    return ([1] if add_special else []) + [100 + len(w) for w in text.split()]


def test_requests_depend_on_seed_and_index_only():
    a, b = Workload("synthetic", seed=3), Workload("synthetic", seed=3)
    assert [a.request(i) for i in (5, 0, 9)] == [b.request(i) for i in (5, 0, 9)]
    assert a.request(1).text != a.request(2).text
    assert Workload("synthetic", seed=4).request(1).text != a.request(1).text


def test_synthetic_lengths_and_defaults():
    w = Workload("synthetic", input_len=40, output_len=7)
    spec = w.request(0)
    assert len(spec.text.split()) == 40 and spec.input_tokens == 40 and spec.max_tokens == 7
    assert Workload("long-context").input_len == 2048 and Workload("synthetic").output_len == 128


def test_length_distributions():
    rng = random.Random(0)
    assert sample_len(rng, 100, "fixed", 0.5) == 100
    uniform = [sample_len(rng, 100, "uniform", 0.25) for _ in range(500)]
    assert min(uniform) >= 75 and max(uniform) <= 125 and len(set(uniform)) > 20
    normal = [sample_len(rng, 100, "normal", 0.1) for _ in range(500)]
    assert 95 < sum(normal) / len(normal) < 105 and min(normal) >= 1
    with pytest.raises(ValueError):
        Workload("synthetic", len_dist="zipf")


def test_prepare_gives_exact_token_counts():
    w = Workload("synthetic", input_len=10)
    prepared = prepare(w.request(0), lambda text, special: fake_tokenize(text, special)[:6])  # too few: padded
    assert len(prepared.prompt_ids) == 10 and prepared.input_tokens == 10
    prepared = prepare(w.request(0), fake_tokenize)  # BOS + 10 words: cut to 10
    assert prepared.prompt_ids[0] == 1 and len(prepared.prompt_ids) == 10
    assert prepare(w.request(0), None).text == w.request(0).text


def test_shared_prefix_is_identical_across_requests():
    w = Workload("shared-prefix", prefix_len=12, input_len=5)
    calls = []

    def tokenize(text, special):
        calls.append(text)
        return fake_tokenize(text, special)

    cache: dict = {}
    p1, p2 = prepare(w.request(0), tokenize, cache), prepare(w.request(1), tokenize, cache)
    assert p1.prompt_ids[:12] == p2.prompt_ids[:12] and p1.prompt_ids[0] == 1
    assert len(p1.prompt_ids) == len(p2.prompt_ids) == 17 and p1.prompt_ids != p2.prompt_ids
    assert len(calls) == 3  # the prefix is tokenized once
    assert w.request(0).text.startswith(w.request(1).text[:40])


def test_chat_and_jsonl(tmp_path):
    spec = Workload("chat", input_len=60, chat_turns=3).request(0)
    roles = [m["role"] for m in spec.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prepare(spec, fake_tokenize).messages == [dict(m) for m in spec.messages]  # chats go as chats
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "a b c", "max_tokens": 3}) + "\n\n"
                    + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    w = Workload("jsonl", dataset=str(path), output_len=9)
    assert (w.request(0).text, w.request(0).max_tokens) == ("a b c", 3)
    assert w.request(1).messages[0]["content"] == "hi" and w.request(1).max_tokens == 9
    assert w.request(2) == Workload("jsonl", dataset=str(path), output_len=9).request(2)  # cycles
    path.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match="prompt"):
        Workload("jsonl", dataset=str(path))
    with pytest.raises(ValueError, match="dataset"):
        Workload("jsonl")


def test_multi_turn_conversations_extend_their_own_earlier_turns():
    w = Workload("multi-turn", prefix_len=30, input_len=5, output_len=2, chat_turns=3, num_prefixes=2,
                 num_conversations=4)
    # turn-major: requests 0-3 are turn 0 of conversations 0-3, requests 4-7 their turn 1, ...
    turns = [[w.request(t * 4 + c) for t in range(3)] for c in range(4)]
    for c, conversation in enumerate(turns):
        for t, spec in enumerate(conversation):
            roles = [m["role"] for m in spec.messages]
            assert roles == ["system"] + ["user", "assistant"] * t + ["user"]
            assert spec.max_tokens == 2
            if t:  # the previous turn's messages are a prefix of this one's
                assert spec.messages[:len(conversation[t - 1].messages)] == conversation[t - 1].messages
        assert len(conversation[0].messages[0]["content"].split()) == 30
    systems = [conversation[0].messages[0]["content"] for conversation in turns]
    assert systems[0] == systems[1] != systems[2] == systems[3]  # neighbours share one of 2 prompts
    assert turns[0][0].messages[1] != turns[1][0].messages[1]    # each conversation its own turns
    assert w.request(5) == Workload("multi-turn", prefix_len=30, input_len=5, output_len=2, chat_turns=3,
                                    num_prefixes=2, num_conversations=4).request(5)
    # after chat_turns turns, new conversations start, on the same system prompts
    fresh = w.request(12)
    assert [m["role"] for m in fresh.messages] == ["system", "user"]
    assert fresh.messages[0] == turns[0][0].messages[0] and fresh.messages[1] != turns[0][0].messages[1]


def test_multi_turn_needs_a_prompt_and_a_conversation():
    with pytest.raises(ValueError, match="num-prefixes"):
        Workload("multi-turn", num_prefixes=0)
