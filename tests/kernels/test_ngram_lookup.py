"""The Numba prompt-lookup kernel against a plain Python reference, on random token sequences."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pagedserve.kernels.ngram_lookup import propose_ngram_drafts
from pagedserve.spec.ngram_proposer import NgramProposer


def reference_drafts(seq, min_n, max_n, k):
    """Longest n in [min_n, max_n] whose last-n-gram occurs ending earlier; the latest such
    occurrence; then k tokens copied from after it (the copy may run into its own output)."""
    seq = list(seq)
    length = len(seq)
    if k <= 0:
        return []
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        suffix = seq[length - n:]
        for end in range(length - 1, n - 1, -1):  # latest first; end < length
            if seq[end - n:end] == suffix:
                out = []
                for i in range(k):
                    source = end + i
                    out.append(seq[source] if source < length else out[source - length])
                return out
    return []


def run_kernel(seqs, min_n, max_n, num_drafts):
    offsets = np.zeros(len(seqs) + 1, np.int64)
    np.cumsum([len(s) for s in seqs], out=offsets[1:])
    token_ids = np.concatenate([np.asarray(s, np.int32) for s in seqs]) if seqs else np.empty(0, np.int32)
    out_ids = np.full((len(seqs), max(1, max(num_drafts, default=1))), -7, np.int32)
    out_counts = np.zeros(len(seqs), np.int32)
    propose_ngram_drafts(token_ids, offsets, min_n, max_n, np.asarray(num_drafts, np.int32), out_ids, out_counts)
    return [out_ids[b, :out_counts[b]].tolist() for b in range(len(seqs))]


@settings(max_examples=300, deadline=None)
@given(
    seqs=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=40), min_size=1, max_size=6),
    min_n=st.integers(1, 3),
    extra_n=st.integers(0, 3),
    k=st.integers(0, 7),
    data=st.data(),
)
def test_kernel_matches_the_reference_on_random_sequences(seqs, min_n, extra_n, k, data):
    max_n = min_n + extra_n
    num_drafts = [data.draw(st.integers(0, k)) for _ in seqs]  # per sequence, some zero
    got = run_kernel(seqs, min_n, max_n, num_drafts)
    want = [reference_drafts(s, min_n, max_n, n) for s, n in zip(seqs, num_drafts)]
    assert got == want


def test_small_cases_by_hand():
    # latest occurrence of the longest n-gram: "1 2" ends at 2 and at 6, the latest wins
    assert reference_drafts([1, 2, 3, 4, 1, 2, 5, 9, 1, 2], 1, 4, 3) == [5, 9, 1]
    # a longer match wins over a later shorter one: "7 1 2" occurs at 0..2
    assert reference_drafts([7, 1, 2, 3, 8, 1, 2, 4, 7, 1, 2], 1, 3, 2) == [3, 8]
    # a period-2 tail keeps repeating through its own drafts
    assert reference_drafts([5, 6, 5, 6], 2, 2, 5) == [5, 6, 5, 6, 5]
    assert reference_drafts([1, 2, 3], 1, 2, 3) == []  # no earlier occurrence
    assert run_kernel([[1, 2, 3, 4, 1, 2, 5, 9, 1, 2], [5, 6, 5, 6], [1, 2, 3]], 1, 4, [3, 5, 3]) == [
        [5, 9, 1], [5, 6, 5, 6, 5], []]


def test_proposer_packs_views_and_returns_arrays():
    history = np.array([9, 3, 4, 5, 3, 4, 0, 0], np.int32)
    proposer = NgramProposer(1, 3)
    drafts = proposer.propose(["a", "b"], [history[:6], np.array([1], np.int32)], [2, 4])
    assert [d.tolist() for d in drafts] == [[5, 3], []]
    assert history.tolist() == [9, 3, 4, 5, 3, 4, 0, 0]  # untouched
