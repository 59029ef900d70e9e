"""kernels.sampling against plain NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagedserve.kernels.sampling import (RowParams, SampledRows, log_softmax_topk, sample_rows, sample_rows_serial,
                                         seeded_uniform)

# ----------------------------------------------------------------------------- NumPy references


def ref_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def ref_penalize(x, prompt, output, rep, pres, freq):
    """vLLM penalties in NumPy (float32 logits, float32 parameters)."""
    x = np.array(x, np.float32)
    V = x.shape[0]
    rep, pres, freq = np.float32(rep), np.float32(pres), np.float32(freq)
    prompt = np.asarray(prompt, np.int64)
    output = np.asarray(output, np.int64)
    if rep != 1:
        toks = np.unique(np.concatenate([prompt, output]))
        v = x[toks]
        x[toks] = np.where(v > 0, v / rep, v * rep)
    counts = np.bincount(output, minlength=V)
    y = x.astype(np.float64) - (np.float64(freq) * counts + np.float64(pres) * (counts > 0))
    return np.where(counts > 0, y, x).astype(np.float32)


def sorted_order(x):
    """Value descending, ties by lower id."""
    return np.argsort(-np.asarray(x), kind="stable")


def ref_probs(x, temperature, top_k, top_p, min_p, slack=0.0):
    """Final sampling distribution over the vocabulary (float64) after temperature, top-k, top-p,
    min-p and renormalisation. `slack` > 0 relaxes the top-p / min-p cuts (a superset, to absorb
    floating-point differences at the boundary when testing membership)."""
    x = np.asarray(x, np.float32)
    V = x.shape[0]
    temperature, top_p, min_p = np.float32(temperature), np.float32(top_p), np.float32(min_p)
    probs = np.exp(ref_log_softmax(x.astype(np.float64) / np.float64(temperature)))
    order = sorted_order(x)
    n = top_k if 0 < top_k < V else V
    ps = probs[order[:n]]
    ps = ps / ps.sum()
    if top_p < 1:
        cum_before = np.cumsum(ps) - ps
        n = max(1, int(np.count_nonzero(cum_before < np.float64(top_p) * (1 + slack))))
    if min_p > 0:
        n = max(1, int(np.count_nonzero(ps[:n] >= np.float64(min_p) * ps[0] * (1 - slack))))
    keep = np.zeros(V, bool)
    keep[order[:n]] = True
    final = np.where(keep, probs, 0.0)
    return final / final.sum()


# --------------------------------------------------------------------------------- kernel call


def run(
    logits,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    rep=1.0,
    pres=0.0,
    freq=0.0,
    prompts=None,
    outputs=None,
    seeds=0,
    counters=0,
    num_top=0,
    kernel=sample_rows,
):
    """Call sample_rows with per-row scalars or arrays; returns (ids, logprobs, top_ids, top_lps)."""
    logits = np.ascontiguousarray(logits, np.float32)  # float32 input is modified in place
    B = logits.shape[0]

    def col(v, dtype):
        a = np.asarray(v, dtype)
        return np.ascontiguousarray(np.broadcast_to(a, (B,)))

    def pack(seqs):
        seqs = seqs if seqs is not None else [[] for _ in range(B)]
        off = np.zeros(B + 1, np.int64)
        off[1:] = np.cumsum([len(s) for s in seqs])
        ids = np.concatenate([np.asarray(s, np.int32) for s in seqs] + [np.empty(0, np.int32)])
        return ids.astype(np.int32), off

    p_ids, p_off = pack(prompts)
    o_ids, o_off = pack(outputs)
    width = max(num_top, 1)
    params = RowParams(
        col(temperature, np.float32), col(top_k, np.int32), col(top_p, np.float32), col(min_p, np.float32),
        col(rep, np.float32), col(pres, np.float32), col(freq, np.float32), p_ids, p_off, o_ids, o_off,
        col(seeds, np.uint64), col(counters, np.int64),
    )
    out = SampledRows(np.empty(B, np.int32), np.empty(B, np.float32), np.empty((B, width), np.int32),
                      np.empty((B, width), np.float32))
    kernel(logits, params, num_top, out)
    return out


def chi_square_ok(samples, probs):
    """Pearson chi-square of sample counts vs probs (bins with expected < 5 merged); True when
    the statistic is below dof + 6*sqrt(2*dof) (about a 1e-5 false-alarm rate)."""
    n = len(samples)
    counts = np.bincount(samples, minlength=len(probs)).astype(np.float64)
    expected = probs * n
    big = expected >= 5
    obs = list(counts[big]) + [counts[~big].sum()]
    exp = list(expected[big]) + [expected[~big].sum()]
    obs, exp = np.array(obs), np.array(exp)
    if exp[-1] < 1e-9:
        obs, exp = obs[:-1], exp[:-1]
    dof = max(len(exp) - 1, 1)
    stat = float(((obs - exp) ** 2 / exp).sum())
    return stat < dof + 6 * np.sqrt(2 * dof), stat, dof


# -------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("V", [7, 50, 1000, 49152])
def test_greedy_is_argmax_and_logprobs_match(V):
    rng = np.random.default_rng(V)
    x = (rng.standard_normal((5, V)) * 3).astype(np.float32)
    ids, lp, tid, tlp = run(x, temperature=0.0, num_top=5)
    np.testing.assert_array_equal(ids, x.argmax(axis=1))
    ref = ref_log_softmax(x)
    np.testing.assert_allclose(lp, ref[np.arange(5), ids], atol=1e-5)
    n = min(5, V)
    for b in range(5):
        order = sorted_order(x[b])[:n]
        np.testing.assert_array_equal(tid[b, :n], order)
        np.testing.assert_allclose(tlp[b, :n], ref[b, order], atol=1e-5)
        assert (tid[b, n:] == -1).all()


def test_greedy_ties_lowest_id_and_top_ties():
    x = np.array([[0.0, 2.0, 1.0, 2.0, 2.0, -1.0, 1.0]], np.float32)
    ids, lp, tid, tlp = run(x, temperature=0.0, num_top=5)
    assert ids[0] == 1
    assert tid[0].tolist() == [1, 3, 4, 2, 6]
    np.testing.assert_allclose(tlp[0], ref_log_softmax(x[0])[[1, 3, 4, 2, 6]], atol=1e-6)


def test_neg_inf_logits():
    x = np.array([[-np.inf, 1.0, -np.inf, 0.5, -np.inf]], np.float32)
    ids, lp, tid, tlp = run(x, temperature=0.0, num_top=4)
    assert ids[0] == 1
    assert tid[0, :2].tolist() == [1, 3]
    np.testing.assert_allclose(lp[0], ref_log_softmax(x[0])[1], atol=1e-6)
    assert tlp[0, 2] == -np.inf
    for seed in range(20):
        ids, *_ = run(x, temperature=1.0, seeds=seed)
        assert ids[0] in (1, 3)


@pytest.mark.parametrize("V", [7, 50, 1000, 49152])
def test_penalties_match_numpy(V):
    rng = np.random.default_rng(V + 1)
    B = 6
    x = (rng.standard_normal((B, V)) * 2).astype(np.float32)
    prompts = [rng.integers(0, V, rng.integers(0, 30)).tolist() for _ in range(B)]
    outputs = [rng.integers(0, min(V, 20), rng.integers(0, 40)).tolist() for _ in range(B)]
    rep = np.array([1.0, 1.3, 0.8, 1.0, 1.0, 1.7], np.float32)
    pres = np.array([0.0, 0.0, 0.0, 0.5, -0.4, 1.0], np.float32)
    freq = np.array([0.0, 0.0, 0.0, 0.3, 0.0, -0.2], np.float32)
    work = x.copy()
    ids, lp, tid, tlp = run(work, temperature=0.0, rep=rep, pres=pres, freq=freq, prompts=prompts, outputs=outputs, num_top=3)
    ref_raw = ref_log_softmax(x)
    for b in range(B):
        pen = ref_penalize(x[b], prompts[b], outputs[b], rep[b], pres[b], freq[b])
        assert ids[b] == int(np.argmax(pen))
        # logprobs are of the RAW distribution, before penalties
        np.testing.assert_allclose(lp[b], ref_raw[b, ids[b]], atol=1e-5)
        np.testing.assert_array_equal(tid[b], sorted_order(x[b])[:3])
    # The kernel leaves the penalized logits in place; compare them with the reference exactly.
    ref_pen = np.stack([ref_penalize(x[b], prompts[b], outputs[b], rep[b], pres[b], freq[b]) for b in range(B)])
    np.testing.assert_allclose(work, ref_pen, rtol=1e-6, atol=1e-6)


def test_penalty_examples():
    x = np.array([[2.0, -2.0, 1.0, 0.5, 3.0]], np.float32)
    # repetition 2 on prompt token 0 and output token 1: 2 -> 1, -2 -> -4
    work = x.copy()
    run(work, temperature=0.0, rep=2.0, prompts=[[0]], outputs=[[1, 1]])
    np.testing.assert_allclose(work[0], [1.0, -4.0, 1.0, 0.5, 3.0])
    # presence/frequency on output only (token 4 twice, token 2 once); prompt ignored
    work = x.copy()
    run(work, temperature=0.0, pres=0.5, freq=1.0, prompts=[[3]], outputs=[[4, 2, 4]])
    np.testing.assert_allclose(work[0], [2.0, -2.0, -0.5, 0.5, 0.5])


def test_seeded_uniform_properties():
    u = np.array([seeded_uniform(7, c) for c in range(20000)])
    assert ((u >= 0) & (u < 1)).all()
    assert len(np.unique(u)) == len(u)
    hist = np.histogram(u, bins=20, range=(0, 1))[0]
    assert chi_square_ok(np.repeat(np.arange(20), hist), np.full(20, 0.05))[0]
    v = np.array([seeded_uniform(s, 0) for s in range(20000)])
    assert len(np.unique(v)) == len(v)
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.05
    assert seeded_uniform(7, 3) == seeded_uniform(7, 3)


@pytest.mark.parametrize("V", [7, 50, 1000])
def test_plain_sampling_is_exact_softmax_inverse_cdf(V):
    """top_p=1, top_k=0, min_p=0, T=1: token = inverse CDF of softmax (id order) at the row's uniform."""
    rng = np.random.default_rng(V + 2)
    x = (rng.standard_normal(V) * 2).astype(np.float32)
    N = 3000
    seeds = np.arange(N, dtype=np.uint64) * 7919 + 11
    ids, lp, *_ = run(np.tile(x, (N, 1)), seeds=seeds, counters=5)
    cdf = np.cumsum(np.exp(ref_log_softmax(x)))
    u = np.array([seeded_uniform(s, 5) for s in seeds])
    expected = np.minimum(np.searchsorted(cdf, u, side="right"), V - 1)
    assert (ids == expected).mean() > 0.999
    assert chi_square_ok(ids, np.exp(ref_log_softmax(x)))[0]
    np.testing.assert_allclose(lp, ref_log_softmax(x)[ids], atol=1e-5)


CASES = [
    # (V, temperature, top_k, top_p, min_p)
    (7, 1.0, 3, 1.0, 0.0),
    (7, 0.7, 0, 0.8, 0.0),
    (7, 1.3, 0, 1.0, 0.2),
    (50, 1.0, 10, 1.0, 0.0),
    (50, 0.8, 0, 0.9, 0.0),
    (50, 1.5, 20, 0.7, 0.0),
    (50, 1.0, 0, 1.0, 0.1),
    (50, 1.2, 30, 0.95, 0.05),
    (50, 2.0, 0, 0.6, 0.3),
    (1000, 1.0, 100, 1.0, 0.0),  # top-k above the small-buffer path
    (1000, 0.9, 0, 0.5, 0.0),
    (1000, 1.0, 0, 0.99, 0.0),  # progressive top-p needs several rounds
]


@pytest.mark.parametrize("V,temperature,top_k,top_p,min_p", CASES)
def test_truncated_sampling_distribution(V, temperature, top_k, top_p, min_p):
    rng = np.random.default_rng(V * 31 + top_k)
    scale = 3.0 if V < 1000 else 1.0
    x = (rng.standard_normal(V) * scale).astype(np.float32)
    N = 4000
    seeds = np.arange(N, dtype=np.uint64) + 1000
    ids, lp, *_ = run(np.tile(x, (N, 1)), temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seeds=seeds)
    probs = ref_probs(x, temperature, top_k, top_p, min_p)
    allowed = ref_probs(x, temperature, top_k, top_p, min_p, slack=1e-5) > 0
    assert allowed[ids].all()
    ok, stat, dof = chi_square_ok(ids, probs)
    assert ok, (stat, dof)
    np.testing.assert_allclose(lp, ref_log_softmax(x)[ids], atol=1e-5)


@pytest.mark.parametrize(
    "temperature,top_k,top_p,min_p,scale",
    [
        (1.0, 40, 1.0, 0.0, 3.0),
        (0.8, 0, 0.9, 0.0, 3.0),  # typical peaked distribution: first candidate round
        (1.0, 0, 0.9, 0.0, 0.3),  # flat distribution: top-p needs (almost) the whole vocab
        (1.0, 0, 0.5, 0.0, 1.0),  # needs a middle round
        (1.0, 2000, 0.8, 0.02, 1.0),
        (0.7, 0, 1.0, 0.05, 2.0),
        (1.0, 0, 1.0, 0.0, 2.0),
    ],
)
def test_large_vocab_allowed_set(temperature, top_k, top_p, min_p, scale):
    V = 49152
    rng = np.random.default_rng(int(scale * 10) + top_k)
    x = (rng.standard_normal((8, V)) * scale).astype(np.float32)
    ids, lp, *_ = run(x, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seeds=np.arange(8, dtype=np.uint64))
    for b in range(8):
        allowed = ref_probs(x[b], temperature, top_k, top_p, min_p, slack=1e-5) > 0
        assert allowed[ids[b]]
    np.testing.assert_allclose(lp, ref_log_softmax(x)[np.arange(8), ids], atol=1e-5)


def test_top_k_with_ties_uses_lower_ids():
    V = 1000
    rng = np.random.default_rng(5)
    x = np.round(rng.standard_normal(V) * 2).astype(np.float32)  # many ties
    for k in (5, 64, 65, 300):
        ids, *_ = run(np.tile(x, (300, 1)), top_k=k, seeds=np.arange(300, dtype=np.uint64), temperature=5.0)
        allowed = set(sorted_order(x)[:k].tolist())
        assert set(ids.tolist()) <= allowed


def test_top_k_one_and_tiny_top_p_are_greedy():
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((20, 300)) * 2).astype(np.float32)
    seeds = np.arange(20, dtype=np.uint64)
    for kw in ({"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}):
        ids, *_ = run(x, seeds=seeds, **kw)
        np.testing.assert_array_equal(ids, x.argmax(axis=1))


def test_seed_reproducible_whatever_the_batch():
    V = 1000
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, V)) * 2).astype(np.float32)
    temps = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    top_k = rng.integers(0, 60, 16).astype(np.int32)
    top_p = rng.uniform(0.5, 1.0, 16).astype(np.float32)
    rep = np.where(np.arange(16) % 3 == 0, 1.2, 1.0).astype(np.float32)
    freq = np.where(np.arange(16) % 4 == 1, 0.5, 0.0).astype(np.float32)
    prompts = [rng.integers(0, V, 10).tolist() for _ in range(16)]
    outputs = [rng.integers(0, V, 5).tolist() for _ in range(16)]
    seeds = rng.integers(0, 2**63, 16).astype(np.uint64)
    counters = rng.integers(0, 100, 16)

    def call(rows):
        rows = list(rows)
        return run(
            x[rows], temperature=temps[rows], top_k=top_k[rows], top_p=top_p[rows], rep=rep[rows], freq=freq[rows],
            prompts=[prompts[r] for r in rows], outputs=[outputs[r] for r in rows],
            seeds=seeds[rows], counters=counters[rows],
        )[0]  # fmt: skip

    batch = call(range(16))
    alone = np.array([call([r])[0] for r in range(16)])
    perm = rng.permutation(16)
    permuted = np.empty(16, np.int32)
    permuted[perm] = call(perm)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(batch, permuted)


def test_different_counters_or_seeds_give_different_draws():
    V = 1000
    x = np.zeros((200, V), np.float32)  # uniform distribution: draws reveal the uniforms
    a = run(x, seeds=42, counters=np.arange(200))[0]
    b = run(x, seeds=np.arange(200, dtype=np.uint64), counters=0)[0]
    assert len(set(a.tolist())) > 150
    assert len(set(b.tolist())) > 150
    assert (run(x, seeds=42, counters=np.arange(200))[0] == a).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    V=st.integers(2, 400),
    data_seed=st.integers(0, 2**32 - 1),
    temperature=st.floats(0.05, 4.0),
    top_k=st.integers(0, 450),
    top_p=st.floats(0.01, 1.0),
    min_p=st.floats(0.0, 0.9),
    scale=st.sampled_from([0.01, 1.0, 5.0]),
    rep=st.sampled_from([1.0, 1.3, 0.7]),
    pres=st.sampled_from([0.0, 0.5, -1.0]),
    seed=st.integers(0, 2**64 - 1),
    counter=st.integers(0, 10**6),
)
def test_property_sampled_token_is_allowed(V, data_seed, temperature, top_k, top_p, min_p, scale, rep, pres, seed, counter):
    rng = np.random.default_rng(data_seed)
    x = (rng.standard_normal(V) * scale).astype(np.float32)
    if V > 3:
        x[rng.integers(0, V, V // 3)] = x[0]  # some ties
    prompt = rng.integers(0, V, 5).tolist()
    output = rng.integers(0, V, 5).tolist()
    ids, lp, *_ = run(
        x[None].copy(), temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, rep=rep, pres=pres,
        prompts=[prompt], outputs=[output], seeds=np.uint64(seed), counters=counter,
    )  # fmt: skip
    pen = ref_penalize(x, prompt, output, rep, pres, 0.0)
    allowed = ref_probs(pen, temperature, top_k, top_p, min_p, slack=1e-5) > 0
    assert allowed[ids[0]]
    np.testing.assert_allclose(lp[0], ref_log_softmax(x)[ids[0]], atol=1e-5)


@pytest.mark.parametrize("V,k", [(7, 3), (7, 10), (50, 5), (1000, 64), (49152, 20), (50, 0)])
def test_log_softmax_topk(V, k):
    rng = np.random.default_rng(V + k)
    x = (rng.standard_normal((9, V)) * 2).astype(np.float32)
    targets = rng.integers(0, V, 9).astype(np.int32)  # mostly outside the top k
    targets[0] = -1  # no target: NaN
    targets[1] = V  # outside the vocabulary: NaN
    targets[2] = int(sorted_order(x[2])[0])  # the best token: equal to its top-k entry
    ids = np.empty((9, k), np.int32)
    lps = np.empty((9, k), np.float32)
    target_lps = np.empty(9, np.float32)
    log_softmax_topk(x, k, targets, ids, lps, target_lps)
    ref = ref_log_softmax(x)
    n = min(k, V)
    for b in range(9):
        order = sorted_order(x[b])[:n]
        np.testing.assert_array_equal(ids[b, :n], order)
        np.testing.assert_allclose(lps[b, :n], ref[b, order], atol=1e-5)
        assert (ids[b, n:] == -1).all() and (lps[b, n:] == -np.inf).all()
    assert np.isnan(target_lps[:2]).all()
    np.testing.assert_allclose(target_lps[2:], ref[np.arange(2, 9), targets[2:]], atol=1e-5)
    if k:
        assert target_lps[2] == lps[2, 0]  # bit-equal: the same arithmetic as the top-k values


def test_serial_kernel_matches_parallel():
    V = 1000
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((12, V)) * 2).astype(np.float32)
    kw = dict(
        temperature=np.array([0, 1, 0.7, 1.2] * 3, np.float32),
        top_k=np.array([0, 0, 40, 0, 200, 0] * 2, np.int32),
        top_p=np.array([1, 0.9, 1, 0.8] * 3, np.float32),
        min_p=np.array([0, 0, 0.05] * 4, np.float32),
        rep=np.array([1, 1.2] * 6, np.float32),
        prompts=[rng.integers(0, V, 8).tolist() for _ in range(12)],
        outputs=[rng.integers(0, V, 4).tolist() for _ in range(12)],
        seeds=np.arange(12, dtype=np.uint64),
        counters=7,
        num_top=3,
    )
    a = run(x.copy(), **kw)
    b = run(x.copy(), kernel=sample_rows_serial, **kw)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
