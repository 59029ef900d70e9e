"""The cost rule of auto-mode speculation (scheduler/spec_policy.py): a request asks for the drafts
whose chance of being kept beats what a draft token costs the step, given the measured fixed cost."""

import dataclasses

import pytest

from pagedserve.scheduler.request import Request
from pagedserve.scheduler.spec_policy import ACCEPTANCE_MEMORY, PRIOR_ACCEPTED, PRIOR_REJECTED, DraftTracker, SpecPolicy
from tests.scheduler.factories import create_config, create_engine, expected_tokens, run_to_completion
from tests.spec.test_spec_scheduler import greedy, right_proposer, wrong_proposer


@pytest.mark.parametrize("fixed_tokens, acceptance, num_running, expected", [
    (1.7, 0.9, 1, 9),  # bar 1 / 2.7 = 0.370: 0.9^9 = 0.387 passes, 0.9^10 = 0.349 does not
    (1.7, 0.9, 16, 0),  # bar 16 / 17.7 = 0.904: not even the first draft
    (1.7, 0.99, 16, 10),  # 0.99^10 = 0.904 > 0.9040 (bar 0.90395), 0.99^11 = 0.895
    (3.0, 0.5, 1, 1),  # bar 0.25: 0.5 passes, 0.25 does not
    (1.7, 1.0, 64, 16),  # drafts that are always accepted pay at any batch: the engine's k
    (0.0, 0.1, 1, 16),  # no measured cost: no cost rule
])
def test_drafts_that_pay_keep_acceptance_to_the_i_above_the_batch_share_of_a_step(
        fixed_tokens, acceptance, num_running, expected):
    policy = SpecPolicy(num_draft_tokens=16, max_batch_tokens=128, step_fixed_tokens=fixed_tokens)
    assert policy.drafts_that_pay(acceptance, num_running) == expected


def test_token_acceptance_counts_accepted_drafts_against_rejections_recent_steps_first():
    tracker = DraftTracker()
    assert tracker.token_acceptance == pytest.approx(PRIOR_ACCEPTED / (PRIOR_ACCEPTED + PRIOR_REJECTED))
    tracker.record(4, 4)  # all accepted: no rejection
    m = ACCEPTANCE_MEMORY
    assert tracker.token_acceptance == pytest.approx((m * PRIOR_ACCEPTED + 4) / (m * PRIOR_ACCEPTED + m * PRIOR_REJECTED + 4))
    before = tracker.token_acceptance
    tracker.record(4, 1)  # one accepted, then a rejection
    assert tracker.token_acceptance < before
    for _ in range(20):  # the first draft always rejected: the estimate falls towards 0
        tracker.record(4, 0)
    assert tracker.token_acceptance < 0.01
    for _ in range(20):  # then always all accepted: towards 1
        tracker.record(4, 4)
    assert tracker.token_acceptance > 0.99


def test_auto_requests_of_a_large_batch_ask_for_no_drafts_and_fixed_ones_still_do():
    policy = SpecPolicy(num_draft_tokens=4, max_batch_tokens=64, step_fixed_tokens=1.7)
    auto = Request("a", [1, 2], greedy(10))
    fixed = Request("f", [1, 2], greedy(10, speculative=3))
    # a new request's estimate (0.8) pays at one stream (bar 0.37: 0.8^4 = 0.41) ...
    assert policy.num_to_propose(auto, num_running=1) == 4
    # ... and not at 16 (bar 0.90); the user's own k is kept
    assert (policy.num_to_propose(auto, num_running=16), policy.num_to_propose(fixed, num_running=16)) == (0, 3)


def _engine_with_cost(proposer, fixed_tokens):
    config = create_config(speculative="ngram", num_draft_tokens=4, max_num_batched_tokens=64)
    # the fixed cost in tokens = step_fixed_ms / step_per_token_ms
    engine, runner = create_engine(dataclasses.replace(config, step_fixed_ms=fixed_tokens, step_per_token_ms=1.0))
    runner.proposer = proposer
    return engine, runner


def test_with_a_measured_step_cost_wrong_drafts_stop_being_asked_for_and_tokens_do_not_change():
    engine, runner = _engine_with_cost(wrong_proposer, fixed_tokens=1.7)
    prompts = {str(i): [3 + i, 7, 11 + i] for i in range(6)}
    for rid, prompt in prompts.items():
        engine.add_request(prompt, greedy(30), request_id=rid)
    result = run_to_completion(engine)
    for rid, prompt in prompts.items():
        assert result[rid].new_token_ids == expected_tokens(prompt, 30)
    # 6 streams: bar 6 / 7.7 = 0.78 against a first estimate of 0.8: one draft each, rejected,
    # then the estimate (3 / 4.75 = 0.63) is under the bar. A step's drafts for the next are asked
    # for before its own are verified, so each request drafts twice, and never again after that.
    assert engine.stats().num_draft_tokens == 12


def test_with_a_measured_step_cost_right_drafts_keep_being_verified_at_one_stream():
    engine, runner = _engine_with_cost(right_proposer, fixed_tokens=1.7)
    engine.add_request([5, 17, 3, 9], greedy(21), request_id="a")
    result = run_to_completion(engine)
    assert result["a"].new_token_ids == expected_tokens([5, 17, 3, 9], 21)
    stats = engine.stats()
    # prefill (1 out), then verify steps of 4 drafts, all accepted: 1 + 4 x 5 = 21
    assert (stats.num_draft_tokens, stats.num_accepted_draft_tokens) == (16, 16)
