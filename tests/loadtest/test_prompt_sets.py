"""The shipped prompt sets (grounded tasks, free-chat questions): they load, fit the token range
with SmolLM2's chat template, come in a seeded order, and are selectable from the loadtest command line."""

from __future__ import annotations

import pytest

from pagedserve.loadtest.prompt_sets import (
    DATA_DIR,
    GROUNDED_KINDS,
    SOURCE_PLACEHOLDER,
    free_chat_prompts,
    grounded_prompts,
    load_prompt_set,
    seeded_order,
)
from pagedserve.loadtest.workloads import Workload, prepare


def test_grounded_tasks_quote_their_whole_source():
    items = grounded_prompts()
    assert 20 <= len(items) <= 40 and len({i.name for i in items}) == len(items)
    assert {i.kind for i in items} == set(GROUNDED_KINDS)
    for item in items:
        source = (DATA_DIR / "grounded" / item.source).read_text(encoding="utf-8").rstrip("\n")
        assert source in item.content and SOURCE_PLACEHOLDER not in item.content, item.name
        assert len(item.content) > len(source) + 20, item.name  # an instruction besides the text
        assert item.messages == ({"role": "user", "content": item.content},)
    sources = {item.source for item in items}
    shipped = {str(p.relative_to(DATA_DIR / "grounded")) for p in (DATA_DIR / "grounded").rglob("*.txt")}
    assert sources == shipped  # every shipped text is used, and nothing else
    assert any(s.startswith("code/") for s in sources) and any(s.startswith("texts/") for s in sources)


def test_free_chat_questions_have_nothing_to_copy():
    items = free_chat_prompts()
    assert 20 <= len(items) <= 40 and len({i.content for i in items}) == len(items)
    assert all(not i.content.startswith("#") and i.source == "" and len(i.content) < 200 for i in items)


def test_grounded_prompts_are_200_to_800_tokens_with_the_chat_template(smollm2_tokenizer):
    lengths = {i.name: len(smollm2_tokenizer.encode_chat(list(i.messages))) for i in grounded_prompts()}
    assert all(200 <= n <= 800 for n in lengths.values()), lengths
    chat = [len(smollm2_tokenizer.encode_chat(list(i.messages))) for i in free_chat_prompts()]
    assert max(chat) < 100


def test_seeded_order_is_a_fixed_permutation_per_seed():
    n = len(grounded_prompts())
    order = seeded_order("grounded", 0)
    assert sorted(order) == list(range(n)) and order == seeded_order("grounded", 0)
    assert order != seeded_order("grounded", 1) and order != list(range(n))
    with pytest.raises(ValueError, match="unknown prompt set"):
        load_prompt_set("nope")


@pytest.mark.parametrize("name", ["grounded", "free-chat"])
def test_workload_takes_every_prompt_once_before_repeating(name):
    items = load_prompt_set(name)
    w = Workload(name, seed=3)
    specs = [w.request(i) for i in range(len(items) + 2)]
    contents = [s.messages[0]["content"] for s in specs]
    assert sorted(contents[:len(items)]) == sorted(i.content for i in items)
    assert contents[len(items):] == contents[:2]  # then the same order again
    assert [Workload(name, seed=3).request(i) for i in (5, 0)] == [specs[5], specs[0]]
    assert Workload(name, seed=4).request(0) != specs[0] or Workload(name, seed=4).request(1) != specs[1]
    assert all(s.max_tokens == 256 and s.input_tokens > 0 for s in specs)
    assert Workload(name, output_len=9).request(0).max_tokens == 9
    prepared = prepare(specs[0], lambda text, special: [1, 2, 3])
    assert prepared.messages == [{"role": "user", "content": contents[0]}] and prepared.prompt_ids is None


@pytest.mark.parametrize("name", ["grounded", "free-chat"])
def test_names_are_selectable_on_the_loadtest_command_line(name, capsys):
    from pagedserve.loadtest.cli import build_parser

    assert build_parser().parse_args(["--workload", name]).workload == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--workload", name + "-typo"])
    assert "invalid choice" in capsys.readouterr().err
