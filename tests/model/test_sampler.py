"""model.sampler.Sampler: parameter plumbing, seeds, counters, logprobs, penalties."""

from __future__ import annotations

import numpy as np
import pytest

from pagedserve.model.sampler import Sampler
from pagedserve.sampling_params import SamplingParams
from pagedserve.sampled_token import SampledToken


def log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def make_logits(B, V, seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal((B, V)) * scale).astype(np.float32)


def test_greedy_and_logprobs():
    V = 50
    x = make_logits(4, V)
    s = Sampler(V)
    params = [SamplingParams(temperature=0.0, logprobs=n) for n in (0, 1, 3, 20)]
    out = s.sample(x.copy(), params, [[1, 2]] * 4, [[]] * 4, [0] * 4)
    ref = log_softmax(x)
    assert all(isinstance(t, SampledToken) for t in out)
    for b, t in enumerate(out):
        assert t.token_id == int(x[b].argmax())
        assert abs(t.logprob - ref[b, t.token_id]) < 1e-5
        n = params[b].logprobs
        assert len(t.top_logprobs) == n
        order = np.argsort(-x[b], kind="stable")[:n]
        assert [i for i, _ in t.top_logprobs] == order.tolist()
        np.testing.assert_allclose([lp for _, lp in t.top_logprobs], ref[b, order], atol=1e-5)
        assert all(isinstance(i, int) and isinstance(lp, float) for i, lp in t.top_logprobs)


def test_no_logprobs_anywhere():
    V = 7
    out = Sampler(V).sample(make_logits(2, V), [SamplingParams(), SamplingParams(temperature=0)], [[], []], [[], []], [1, 2])
    assert [t.top_logprobs for t in out] == [[], []]


def test_params_seed_overrides_passed_seed_and_counter_is_output_length():
    V = 1000
    x = make_logits(1, V, scale=0.1)  # close to uniform: different uniforms -> different tokens
    s = Sampler(V)
    p = SamplingParams(seed=1234)
    a = s.sample(x.copy(), [p], [[]], [[5, 6, 7]], [1])[0].token_id
    b = s.sample(x.copy(), [p], [[]], [[5, 6, 7]], [999])[0].token_id
    assert a == b
    # without params.seed the passed seed decides
    q = SamplingParams()
    draws = {s.sample(x.copy(), [q], [[]], [[]], [seed])[0].token_id for seed in range(50)}
    assert len(draws) > 30
    # the counter is len(output_token_ids): only the length matters (no penalties), not the content
    c1 = s.sample(x.copy(), [q], [[]], [[1, 2, 3]], [77])[0].token_id
    c2 = s.sample(x.copy(), [q], [[]], [[9, 9, 9]], [77])[0].token_id
    assert c1 == c2
    counters = {s.sample(x.copy(), [q], [[]], [[0] * n], [77])[0].token_id for n in range(50)}
    assert len(counters) > 30


def test_reproducible_whatever_else_is_in_the_batch():
    V = 1000
    B = 16
    rng = np.random.default_rng(1)
    x = make_logits(B, V, seed=2)
    params = [
        SamplingParams(
            temperature=float(rng.uniform(0.5, 1.5)),
            top_k=int(rng.integers(0, 50)),
            top_p=float(rng.uniform(0.6, 1.0)),
            min_p=float(rng.choice([0.0, 0.05])),
            repetition_penalty=float(rng.choice([1.0, 1.2])),
            frequency_penalty=float(rng.choice([0.0, 0.4])),
            seed=int(rng.integers(0, 2**40)) if b % 2 else None,
            logprobs=int(b % 4),
        )
        for b in range(B)
    ]
    prompts = [rng.integers(0, V, 12).tolist() for _ in range(B)]
    outputs = [rng.integers(0, V, int(rng.integers(0, 9))).tolist() for _ in range(B)]
    seeds = rng.integers(0, 2**62, B).tolist()
    s = Sampler(V)

    def call(rows):
        return s.sample(
            x[rows].copy(), [params[r] for r in rows], [prompts[r] for r in rows], [outputs[r] for r in rows],
            [seeds[r] for r in rows],
        )  # fmt: skip

    full = call(list(range(B)))
    perm = rng.permutation(B).tolist()
    permuted = dict(zip(perm, call(perm)))
    for b in range(B):
        alone = call([b])[0]
        assert alone == full[b] == permuted[b]


def test_penalties_only_where_asked():
    V = 20
    x = np.zeros((3, V), np.float32)
    x[:, 4] = 1.0
    x[:, 5] = 0.9
    params = [
        SamplingParams(temperature=0.0),  # no penalty: 4 wins
        SamplingParams(temperature=0.0, repetition_penalty=2.0),  # 4 in prompt: 0.5 < 0.9 -> 5
        SamplingParams(temperature=0.0, presence_penalty=0.5),  # 4 in prompt only: no effect -> 4
    ]
    out = Sampler(V).sample(x, params, [[4], [4], [4]], [[], [], []], [0, 0, 0])
    assert [t.token_id for t in out] == [4, 5, 4]
    # logprob stays that of the raw distribution
    assert abs(out[1].logprob - log_softmax(np.array([0] * 4 + [1.0, 0.9] + [0] * 14))[5]) < 1e-5
    out = Sampler(V).sample(
        np.tile(x[:1], (2, 1)),
        [SamplingParams(temperature=0.0, frequency_penalty=0.2), SamplingParams(temperature=0.0, frequency_penalty=0.2)],
        [[], []],
        [[4], [6]],
        [0, 0],
    )
    assert [t.token_id for t in out] == [5, 4]


def test_seed_for_new_request():
    a = Sampler(10, rng_seed=3)
    b = Sampler(10, rng_seed=3)
    sa = [a.seed_for_new_request() for _ in range(5)]
    assert sa == [b.seed_for_new_request() for _ in range(5)]
    assert len(set(sa)) == 5
    assert all(isinstance(v, int) and 0 <= v < 2**64 for v in sa)


def test_accepts_other_dtypes_and_big_or_negative_seeds():
    V = 50
    x = make_logits(2, V).astype(np.float64)
    out = Sampler(V).sample(x, [SamplingParams(seed=2**64 - 1), SamplingParams()], [[], []], [[], []], [0, -5])
    assert all(0 <= t.token_id < V for t in out)


def test_prompt_logprobs_helper():
    V = 100
    x = make_logits(5, V)
    targets = [3, 50, 99, -1, int(np.argmax(x[4]))]
    rows = Sampler.prompt_logprobs(x, 4, targets)
    ref = log_softmax(x)
    for b, row in enumerate(rows):
        order = np.argsort(-x[b], kind="stable")[:4]
        assert [i for i, _ in row.top_logprobs] == order.tolist()
        np.testing.assert_allclose([lp for _, lp in row.top_logprobs], ref[b, order], atol=1e-5)
        assert row.token_id == targets[b]
        if targets[b] >= 0:
            assert abs(row.logprob - ref[b, targets[b]]) < 1e-5
    assert np.isnan(rows[3].logprob)
    assert rows[4].logprob == rows[4].top_logprobs[0][1]
    no_top = Sampler.prompt_logprobs(x, 0, targets)
    assert [r.top_logprobs for r in no_top] == [[]] * 5
    assert [r.logprob for r in no_top[:3]] == [r.logprob for r in rows[:3]]


@pytest.mark.parametrize("V", [7, 49152])
def test_sampled_distribution_matches_softmax(V):
    """T=1, no truncation: over many seeded requests the empirical distribution is the softmax."""
    x = make_logits(1, V, seed=V, scale=1.0 if V < 100 else 4.0)
    N = 2000
    s = Sampler(V)
    params = [SamplingParams(seed=i) for i in range(N)]
    out = s.sample(np.tile(x, (N, 1)), params, [[]] * N, [[]] * N, [0] * N)
    ids = np.array([t.token_id for t in out])
    p = np.exp(log_softmax(x[0]))
    if V > 100:  # compare the mass of the top tokens and the rest
        order = np.argsort(-p)[:5]
        p = np.append(p[order], 1 - p[order].sum())
        ids = np.array([list(order).index(i) if i in order else 5 for i in ids])
    counts = np.bincount(ids, minlength=len(p))
    exp = p * N
    stat = ((counts - exp) ** 2 / exp).sum()
    dof = len(p) - 1
    assert stat < dof + 6 * np.sqrt(2 * dof), stat
