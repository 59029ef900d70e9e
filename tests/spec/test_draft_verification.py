"""The runner's draft verification (worker/draft_verification.py with the real Sampler), model-free.

The chi-square test compares the tokens emitted with a point-mass draft against those of plain
sampling (different seeds, so the two samples are independent), over the full pipeline
(temperature, top-k, top-p, min-p and penalties, which see the draft in the history). It is shown
to have the power to reject a wrong rule: the same statistic on a rule that accepts the draft too
often fails it by a wide margin.
"""

from __future__ import annotations

import collections
from types import SimpleNamespace

import numpy as np

from pagedserve.model.sampler import Sampler
from pagedserve.sampling_params import SamplingParams
from pagedserve.worker import draft_verification

V = 6
ROW0 = np.array([1.2, 0.9, 0.4, 0.0, -0.3, -2.0], np.float32)  # predicts the first token
ROW1 = np.array([-0.5, 0.3, 1.1, 0.2, 0.8, 0.0], np.float32)  # predicts the token after the draft
DRAFT = 1  # the second most likely first token
PARAMS = SamplingParams(temperature=0.9, top_k=5, top_p=0.97, min_p=0.02, repetition_penalty=1.3,
                        presence_penalty=0.2, frequency_penalty=0.1, max_tokens=8)
PROMPT = np.array([3, 4], np.int32)
# chi-square critical values at alpha = 0.001, by degrees of freedom
CRITICAL_001 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88}


def state(seed: int, outputs=()):
    return SimpleNamespace(request_id=f"r{seed}", sampling_params=PARAMS, prompt_token_ids=PROMPT,
                           output_token_ids=np.asarray(outputs, np.int32), seed=seed)


def emitted_with_draft(seeds) -> list[tuple]:
    """What the runner emits for one request per seed, verifying the draft DRAFT."""
    states = [state(s) for s in seeds]
    drafts = [(DRAFT,)] * len(seeds)
    plan = draft_verification.sampling_rows(states, drafts, [()] * len(seeds), seed_for=lambda rid: 0)
    logits = np.tile(np.stack([ROW0, ROW1]), (len(seeds), 1))  # [2 * n, V]: rows 2i, 2i + 1 per request
    assert plan.row_of == list(range(2 * len(seeds)))
    sampled = Sampler(V).sample(logits, plan.params, plan.prompts, plan.outputs, plan.seeds)
    result = []
    for i, start in enumerate(draft_verification.first_rows([1] * len(seeds))):
        first, extra = draft_verification.accept(sampled, start, (DRAFT,))
        assert len(extra) == (first.token_id == DRAFT)
        result.append((first.token_id,) + tuple(t.token_id for t in extra))
    return result


def sample_plain(seeds, outputs) -> list[int]:
    """Plain sampling of one token per seed, from ROW0 with no outputs or ROW1 after `outputs`."""
    row = ROW0 if not outputs else ROW1
    n = len(seeds)
    return [t.token_id for t in Sampler(V).sample(np.tile(row, (n, 1)), [PARAMS] * n, [PROMPT] * n,
                                                   [np.asarray(outputs, np.int32)] * n, list(seeds))]


def emitted_without_draft(seeds) -> list[tuple]:
    """The same categories from plain sampling: the first token, and the second after DRAFT."""
    firsts = sample_plain(seeds, ())
    after = [s for s, t in zip(seeds, firsts) if t == DRAFT]
    seconds = dict(zip(after, sample_plain(after, (DRAFT,))))
    return [(t, seconds[s]) if t == DRAFT else (t,) for s, t in zip(seeds, firsts)]


def emitted_with_a_wrong_rule(seeds) -> list[tuple]:
    """A wrong rule for contrast: accept the draft when either of two independent draws is it."""
    firsts = sample_plain(seeds, ())
    seconds_draw = sample_plain([s + 10_000_000 for s in seeds], ())
    accepted = [s for s, a, b in zip(seeds, firsts, seconds_draw) if DRAFT in (a, b)]
    after = dict(zip(accepted, sample_plain(accepted, (DRAFT,))))
    return [(DRAFT, after[s]) if s in after else (t,) for s, t in zip(seeds, firsts)]


def chi_square_two_samples(a: list, b: list) -> tuple[float, int]:
    """Chi-square statistic of the 2 x K contingency table of two samples, and its degrees of
    freedom; categories with an expected count under 5 are pooled."""
    ca, cb = collections.Counter(a), collections.Counter(b)
    na, nb = len(a), len(b)
    cells, pooled = [], [0, 0]
    for key in set(ca) | set(cb):
        total = ca[key] + cb[key]
        if min(total * na, total * nb) / (na + nb) < 5:
            pooled[0] += ca[key]
            pooled[1] += cb[key]
        else:
            cells.append((ca[key], cb[key]))
    if sum(pooled):
        cells.append(tuple(pooled))
    stat = 0.0
    for x, y in cells:
        total = x + y
        for observed, n in ((x, na), (y, nb)):
            expected = total * n / (na + nb)
            stat += (observed - expected) ** 2 / expected
    return stat, len(cells) - 1


def test_sampled_tokens_with_a_draft_are_distributed_as_without():
    n = 20_000
    with_draft = emitted_with_draft(range(n))
    without = emitted_without_draft(range(n, 2 * n))  # other seeds: independent samples
    stat, df = chi_square_two_samples(with_draft, without)
    assert df >= 5  # the draft's row and the row after it both spread over several tokens
    assert stat < CRITICAL_001[df], (stat, df)
    # Both parts of the rule are exercised: drafts are accepted, and rejected.
    accepted = sum(len(t) == 2 for t in with_draft) / n
    assert 0.15 < accepted < 0.6
    # The test has the power to see a rule that accepts too often.
    wrong_stat, wrong_df = chi_square_two_samples(emitted_with_a_wrong_rule(range(n)), without)
    assert wrong_stat > 10 * CRITICAL_001[wrong_df], wrong_stat


def test_with_the_same_seed_the_emitted_tokens_are_those_of_plain_sampling():
    seeds = range(500)
    assert emitted_with_draft(seeds) == emitted_without_draft(seeds)


def test_greedy_accepts_the_longest_prefix_equal_to_the_argmax_plus_one():
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    logits = np.zeros((4, V), np.float32)
    for row, best in enumerate([2, 5, 1, 3]):
        logits[row, best] = 1.0
    one = SimpleNamespace(request_id="g", sampling_params=greedy, prompt_token_ids=PROMPT,
                          output_token_ids=np.zeros(0, np.int32), seed=0)
    for drafts, want_first, want_extra in [((2, 5, 1), 2, [5, 1, 3]), ((2, 5, 4), 2, [5, 1]),
                                           ((0, 5, 1), 2, []), ((2, 0, 1), 2, [5])]:
        plan = draft_verification.sampling_rows([one], [drafts], [()], seed_for=lambda rid: 0)
        sampled = Sampler(V).sample(logits.copy(), plan.params, plan.prompts, plan.outputs, plan.seeds)
        first, extra = draft_verification.accept(sampled, 0, drafts)
        assert (first.token_id, [t.token_id for t in extra]) == (want_first, want_extra)


def test_rows_see_the_drafts_before_them_as_outputs_and_forks_come_last():
    one = state(7, outputs=(4, 4))
    forking = SimpleNamespace(request_id="r8", sampling_params=SamplingParams(n=3, seed=5), prompt_token_ids=PROMPT,
                              output_token_ids=np.zeros(0, np.int32), seed=8)
    plan = draft_verification.sampling_rows([one, forking], [(1, 2), ()], [(), ("c1", "c2")],
                                            seed_for=lambda rid: {"c1": 11, "c2": 12}[rid])
    assert plan.row_of == [0, 1, 2, 3, 3, 3]
    assert plan.ids == ["r7", "r7", "r7", "r8", "c1", "c2"]
    assert [list(o) for o in plan.outputs[:3]] == [[4, 4], [4, 4, 1], [4, 4, 1, 2]]
    assert plan.seeds == [7, 7, 7, 8, 11, 12]
    assert plan.params[4:] == [forking.sampling_params.for_choice(1), forking.sampling_params.for_choice(2)]
