"""Thin Python layer over kernels.sampling: per-row parameter arrays from requests, one kernel call.

Seeds: a request's own `params.seed` when set, else the seed the caller passes in `seeds` (the model
runner derives it from the request id, so it stays stable across steps without state; a caller that
keeps state may draw one with `Sampler.seed_for_new_request()`). The generator counter
of row b is len(output_token_ids[b]), so a seeded request samples the same tokens whatever else is
in the batch and whatever the batch order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pagedserve.kernels.sampling import RowParams, SampledRows, log_softmax_topk, sample_rows, sample_rows_serial
from pagedserve.sampling_params import SamplingParams
from pagedserve.sampled_token import SampledToken

_U64_MASK = (1 << 64) - 1


def _packed(seqs: Sequence[Sequence[int]], rows: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Pack seqs[b] for the rows where rows[b] into (ids int32, offsets int64 [B+1])."""
    lengths = np.fromiter((len(s) if r else 0 for s, r in zip(seqs, rows)), np.int64, len(rows))
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    chunks = [np.asarray(s, np.int32) for s, r in zip(seqs, rows) if r and len(s)]
    ids = np.concatenate(chunks) if chunks else np.empty(0, np.int32)
    return ids, offsets


class Sampler:
    def __init__(self, vocab_size: int, rng_seed: int = 0):
        self.vocab_size = vocab_size
        self._rng = np.random.default_rng(rng_seed)
        self._empty_ids = np.empty(0, np.int32)

    def seed_for_new_request(self) -> int:
        """A seed for a request that did not bring one (drawn once per request)."""
        return int(self._rng.integers(0, 1 << 63, dtype=np.int64))

    def sample(
        self,
        logits: np.ndarray,
        params: Sequence[SamplingParams],
        prompt_token_ids: Sequence[Sequence[int]],
        output_token_ids: Sequence[Sequence[int]],
        seeds: Sequence[int],
    ) -> list[SampledToken]:
        """One token per row of logits [B, V] (float32; a C-contiguous float32 array is modified in
        place: penalized rows are left holding the penalized logits)."""
        B = len(params)
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[0] != B:
            raise ValueError(f"logits must be [{B}, V], got {logits.shape}")

        temperature = np.fromiter((p.temperature for p in params), np.float32, B)
        top_k = np.fromiter((p.top_k for p in params), np.int32, B)
        top_p = np.fromiter((p.top_p for p in params), np.float32, B)
        min_p = np.fromiter((p.min_p for p in params), np.float32, B)
        rep = np.fromiter((p.repetition_penalty for p in params), np.float32, B)
        pres = np.fromiter((p.presence_penalty for p in params), np.float32, B)
        freq = np.fromiter((p.frequency_penalty for p in params), np.float32, B)
        seed_arr = np.fromiter(
            (int(p.seed if p.seed is not None else s) & _U64_MASK for p, s in zip(params, seeds)), np.uint64, B
        )
        counters = np.fromiter((len(o) for o in output_token_ids), np.int64, B)

        use_rep = rep != 1.0
        use_any = use_rep | (pres != 0.0) | (freq != 0.0)
        if use_any.any():
            pen_ids, pen_off = _packed(prompt_token_ids, use_rep.tolist())
            out_ids_packed, out_off = _packed(output_token_ids, use_any.tolist())
        else:
            pen_ids = out_ids_packed = self._empty_ids
            pen_off = out_off = np.zeros(B + 1, np.int64)

        num_top = max((p.logprobs for p in params), default=0)
        width = max(num_top, 1)
        rows = RowParams(temperature, top_k, top_p, min_p, rep, pres, freq, pen_ids, pen_off, out_ids_packed,
                         out_off, seed_arr, counters)
        out = SampledRows(np.empty(B, np.int32), np.empty(B, np.float32), np.empty((B, width), np.int32),
                          np.empty((B, width), np.float32))
        # One row (or a tiny batch): stay on this thread, waking the pool costs more than it saves.
        kernel = sample_rows_serial if B == 1 or B * logits.shape[1] <= 1 << 16 else sample_rows
        kernel(logits, rows, num_top, out)

        ids_l = out.token_ids.tolist()
        lp_l = out.logprobs.tolist()
        if num_top:
            top_ids_l = out.top_ids.tolist()
            top_lp_l = out.top_logprobs.tolist()
        result = []
        for b, p in enumerate(params):
            n = p.logprobs
            top = list(zip(top_ids_l[b][:n], top_lp_l[b][:n])) if n else []
            result.append(SampledToken(token_id=ids_l[b], logprob=lp_l[b], top_logprobs=top))
        return result

    @staticmethod
    def prompt_logprobs(logits: np.ndarray, k: int, target_ids: Sequence[int]) -> list[SampledToken]:
        """Per row of logits [N, V]: the log_softmax logprob of target_ids[row] (the token that
        followed; -1 for none, whose logprob is NaN) and the top-k (id, logprob) pairs, best first."""
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        n = logits.shape[0]
        k = max(0, k)
        targets = np.asarray(target_ids, dtype=np.int32).reshape(n)
        ids = np.empty((n, k), np.int32)
        lps = np.empty((n, k), np.float32)
        target_lps = np.empty(n, np.float32)
        if n:
            log_softmax_topk(logits, k, targets, ids, lps, target_lps)
        return [SampledToken(token_id=t, logprob=lp, top_logprobs=list(zip(i, l)))
                for t, lp, i, l in zip(targets.tolist(), target_lps.tolist(), ids.tolist(), lps.tolist())]
