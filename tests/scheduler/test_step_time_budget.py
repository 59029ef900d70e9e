"""The step budget that follows time while serving (scheduler/step_time_budget.py): the warm-up
cost line scaled by measured / predicted step times; fed synthetic step times, no real clock."""

import dataclasses

import pytest

from pagedserve.sampled_token import SampledToken
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.request import Request
from pagedserve.scheduler.step_io import RunnerOutput
from pagedserve.scheduler.step_time_budget import RATIO_WEIGHT, StepBudgetControl, StepCost
from tests.scheduler.factories import create_config, create_scheduler


def control():
    # 20 ms + 2 ms per token, a 100 ms target: 40 tokens on the warm-up line
    return StepBudgetControl(StepCost(20.0, 2.0), 100.0, min_tokens=4, max_tokens=40)


def test_steps_slower_than_the_line_shrink_the_budget_and_faster_ones_restore_it():
    c = control()
    assert c.budget == 40
    assert c.observe(40, 200.0) == 31  # ratio 1 + 0.2 * (2 - 1) = 1.2: floor((100 - 24) / 2.4)
    assert c.ratio == pytest.approx(1 + RATIO_WEIGHT)
    for _ in range(60):  # steps keep taking twice the line: the ratio settles at 2
        c.observe(c.budget, 2 * (20.0 + 2.0 * c.budget))
    assert c.ratio == pytest.approx(2.0) and c.budget == 15  # (100 - 40) / 4
    for _ in range(60):  # the machine is quiet again: back to the warm-up budget, never above it
        c.observe(c.budget, 0.5 * (20.0 + 2.0 * c.budget))
    assert c.budget == 40


def test_the_ratio_is_bounded_and_empty_steps_say_nothing():
    c = control()
    assert c.observe(0, 5000.0) == 40  # a step that computed nothing
    for _ in range(100):
        c.observe(10, 1e6)  # stalls: the ratio stops at 4, the budget at the floor
    assert c.ratio == 4.0 and c.budget == 4  # (100 - 80) / 8 = 2 tokens fit, a block is the floor


def test_the_scheduler_keeps_to_the_budget_its_steps_were_measured_at():
    config = create_config(block_size=4, num_blocks=256, max_model_len=512, max_num_batched_tokens=40)
    config = dataclasses.replace(config, max_step_ms=100.0, step_fixed_ms=20.0, step_per_token_ms=2.0)
    scheduler = create_scheduler(config)
    assert scheduler.token_budget == 40
    for _ in range(60):
        scheduler.record_step_time(40, 200.0)  # every step took twice the line
    assert scheduler.token_budget == 15
    scheduler.add_request(Request("p", list(range(1, 201)), SamplingParams(max_tokens=1, ignore_eos=True)))
    out = scheduler.schedule()
    assert out.num_batched_tokens == 15  # the prompt is chunked to the measured budget


def test_a_shrunk_budget_still_gives_every_running_request_its_token():
    config = create_config(block_size=4, num_blocks=256, max_model_len=512, max_num_batched_tokens=40,
                           max_num_seqs=32)
    config = dataclasses.replace(config, max_step_ms=100.0, step_fixed_ms=20.0, step_per_token_ms=2.0)
    scheduler = create_scheduler(config)
    for i in range(24):
        scheduler.add_request(Request(str(i), [1 + i], SamplingParams(max_tokens=5, ignore_eos=True)))
    first = scheduler.schedule()  # 24 one-token prompts fit the 40 tokens
    assert first.num_batched_tokens == 24
    scheduler.update_from_output(first, RunnerOutput({r.request_id: SampledToken(7, 0.0) for r in first.scheduled}))
    for _ in range(60):
        scheduler.record_step_time(40, 1e6)  # the measured budget falls to the floor, 4 tokens
    assert scheduler.step_budget.budget == 4
    assert scheduler.schedule().num_batched_tokens == 24  # still every running request's decode


def test_without_a_measured_line_the_budget_is_the_configured_one():
    scheduler = create_scheduler(create_config(max_num_batched_tokens=16))
    assert scheduler.step_budget is None
    scheduler.record_step_time(16, 1e6)
    assert scheduler.token_budget == 16
