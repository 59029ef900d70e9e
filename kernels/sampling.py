"""Batched token sampling: penalties, greedy, temperature, top-k, top-p, min-p, seeded draws, logprobs.

One row of `logits` per request; rows are independent and processed in parallel (prange). Within a
row nothing sorts the whole vocabulary unless it must:

* greedy rows: vectorised passes (lane-wise max, first argmax, exp sums) plus a top-n pass when
  logprobs are asked;
* no truncation / min-p only: inverse-CDF sampling over the vocabulary in id order (two exp passes);
* top-k: partial selection of the k largest, then a sort of those k;
* top-p: partial-select the 64 most probable tokens (a compare-only pass); when their mass does not
  reach p, a histogram of log-weights (2048 ordered bins) finds the bin holding the cut and only
  that bin is sorted; the draw is an inverse CDF in id order over the kept tokens. Large top-k: np.partition threshold, same scheme.

Logprobs are those of the RAW model distribution (log_softmax of the logits before penalties,
temperature and truncation), as vLLM v1 returns by default.

Randomness is counter-based: the uniform for a row is a hash of (seed, counter) where counter is the
number of tokens the request has generated so far, so a seeded request samples the same tokens
whatever else is in the batch and in whatever order the batch is laid out.

Sorted order of the vocabulary everywhere: value descending, ties broken by the lower token id.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from kernels.fast_exp import exp_f32
from kernels.jit import jit, parallel_jit
from kernels.stack_array import stack_f32


# --------------------------------------------------------------------------------------- random


@jit
def _mix64(z):
    """splitmix64 finalizer (uint64 -> uint64, a bijection with good avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@jit
def seeded_uniform(seed, counter):
    """Uniform float64 in [0, 1) as a pure function of (seed uint64, counter int64)."""
    key = _mix64(np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15))
    z = _mix64(key ^ (np.uint64(counter) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x8CB92BA72F3D8DD7)))
    z = _mix64(z + key)
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


# --------------------------------------------------------------------------------- row helpers


@jit
def _insert_top(vals, ids, filled, n, v, i):
    """Insert (v, i) into the best-first buffer vals/ids (length n, `filled` used). Returns filled.

    Called with increasing i, so equal values keep the earlier (lower) id ahead.
    """
    if filled < n:
        j = filled
        filled += 1
    elif v > vals[n - 1]:
        j = n - 1
    else:
        return filled
    while j > 0 and vals[j - 1] < v:
        vals[j] = vals[j - 1]
        ids[j] = ids[j - 1]
        j -= 1
    vals[j] = v
    ids[j] = i
    return filled


_LANES = 64  # vector lanes of the vectorised passes (a constant trip count LLVM vectorises)


@jit
def _max_argmax_sumexp(x):
    """(max, first argmax, sum exp(x - max)) of a row in vectorised passes: a lane-wise max, a scan
    for the first index holding it, and exp_f32 sums in float32 lanes per 1024 values, added up in
    float64 (relative error ~1e-7 against a float64 sum). About 4x faster than `_raw_pass`."""
    V = x.shape[0]
    lanes = numba.carray(stack_f32(64), (_LANES,))
    for lane in range(_LANES):
        lanes[lane] = -np.inf
    n_full = V // _LANES * _LANES
    for i in range(0, n_full, _LANES):
        for lane in range(_LANES):
            v = x[i + lane]
            c = lanes[lane]
            lanes[lane] = v if v > c else c  # the select form vectorises (vmaxps)
    m = np.float32(-np.inf)
    for lane in range(_LANES):
        if lanes[lane] > m:
            m = lanes[lane]
    for i in range(n_full, V):
        if x[i] > m:
            m = x[i]
    if m == -np.inf:
        return np.float64(m), 0, 0.0
    arg = 0
    for i in range(V):
        if x[i] == m:
            arg = i
            break
    s = 0.0
    for c0 in range(0, n_full, 1024):
        for lane in range(_LANES):
            lanes[lane] = 0.0
        for i in range(c0, min(c0 + 1024, n_full), _LANES):
            for lane in range(_LANES):
                lanes[lane] += exp_f32(x[i + lane] - m)
        part = 0.0
        for lane in range(_LANES):
            part += lanes[lane]
        s += part
    for i in range(n_full, V):
        s += exp_f32(x[i] - m)
    return np.float64(m), arg, s


@jit
def _raw_pass(x, n_top, top_vals, top_ids):
    """(max, first argmax, sum exp(x - max) in float64) of a row, and its n_top best (value, id)
    pairs written best first into top_vals/top_ids (raw logit values). The sums never depend on
    n_top (which is the batch's widest request), so a row's logprob is the same in any batch."""
    m, arg, s = _max_argmax_sumexp(x)
    filled = 0
    for i in range(x.shape[0] if n_top > 0 else 0):
        xv = x[i]
        if filled < n_top or xv > top_vals[n_top - 1]:
            filled = _insert_top(top_vals, top_ids, filled, n_top, xv, i)
    return m, arg, s


@jit
def _argmax(x):
    """(max, first index of the max)."""
    m = x[0]
    arg = 0
    for i in range(1, x.shape[0]):
        if x[i] > m:
            m = x[i]
            arg = i
    return np.float64(m), arg


@jit
def _apply_penalties(x, prompt_ids, output_ids, rep, pres, freq):
    """Apply vLLM penalties to the row in place. Returns (touched ids sorted, their raw values).

    repetition_penalty: every token in prompt or output, once: x > 0 -> x / rep, else x * rep.
    frequency/presence: output tokens only: x -= count * freq + pres.
    """
    V = x.shape[0]
    if rep != 1.0:
        touched = np.unique(np.concatenate((prompt_ids, output_ids)))
    else:
        touched = np.unique(output_ids)
    lo = np.searchsorted(touched, 0)
    hi = np.searchsorted(touched, V)
    touched = touched[lo:hi]
    raw = np.empty(touched.shape[0], np.float32)
    for j in range(touched.shape[0]):
        raw[j] = x[touched[j]]
    if rep != 1.0:
        for j in range(touched.shape[0]):
            t = touched[j]
            v = x[t]
            if v > 0:
                x[t] = v / rep
            else:
                x[t] = v * rep
    if pres != 0.0 or freq != 0.0:
        so = np.sort(output_ids)
        n = so.shape[0]
        i = 0
        while i < n:
            t = so[i]
            j = i + 1
            while j < n and so[j] == t:
                j += 1
            if t >= 0 and t < V:
                x[t] = x[t] - (np.float64(freq) * (j - i) + np.float64(pres))
            i = j
    return touched, raw


@jit
def _top_candidates(x, c):
    """Indices of the c largest entries of x (c small), sorted by value descending then id ascending."""
    V = x.shape[0]
    if c >= V:
        return np.argsort(-x, kind="mergesort")
    vals = np.empty(c, x.dtype)  # small c (<= 64): insertion into a best-first buffer
    ids = np.empty(c, np.int64)
    filled = 0
    for i in range(V):
        v = x[i]
        if filled < c or v > vals[c - 1]:
            filled = _insert_top(vals, ids, filled, c, v, i)
    return ids


@jit
def _mass(x, cand, n, M, inv_t):
    s = 0.0
    for j in range(n):
        s += math.exp((np.float64(x[cand[j]]) - M) * inv_t)
    return s


@jit
def _top_p_cut(x, cand, M, inv_t, limit):
    """Number of leading candidates kept by top-p: token j is kept iff the mass before it < limit.
    Returns -1 when the candidates do not reach the limit (more candidates are needed)."""
    cum = 0.0
    n = cand.shape[0]
    for j in range(n):
        if cum >= limit:
            return j
        cum += math.exp((np.float64(x[cand[j]]) - M) * inv_t)
    if cum >= limit:
        return n
    return -1


@jit
def _sample_threshold(x, M, inv_t, min_p, u, total):
    """Inverse-CDF draw in id order among tokens with weight exp((x-M)/T) >= min_p (min_p may be 0).
    `total` > 0 is the precomputed mass of those tokens (else computed here)."""
    V = x.shape[0]
    if not total > 0.0:
        total = 0.0
        for i in range(V):
            w = math.exp((np.float64(x[i]) - M) * inv_t)
            total += w if w >= min_p else 0.0
    target = u * total
    cum = 0.0
    for i in range(V):
        w = math.exp((np.float64(x[i]) - M) * inv_t)
        cum += w if w >= min_p else 0.0
        if cum > target:  # cum just grew: i is kept and has weight > 0
            return i
    for i in range(V - 1, -1, -1):  # rounding left cum <= target: the last kept token
        w = math.exp((np.float64(x[i]) - M) * inv_t)
        if w > 0.0 and w >= min_p:
            return i
    return _argmax(x)[1]


@jit
def _bin_of(v, M, inv_t, scale, last):
    f = (M - np.float64(v)) * inv_t * scale
    if f >= last:
        return last
    return int(f)


@jit
def _hist_cut(keys, ws, M, kmin, inv_t, limit):
    """Top-p cut without a full sort: bucket the tokens by log-weight into ordered bins, find the
    bin where the cumulative mass crosses `limit`, and sort only that bin's tokens.

    In sorted order (key descending, ties by id) token j is kept iff the mass before it < limit.
    Returns (tau, n_eq): keep every key > tau plus the first n_eq tokens (in id order) with
    key == tau; (-inf, n) when the whole mass stays below limit (rounding): keep everything.
    """
    n = keys.shape[0]
    nb = 2048
    last = nb - 1
    span = (M - np.float64(kmin)) * inv_t  # log-weight range of the candidates
    if span > 60.0:
        span = 60.0  # below exp(-60) everything shares the last bin
    scale = nb / span if span > 0.0 else 0.0
    mass = np.zeros(nb, np.float64)
    cnt = np.zeros(nb, np.int64)
    for j in range(n):
        b = _bin_of(keys[j], M, inv_t, scale, last)
        mass[b] += ws[j]
        cnt[b] += 1
    acc = 0.0
    bb = -1
    for b in range(nb):
        if acc + mass[b] >= limit:
            bb = b
            break
        acc += mass[b]
    if bb < 0:
        return -np.inf, n
    members = np.empty(cnt[bb], np.int64)
    k = 0
    for j in range(n):
        if _bin_of(keys[j], M, inv_t, scale, last) == bb:
            members[k] = j
            k += 1
    neg = np.empty(k, keys.dtype)
    for t in range(k):
        neg[t] = -keys[members[t]]
    order = np.argsort(neg, kind="mergesort")  # stable: ties stay in id order
    tau = keys[members[order[0]]]
    n_eq = 0
    for t in range(k):
        if acc >= limit:
            break
        j = members[order[t]]
        if keys[j] != tau:
            tau = keys[j]
            n_eq = 0
        n_eq += 1
        acc += ws[j]
    return tau, n_eq


@jit
def _sample_prefix(x, cand, n_keep, M, inv_t, min_p, u):
    """Draw among the first n_keep of the sorted candidates, after min-p."""
    if min_p > 0.0:
        j = 1  # the first candidate has weight 1 >= min_p
        while j < n_keep and math.exp((np.float64(x[cand[j]]) - M) * inv_t) >= min_p:
            j += 1
        n_keep = j
    total = _mass(x, cand, n_keep, M, inv_t)
    target = u * total
    cum = 0.0
    for j in range(n_keep):
        cum += math.exp((np.float64(x[cand[j]]) - M) * inv_t)
        if cum > target:
            return cand[j]
    return cand[n_keep - 1]


@jit
def _top_k_id_order(x, k):
    """Indices (in id order) of the k largest entries of x, ties by lower id (k < len(x))."""
    V = x.shape[0]
    part = np.partition(x, V - k)
    thr = part[V - k]  # the k-th largest value
    n_gt = 0
    for i in range(V):
        if x[i] > thr:
            n_gt += 1
    need_eq = k - n_gt
    cand = np.empty(k, np.int64)
    j = 0
    for i in range(V):
        v = x[i]
        if v > thr:
            cand[j] = i
            j += 1
        elif v == thr and need_eq > 0:
            cand[j] = i
            j += 1
            need_eq -= 1
    return cand


@jit
def _sample_sorted(x, M, inv_t, top_k, top_p, min_p, u):
    """Draw with top-k and/or top-p (and min-p).

    Small top-k, and top-p reached within the 64 most probable tokens: a sorted candidate prefix.
    Otherwise: candidates in id order (all tokens or the top-k), a weighted quickselect for the
    top-p cut, and an inverse-CDF draw in id order over the kept tokens.
    """
    V = x.shape[0]
    use_k = top_k > 0 and top_k < V
    if use_k and top_k <= 64:
        cand = _top_candidates(x, top_k)
        n_keep = cand.shape[0]
        if top_p < 1.0:
            limit = np.float64(top_p) * _mass(x, cand, n_keep, M, inv_t)
            n = _top_p_cut(x, cand, M, inv_t, limit)
            if n > 0:
                n_keep = n
        return _sample_prefix(x, cand, n_keep, M, inv_t, min_p, u)

    if use_k:
        cand = _top_k_id_order(x, top_k)
        keys = np.empty(top_k, x.dtype)
        for j in range(top_k):
            keys[j] = x[cand[j]]
    else:
        cand = np.empty(0, np.int64)
        keys = x
    n = keys.shape[0]
    ws = np.empty(n, np.float64)
    z = 0.0
    kmin = keys[0]
    for j in range(n):
        v = keys[j]
        w = math.exp((np.float64(v) - M) * inv_t)
        ws[j] = w
        z += w
        if v < kmin:
            kmin = v
    tau = -np.inf
    n_eq = n
    if top_p < 1.0:
        limit = np.float64(top_p) * z
        if not use_k:
            # peaked distributions: the cut is usually within the 64 most probable tokens
            first = _top_candidates(x, min(64, V))
            n_first = _top_p_cut(x, first, M, inv_t, limit)
            if n_first > 0:
                return _sample_prefix(x, first, n_first, M, inv_t, min_p, u)
        tau, n_eq = _hist_cut(keys, ws, M, kmin, inv_t, limit)
    # inverse CDF in id order over the kept candidates (ties at tau: the first n_eq in id order)
    if n_eq < n:
        seen_eq = 0
        for j in range(n):
            if keys[j] == tau:
                seen_eq += 1
                if seen_eq > n_eq:
                    ws[j] = 0.0
    total = 0.0
    for j in range(n):
        w = ws[j]
        keep = keys[j] >= tau and w >= min_p
        total += w if keep else 0.0
    target = u * total
    cum = 0.0
    for j in range(n):
        w = ws[j]
        cum += w if (keys[j] >= tau and w >= min_p) else 0.0
        if cum > target:  # cum just grew: j is kept and has weight > 0
            return cand[j] if use_k else j
    for j in range(n - 1, -1, -1):  # rounding left cum <= target: the last kept token
        w = ws[j]
        if keys[j] >= tau and w >= min_p and w > 0.0:
            return cand[j] if use_k else j
    return _argmax(x)[1]


# ------------------------------------------------------------------------------------- kernels


@jit
def _sample_row(
    b,
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    repetition_penalty,
    presence_penalty,
    frequency_penalty,
    penalty_token_ids,
    penalty_offsets,
    output_token_ids,
    output_offsets,
    seeds,
    counters,
    num_top,
    out_ids,
    out_logprobs,
    out_top_ids,
    out_top_logprobs,
):
    """Row b of sample_rows."""
    V = logits.shape[1]
    n_top = min(num_top, V)
    width = out_top_ids.shape[1]
    x = logits[b]
    top_vals = out_top_logprobs[b]
    top_ids = out_top_ids[b]
    for j in range(width):
        top_vals[j] = -np.inf
        top_ids[j] = -1
    m_raw, arg_raw, s_raw = _raw_pass(x, n_top, top_vals, top_ids)
    lse = m_raw + math.log(s_raw)
    for j in range(n_top):
        top_vals[j] = np.float32(np.float64(top_vals[j]) - lse)

    rep = repetition_penalty[b]
    pres = presence_penalty[b]
    freq = frequency_penalty[b]
    has_pen = rep != 1.0 or pres != 0.0 or freq != 0.0
    touched = np.empty(0, np.int32)
    raw = np.empty(0, np.float32)
    M = m_raw
    arg = arg_raw
    if has_pen:
        if rep != 1.0:
            pids = penalty_token_ids[penalty_offsets[b] : penalty_offsets[b + 1]]
        else:
            pids = penalty_token_ids[0:0]
        oids = output_token_ids[output_offsets[b] : output_offsets[b + 1]]
        touched, raw = _apply_penalties(x, pids, oids, rep, pres, freq)
        if touched.shape[0] > 0:
            M, arg = _argmax(x)

    t_b = temperature[b]
    if t_b == 0.0:
        tok = arg
    else:
        u = seeded_uniform(seeds[b], counters[b])
        inv_t = 1.0 / np.float64(t_b)
        k_b = top_k[b]
        p_b = top_p[b]
        mp_b = np.float64(min_p[b])
        if (k_b > 0 and k_b < V) or p_b < 1.0:
            tok = _sample_sorted(x, M, inv_t, k_b, p_b, mp_b, u)
        else:
            total = 0.0
            if mp_b <= 0.0 and t_b == 1.0 and touched.shape[0] == 0:
                total = s_raw
            tok = _sample_threshold(x, M, inv_t, mp_b, u, total)

    raw_logit = x[tok]
    if touched.shape[0] > 0:
        k = np.searchsorted(touched, tok)
        if k < touched.shape[0] and touched[k] == tok:
            raw_logit = raw[k]
    out_ids[b] = tok
    out_logprobs[b] = np.float32(np.float64(raw_logit) - lse)


@parallel_jit
def sample_rows(
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    repetition_penalty,
    presence_penalty,
    frequency_penalty,
    penalty_token_ids,
    penalty_offsets,
    output_token_ids,
    output_offsets,
    seeds,
    counters,
    num_top,
    out_ids,
    out_logprobs,
    out_top_ids,
    out_top_logprobs,
):
    """Sample one token per row of logits [B, V] f32.

    Per-row parameters are arrays of length B. penalty_token_ids/penalty_offsets pack each row's
    PROMPT token ids (row b: ids[offsets[b]:offsets[b+1]]; only read when its repetition penalty is
    != 1), output_token_ids/output_offsets its OUTPUT token ids (read when any penalty is on).
    The uniform of row b is seeded_uniform(seeds[b], counters[b]).

    Writes out_ids[b] (sampled token), out_logprobs[b] (its raw log-probability) and the num_top best
    (id, raw logprob) pairs of the raw distribution, best first (ties: lower id), in
    out_top_ids/out_top_logprobs [B, max(num_top, 1)]; unused slots get id -1 and -inf.
    On return, rows with penalties hold the penalized logits (temperature not applied).
    """
    for b in numba.prange(logits.shape[0]):
        _sample_row(
            b, logits, temperature, top_k, top_p, min_p,
            repetition_penalty, presence_penalty, frequency_penalty,
            penalty_token_ids, penalty_offsets, output_token_ids, output_offsets,
            seeds, counters, num_top, out_ids, out_logprobs, out_top_ids, out_top_logprobs,
        )  # fmt: skip


@jit
def sample_rows_serial(
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    repetition_penalty,
    presence_penalty,
    frequency_penalty,
    penalty_token_ids,
    penalty_offsets,
    output_token_ids,
    output_offsets,
    seeds,
    counters,
    num_top,
    out_ids,
    out_logprobs,
    out_top_ids,
    out_top_logprobs,
):
    """sample_rows on the calling thread only (B == 1 or tiny batches: no thread-pool wake-up)."""
    for b in range(logits.shape[0]):
        _sample_row(
            b, logits, temperature, top_k, top_p, min_p,
            repetition_penalty, presence_penalty, frequency_penalty,
            penalty_token_ids, penalty_offsets, output_token_ids, output_offsets,
            seeds, counters, num_top, out_ids, out_logprobs, out_top_ids, out_top_logprobs,
        )  # fmt: skip


@parallel_jit
def log_softmax_topk(logits, k, out_ids, out_logprobs):
    """Top-k (id, logprob) of log_softmax of each row of logits [B, V] f32, best first (ties: lower
    id), into out_ids [B, k] int32 / out_logprobs [B, k] f32. Slots beyond V get -1 / -inf."""
    B = logits.shape[0]
    V = logits.shape[1]
    n = min(k, V)
    for b in numba.prange(B):
        vals = out_logprobs[b]
        ids = out_ids[b]
        for j in range(k):
            vals[j] = -np.inf
            ids[j] = -1
        m, arg, s = _raw_pass(logits[b], n, vals, ids)
        lse = m + math.log(s)
        for j in range(n):
            vals[j] = np.float32(np.float64(vals[j]) - lse)
