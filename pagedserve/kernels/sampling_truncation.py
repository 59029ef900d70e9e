"""Truncated sampling of one row: top-k, top-p, min-p and the inverse-CDF draws (see sampling.py).

Sorted order of the vocabulary everywhere: value descending, ties broken by the lower token id.
"""

from __future__ import annotations

import math

import numpy as np

from pagedserve.kernels.jit import jit
from pagedserve.kernels.sampling_row_stats import first_argmax, insert_top


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
            filled = insert_top(vals, ids, filled, c, v, i)
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
def sample_threshold(x, M, inv_t, min_p, u, total):
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
    return first_argmax(x)[1]


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
def sample_sorted(x, M, inv_t, top_k, top_p, min_p, u):
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
    return first_argmax(x)[1]
