import pytest

from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.stop_checker import StopChecker


class CharDetokenizer:
    """Token id -> chr(id); flush returns a pending tail to show it is released."""

    def __init__(self, tail=""):
        self.tail = tail

    def push(self, token_ids):
        return "".join(chr(t) for t in token_ids)

    def flush(self):
        tail, self.tail = self.tail, ""
        return tail


def feed(checker, text, max_model_len=1000):
    results = []
    for i, ch in enumerate(text, start=1):
        r = checker.append(ord(ch), i, i + 5)
        results.append(r)
        if r.finish_reason:
            break
    return results


def create_checker(stop=(), max_tokens=100, stop_ids=frozenset(), tail="", **kw):
    params = SamplingParams(max_tokens=max_tokens, stop=stop, **kw)
    return StopChecker(params, stop_ids, max_model_len=1000, detokenizer=CharDetokenizer(tail))


def test_holds_back_possible_stop_prefix_and_cuts_the_match():
    results = feed(create_checker(stop=("END",)), "abENxEND!")
    assert [r.new_text for r in results] == ["a", "b", "", "", "ENx", "", "", ""]
    assert results[-1].finish_reason == "stop" and results[-1].stop_reason == "END"


def test_earliest_of_several_stop_strings_wins():
    results = feed(create_checker(stop=("cd", "bcde")), "abcdef")
    assert "".join(r.new_text for r in results) == "ab" and results[-1].stop_reason == "cd"


def test_length_releases_held_text_and_flushes():
    results = feed(create_checker(stop=("xyz",), max_tokens=3, tail="!"), "abx")
    assert [r.new_text for r in results] == ["a", "b", "x!"]
    assert results[-1].finish_reason == "length"


def test_eos_and_ignore_eos():
    eos = ord("q")
    assert feed(create_checker(stop_ids=frozenset({eos})), "abq")[-1].stop_reason == eos
    r = feed(create_checker(stop_ids=frozenset({eos}), ignore_eos=True, max_tokens=3), "abq")[-1]
    assert r.finish_reason == "length" and r.new_text == "q"


def test_model_context_length():
    checker = StopChecker(SamplingParams(max_tokens=100), frozenset(), max_model_len=7, detokenizer=None)
    assert checker.append(5, 1, 6).finish_reason is None
    assert checker.append(5, 2, 7).finish_reason == "length"


def test_stop_strings_need_a_detokenizer():
    with pytest.raises(ValueError):
        StopChecker(SamplingParams(stop=("a",)), frozenset(), 10, None)
