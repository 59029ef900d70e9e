"""Batched token sampling: penalties, greedy, temperature, top-k, top-p, min-p, seeded draws, logprobs.

One row of `logits` per request; rows are independent and processed in parallel (prange). Row
statistics live in sampling_row_stats.py, truncated draws in sampling_truncation.py. Within a
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
from typing import NamedTuple

import numba
import numpy as np

from pagedserve.kernels.jit import jit, parallel_jit
from pagedserve.kernels.sampling_row_stats import first_argmax, raw_pass
from pagedserve.kernels.sampling_truncation import sample_sorted, sample_threshold


class RowParams(NamedTuple):
    """The per-row parameters of a batch of B rows (each array of length B unless noted)."""

    temperature: np.ndarray  # float32; 0 = greedy
    top_k: np.ndarray  # int32; 0 = off
    top_p: np.ndarray  # float32
    min_p: np.ndarray  # float32
    repetition_penalty: np.ndarray  # float32
    presence_penalty: np.ndarray  # float32
    frequency_penalty: np.ndarray  # float32
    # Row b's PROMPT ids are penalty_token_ids[penalty_offsets[b]:penalty_offsets[b+1]] (int32,
    # offsets int64 [B+1]); only read when its repetition penalty is != 1.
    penalty_token_ids: np.ndarray
    penalty_offsets: np.ndarray
    # Row b's OUTPUT ids, packed the same way; read when any penalty is on.
    output_token_ids: np.ndarray
    output_offsets: np.ndarray
    seeds: np.ndarray  # uint64
    counters: np.ndarray  # int64: the uniform of row b is seeded_uniform(seeds[b], counters[b])


class SampledRows(NamedTuple):
    """Where the kernels write their results (B rows; W = max(num_top, 1))."""

    token_ids: np.ndarray  # [B] int32: the sampled token
    logprobs: np.ndarray  # [B] float32: its raw log-probability
    top_ids: np.ndarray  # [B, W] int32: the num_top best tokens of the raw distribution, best first
    top_logprobs: np.ndarray  # [B, W] float32


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


# ------------------------------------------------------------------------------------- kernels


@jit
def _sample_row(b, logits, params, num_top, out):
    """Row b of sample_rows."""
    V = logits.shape[1]
    n_top = min(num_top, V)
    width = out.top_ids.shape[1]
    x = logits[b]
    top_vals = out.top_logprobs[b]
    top_ids = out.top_ids[b]
    for j in range(width):
        top_vals[j] = -np.inf
        top_ids[j] = -1
    m_raw, arg_raw, s_raw = raw_pass(x, n_top, top_vals, top_ids)
    lse = m_raw + math.log(s_raw)
    for j in range(n_top):
        top_vals[j] = np.float32(np.float64(top_vals[j]) - lse)

    rep = params.repetition_penalty[b]
    pres = params.presence_penalty[b]
    freq = params.frequency_penalty[b]
    has_pen = rep != 1.0 or pres != 0.0 or freq != 0.0
    touched = np.empty(0, np.int32)
    raw = np.empty(0, np.float32)
    M = m_raw
    arg = arg_raw
    if has_pen:
        if rep != 1.0:
            pids = params.penalty_token_ids[params.penalty_offsets[b] : params.penalty_offsets[b + 1]]
        else:
            pids = params.penalty_token_ids[0:0]
        oids = params.output_token_ids[params.output_offsets[b] : params.output_offsets[b + 1]]
        touched, raw = _apply_penalties(x, pids, oids, rep, pres, freq)
        if touched.shape[0] > 0:
            M, arg = first_argmax(x)

    t_b = params.temperature[b]
    if t_b == 0.0:
        tok = arg
    else:
        u = seeded_uniform(params.seeds[b], params.counters[b])
        inv_t = 1.0 / np.float64(t_b)
        k_b = params.top_k[b]
        p_b = params.top_p[b]
        mp_b = np.float64(params.min_p[b])
        if (k_b > 0 and k_b < V) or p_b < 1.0:
            tok = sample_sorted(x, M, inv_t, k_b, p_b, mp_b, u)
        else:
            total = 0.0
            if mp_b <= 0.0 and t_b == 1.0 and touched.shape[0] == 0:
                total = s_raw
            tok = sample_threshold(x, M, inv_t, mp_b, u, total)

    raw_logit = x[tok]
    if touched.shape[0] > 0:
        k = np.searchsorted(touched, tok)
        if k < touched.shape[0] and touched[k] == tok:
            raw_logit = raw[k]
    out.token_ids[b] = tok
    out.logprobs[b] = np.float32(np.float64(raw_logit) - lse)


@parallel_jit
def sample_rows(logits, params, num_top, out):
    """Sample one token per row of logits [B, V] f32 with the RowParams params; results into the
    SampledRows out.

    Writes out.token_ids[b] (sampled token), out.logprobs[b] (its raw log-probability) and the
    num_top best (id, raw logprob) pairs of the raw distribution, best first (ties: lower id), in
    out.top_ids/out.top_logprobs; unused slots get id -1 and -inf.
    On return, rows with penalties hold the penalized logits (temperature not applied).
    """
    for b in numba.prange(logits.shape[0]):
        _sample_row(b, logits, params, num_top, out)


@jit
def sample_rows_serial(logits, params, num_top, out):
    """sample_rows on the calling thread only (B == 1 or tiny batches: no thread-pool wake-up)."""
    for b in range(logits.shape[0]):
        _sample_row(b, logits, params, num_top, out)


@parallel_jit
def log_softmax_topk(logits, k, target_ids, out_ids, out_logprobs, out_target_logprobs):
    """Top-k (id, logprob) of log_softmax of each row of logits [B, V] f32, best first (ties: lower
    id), into out_ids [B, k] int32 / out_logprobs [B, k] f32. Slots beyond V get -1 / -inf.
    Also the logprob of target_ids[b] (int32 [B]) in row b into out_target_logprobs [B] f32,
    computed as the top-k ones are (so equal to its top-k entry when it has one); a target
    outside 0..V-1 (-1: none) gets NaN."""
    B = logits.shape[0]
    V = logits.shape[1]
    n = min(k, V)
    for b in numba.prange(B):
        vals = out_logprobs[b]
        ids = out_ids[b]
        for j in range(k):
            vals[j] = -np.inf
            ids[j] = -1
        m, arg, s = raw_pass(logits[b], n, vals, ids)
        lse = m + math.log(s)
        for j in range(n):
            vals[j] = np.float32(np.float64(vals[j]) - lse)
        target = target_ids[b]
        if 0 <= target < V:
            out_target_logprobs[b] = np.float32(np.float64(logits[b, target]) - lse)
        else:
            out_target_logprobs[b] = np.nan
