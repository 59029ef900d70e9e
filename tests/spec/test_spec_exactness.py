"""Speculative decoding with the real models gives exactly the tokens of no speculation.

Greedy: identical token ids with the n-gram proposer and with adversarial drafts (always right,
always wrong, random; injected through the proposer interface), alone and in mixed batches, with
prefix caching, chunked prefill, int8 KV and Gemma 3's sliding-window layers. Sampled with a seed:
identical tokens too (the verification samples every position with the random number plain
sampling uses there). Stop strings inside accepted drafts end the output there; aborts leak nothing.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pagedserve.engine.engine_factory import EngineArgs, build_engine
from pagedserve.sampling_params import SamplingParams
from tests.conftest import data_path

MAX_TOKENS = 24


def greedy(max_tokens=MAX_TOKENS, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def ids_of(outputs) -> list[list[int]]:
    return [list(o.new_token_ids) for o in outputs]


def fidelity_prompts(name: str, max_len: int = 10_000) -> list[list[int]]:
    meta = json.load(open(data_path(f"oracle_{name}.json")))
    arrays = np.load(data_path(f"oracle_{name}.npz"))
    prompts = [[int(t) for t in arrays[f"{p['key']}_prompt_ids"]] for p in meta["prompts"]]
    return [p for p in prompts if len(p) <= max_len]


def random_prompts(seed: int, num: int, vocab: int = 49152) -> list[list[int]]:
    """Random ids with a repeated stretch in each, so prompt lookup finds something to propose."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(num):
        stretch = rng.integers(1, vocab, int(rng.integers(4, 12))).tolist()
        head = rng.integers(1, vocab, int(rng.integers(1, 20))).tolist()
        prompts.append(head + stretch * int(rng.integers(2, 4)) + rng.integers(1, vocab, 3).tolist())
    return prompts


class ReplayProposer:
    """Adversarial drafts from known outputs: "right" replays them, "wrong" shifts every token by
    one, "random" corrupts tokens and lengths at random (a seeded generator)."""

    def __init__(self, prompts, outputs, kind: str, seed: int = 0, vocab: int = 49152):
        self.references = [(list(p), list(o)) for p, o in zip(prompts, outputs)]
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.num_calls = 0

    def propose(self, request_ids, contexts, num_drafts):
        self.num_calls += 1
        drafts = []
        for context, n in zip(contexts, num_drafts):
            context = context.tolist()
            [(prompt, output)] = [(p, o) for p, o in self.references if context[:len(p)] == p]
            done = len(context) - len(prompt)
            future = output[done:done + n]
            if self.kind == "wrong":
                future = [(t + 1) % self.vocab for t in future]
            elif self.kind == "random":
                future = [t if self.rng.random() < 0.6 else int(self.rng.integers(self.vocab)) for t in future]
                future = future[:int(self.rng.integers(0, n + 1))]
            drafts.append(np.asarray(future, np.int32))
        return drafts


@pytest.fixture(scope="module")
def reference(make_engine):
    """Greedy ids without speculation: the fidelity prompts and random prompts, in one batch."""
    prompts = fidelity_prompts("smollm2") + random_prompts(0, 6)
    return prompts, ids_of(make_engine().generate(prompts, greedy()))


def spec_engine(make_engine, **overrides):
    return make_engine(speculative="ngram", num_draft_tokens=4, **overrides)


def test_ngram_speculation_gives_the_same_ids_in_a_batch_and_alone(make_engine, reference):
    prompts, want = reference
    engine = spec_engine(make_engine)
    assert ids_of(engine.generate(prompts, greedy(speculative=4))) == want
    for i in (0, 3, len(prompts) - 1):  # alone, auto mode
        assert ids_of(engine.generate([prompts[i]], greedy())) == [want[i]]
    stats = engine.stats()
    assert stats.num_accepted_draft_tokens > 0 and stats.num_draft_tokens > stats.num_accepted_draft_tokens
    assert stats.num_blocks_used_all_groups == 0


@pytest.mark.parametrize("kind", ["right", "wrong", "random"])
def test_adversarial_drafts_give_the_same_ids(make_engine, reference, kind):
    prompts, want = reference
    engine = spec_engine(make_engine)
    engine.runner.proposer = proposer = ReplayProposer(prompts, want, kind, seed=1)
    params = [greedy(speculative=k) for k in (4, 1, 3, 4, 2, 4, 4, 3, 1, 4, 2, 4, 3, 4, 4)[:len(prompts)]]
    assert ids_of(engine.generate(prompts, params)) == want
    stats = engine.stats()
    assert proposer.num_calls > 0 and stats.num_draft_tokens > 0
    if kind == "right":
        assert stats.num_accepted_draft_tokens == stats.num_draft_tokens
    if kind == "wrong":
        assert stats.num_accepted_draft_tokens == 0


def test_prefix_caching_and_chunked_prefill_with_speculation(make_engine):
    shared = random_prompts(5, 1)[0] * 3  # a long shared prefix, served from the cache after the first
    prompts = [shared + tail for tail in random_prompts(6, 4)]
    config = dict(max_num_batched_tokens=40, long_prefill_token_threshold=24)
    want = ids_of(make_engine(enable_prefix_caching=False, **config).generate(prompts, greedy()))
    engine = spec_engine(make_engine, enable_prefix_caching=True, **config)
    engine.runner.proposer = ReplayProposer(prompts, want, "random", seed=2)
    got = [ids_of(engine.generate([p], greedy(speculative=4)))[0] for p in prompts[:2]]  # cache filled
    got += ids_of(engine.generate(prompts[2:], greedy(speculative=4)))  # hits, in a batch
    assert got == want
    stats = engine.stats()
    assert stats.num_prefix_hit_tokens > 0 and stats.num_draft_tokens > 0


def test_int8_kv_cache_with_speculation(make_engine, reference):
    prompts = reference[0][:4]
    want = ids_of(make_engine(kv_dtype="int8").generate(prompts, greedy()))
    engine = spec_engine(make_engine, kv_dtype="int8")
    engine.runner.proposer = ReplayProposer(prompts, want, "random", seed=3)
    assert ids_of(engine.generate(prompts, greedy(speculative=4))) == want


def test_seeded_sampling_gives_the_same_tokens_with_speculation(make_engine, reference):
    prompts = reference[0][:6]
    params = [SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.01, repetition_penalty=1.1,
                             presence_penalty=0.1, frequency_penalty=0.1, seed=100 + i, max_tokens=20,
                             ignore_eos=True, logprobs=2) for i in range(len(prompts))]
    off = make_engine().generate(prompts, params)
    engine = spec_engine(make_engine)
    engine.runner.proposer = ReplayProposer(prompts, ids_of(off), "random", seed=4)
    on = engine.generate(prompts, [dataclasses.replace(p, speculative=4) for p in params])
    assert ids_of(on) == ids_of(off)
    assert [[t.top_logprobs for t in o.new_logprobs] for o in on] == [[t.top_logprobs for t in o.new_logprobs]
                                                                      for o in off]
    assert engine.stats().num_accepted_draft_tokens > 0


def test_stop_string_inside_accepted_drafts_is_never_overrun(make_engine, smollm2_tokenizer, reference):
    prompts, want = reference
    prompt, full = prompts[0], want[0]
    text = smollm2_tokenizer.decode(full)
    stop = text[len(text) // 2:len(text) // 2 + 3]
    engine = spec_engine(make_engine)
    engine.runner.proposer = ReplayProposer([prompt], [full], "right")
    [out] = engine.generate([prompt], greedy(stop=(stop,), speculative=8))
    [plain] = make_engine().generate([prompt], greedy(stop=(stop,)))
    assert out.finish_reason == plain.finish_reason == "stop" and out.stop_reason == stop
    assert (out.new_token_ids, out.new_text) == (plain.new_token_ids, plain.new_text)
    assert stop not in out.new_text
    assert list(out.new_token_ids) == full[:len(out.new_token_ids)]


def test_abort_with_speculation_frees_every_block(make_engine, reference):
    prompts, want = reference
    engine = spec_engine(make_engine)
    engine.runner.proposer = ReplayProposer(prompts, want, "right")
    ids = [engine.add_request(p, greedy(speculative=4)) for p in prompts[:4]]
    for _ in range(3):
        engine.step()
    assert engine.stats().num_draft_tokens > 0
    for request_id in ids:
        engine.abort_request(request_id)
    engine.step()
    assert engine.stats().num_blocks_used_all_groups == 0 and not engine.has_unfinished_requests()


@pytest.mark.slow
def test_gemma3_sliding_window_with_speculation(gemma3_model):
    prompts = fidelity_prompts("gemma3")
    assert max(len(p) for p in prompts) > 512  # past the local layers' window
    prompts = [max(prompts, key=len)] + prompts[:2]
    args = EngineArgs(num_kv_blocks=160, kv_cache_memory=None)
    off, _ = build_engine(args, model=gemma3_model, warm_up=False)
    want = ids_of(off.generate(prompts, greedy(16)))
    on, _ = build_engine(EngineArgs(num_kv_blocks=160, kv_cache_memory=None, speculative="ngram"),
                         model=gemma3_model, warm_up=False)
    vocab = gemma3_model.config.vocab_size
    for kind in ("random", "wrong"):
        on.runner.proposer = ReplayProposer(prompts, want, kind, seed=5, vocab=vocab)
        assert ids_of(on.generate(prompts, greedy(16, speculative=4))) == want, kind
    assert on.stats().num_draft_tokens > 0 and on.stats().num_window_freed_blocks > 0


@pytest.mark.slow
def test_many_random_prompts_under_preemption_give_the_same_ids(make_engine):
    """48 random prompts through a cache too small for all of them (preemption and recompute), with
    the n-gram proposer, then with random drafts: the ids of no speculation."""
    prompts = random_prompts(11, 48)
    config = dict(num_kv_blocks=48, max_num_seqs=24)
    off = make_engine(**config)
    want = ids_of(off.generate(prompts, greedy(16)))
    engine = spec_engine(make_engine, prompt_lookup_min=1, **config)
    assert ids_of(engine.generate(prompts, greedy(16, speculative=4))) == want
    engine.runner.proposer = ReplayProposer(prompts, want, "random", seed=12)
    assert ids_of(engine.generate(prompts, greedy(16))) == want
    stats = engine.stats()
    assert stats.num_preemptions > 0 and stats.num_accepted_draft_tokens > 0
    assert stats.num_blocks_used_all_groups == 0


def test_n_choices_with_speculation_equal_those_without(make_engine):
    """The choices of an n > 1 request fork from the prompt's blocks (copy-on-write), then each
    speculates on its own: the same tokens per choice as without speculation."""
    prompts = random_prompts(21, 2)
    params = [SamplingParams(n=3, temperature=0.7, top_k=20, seed=5, max_tokens=16, ignore_eos=True),
              SamplingParams(n=2, temperature=0.0, max_tokens=16, ignore_eos=True)]
    want = ids_of(make_engine().generate(prompts, params))
    engine = spec_engine(make_engine, prompt_lookup_min=1)
    got = ids_of(engine.generate(prompts, [dataclasses.replace(p, speculative=4) for p in params]))
    assert got == want and len(got) == 5
    assert engine.stats().num_draft_tokens > 0 and engine.stats().num_blocks_used_all_groups == 0
