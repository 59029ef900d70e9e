"""`pagedserve bench --workload grounded|free-chat`: the copy fraction on handcrafted sequences,
and the run over the session's model (its figures are consistent; no claim on output quality)."""

from __future__ import annotations

import json

import pytest

from pagedserve.bench.prompt_set_run import ngram_copy_counts, ngram_copy_fraction, prompt_set_ids
from pagedserve.loadtest.prompt_sets import grounded_prompts, seeded_order


def test_copy_fraction_on_words():
    prompt = "the quick brown fox jumps over the lazy dog".split()
    # 4-grams of the output: "the quick brown fox" (in the prompt), "quick brown fox sleeps" (not).
    assert ngram_copy_fraction("the quick brown fox sleeps".split(), prompt) == 0.5
    assert ngram_copy_fraction(prompt, prompt) == 1.0
    assert ngram_copy_fraction("a b c d e f".split(), prompt) == 0.0
    # 5 start positions; "fox jumps over the" (in the prompt) counts at both of its positions, the
    # three 4-grams bridging the repeat ("jumps over the fox", ...) are not in the prompt.
    output = "fox jumps over the fox jumps over the".split()
    assert ngram_copy_counts(output, prompt) == (2, 5)
    # Spans across the prompt's word boundaries that the prompt never has in that order do not count.
    assert ngram_copy_counts("lazy dog the quick".split(), prompt) == (0, 1)


def test_copy_fraction_on_characters_token_ids_and_short_outputs():
    # Character 3-grams of "abcdxyz": abc, bcd, cdx, dxy, xyz; the prompt has abc and bcd.
    assert ngram_copy_counts("abcdxyz", "zzabcde", n=3) == (2, 5)
    assert ngram_copy_fraction([5, 6, 7, 8, 9], [1, 5, 6, 7, 8, 2]) == 0.5
    assert ngram_copy_fraction([5, 6, 7], [5, 6, 7, 8]) is None  # no 4-gram in the output
    assert ngram_copy_counts([5, 6, 7, 8], [5, 6, 7]) == (0, 1)  # the prompt is shorter than n
    assert ngram_copy_fraction("ab", "xab", n=1) == 1.0
    with pytest.raises(ValueError):
        ngram_copy_counts("ab", "ab", n=0)


def test_prompt_ids_follow_the_seeded_order(smollm2_tokenizer):
    items, order = grounded_prompts(), seeded_order("grounded", 2)
    prompts = prompt_set_ids(smollm2_tokenizer, "grounded", len(items) + 1, seed=2)
    assert [name for name, _ in prompts] == [items[k].name for k in order] + [items[order[0]].name]
    first = items[order[0]]
    assert prompts[0][1] == smollm2_tokenizer.encode_chat([{"role": "user", "content": first.content}])


def test_bench_workload_grounded_runs_single_and_concurrent(smollm2_model, monkeypatch, capsys):
    """Greedy generation for 3 grounded prompts through the bench command line. The copy fraction
    is printed for the record; only its consistency is asserted, not the model's quality."""
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    assert main(["--log-level", "WARNING", "bench", "--json", "--bandwidth-probe-mib", "0", "--prefill-tokens", "0",
                 "--batch-sizes", "", "--decode-tokens", "24", "--workload", "grounded", "--workload-prompts", "3",
                 "--concurrency", "2", "--num-kv-blocks", "128"]) == 0
    result = json.loads(capsys.readouterr().out)
    w = result["workload"]
    print("grounded copy fraction of SmolLM2-135M, 24 tokens:", w["copy_fraction"],
          [p["copy_fraction"] for p in w["prompts"]])
    assert "concurrency" not in result  # the workload's prompts replace the random ones
    items, order = grounded_prompts(), seeded_order("grounded", 0)
    assert [p["name"] for p in w["prompts"]] == [items[k].name for k in order[:3]]
    single = w["single_stream"]
    assert single["num_requests"] == 3 and single["prompt_tokens"] == sum(p["prompt_tokens"] for p in w["prompts"])
    assert single["generated_tokens"] == sum(p["generated_tokens"] for p in w["prompts"])
    assert all(200 <= p["prompt_tokens"] <= 800 and 1 <= p["generated_tokens"] <= 24 for p in w["prompts"])
    assert single["generated_tok_s"] > 0 and w["copy_ngram"] == 4
    fractions = [p["copy_fraction"] for p in w["prompts"] if p["copy_fraction"] is not None]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert (w["copy_fraction"] is None) == (not fractions)
    concurrent = w["concurrent"]
    assert concurrent["n"] == 2 and concurrent["num_requests"] == 2
    # Greedy output does not depend on the batch: the pair generates what the first two did alone.
    assert concurrent["generated_tokens"] == w["prompts"][0]["generated_tokens"] + w["prompts"][1]["generated_tokens"]
    assert concurrent["prompt_tokens"] == w["prompts"][0]["prompt_tokens"] + w["prompts"][1]["prompt_tokens"]


def test_bench_workload_text_report(smollm2_model, monkeypatch, capsys):
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    assert main(["--log-level", "WARNING", "bench", "--bandwidth-probe-mib", "0", "--prefill-tokens", "0",
                 "--batch-sizes", "", "--decode-tokens", "4", "--workload", "free-chat", "--workload-prompts", "2",
                 "--num-kv-blocks", "64"]) == 0
    report = capsys.readouterr().out
    assert "workload free-chat: 2 prompts (seed 0)" in report and "4-grams found in the prompt" in report
    assert "at once" not in report  # no --concurrency: single stream only


@pytest.mark.parametrize("name", ["grounded", "free-chat"])
def test_names_are_selectable_on_the_bench_command_line(name, capsys):
    from pagedserve.bench.bench import BenchOptions
    from pagedserve.cli.main import build_parser
    from pagedserve.dataclass_flags import dataclass_from_cli_args

    ns = build_parser().parse_args(["bench", "--workload", name, "--workload-prompts", "3"])
    options = dataclass_from_cli_args(BenchOptions, ns)
    assert (options.workload, options.workload_prompts) == (name, 3)
    assert build_parser().parse_args(["bench"]).workload is None  # off by default
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--workload", name + "-typo"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workload_prompts"):
        BenchOptions(workload=name, workload_prompts=0)


def test_a_model_without_chat_template_gets_the_plain_text():
    from pagedserve.bench.prompt_set_run import prompt_set_ids

    class PlainTokenizer:  # a base model's tokenizer: no template; encode records its input
        chat_template = None

        def __init__(self):
            self.texts = []

        def encode(self, text):
            self.texts.append(text)
            return [len(self.texts)]

        def encode_chat(self, messages):
            raise AssertionError("no template to apply")

    tokenizer = PlainTokenizer()
    ids = prompt_set_ids(tokenizer, "grounded", 2, seed=0)
    assert [i for _, i in ids] == [[1], [2]]
    assert all(len(text) > 200 and text.endswith("\n\n") for text in tokenizer.texts)
