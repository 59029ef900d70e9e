"""The time-following step budget: the fit on synthetic timings, the budget it gives, that the
scheduler keeps to a calibrated budget (fake runner, fake clock), and that the real model's engine
gets a budget within its bounds (no assertion on real time)."""

import dataclasses

import pytest

from pagedserve.engine.engine_factory import EngineArgs, build_engine, calibrated_config
from pagedserve.engine.step_budget import calibration_sizes, fit_step_cost
from pagedserve.sampled_token import SampledToken
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.engine import LLMEngine
from pagedserve.scheduler.step_io import RunnerOutput
from pagedserve.scheduler.step_time_budget import StepCost, token_budget
from tests.scheduler.factories import create_config


def test_fit_recovers_an_exact_line():
    cost = fit_step_cost([(1, 30.0 + 6.5), (16, 30.0 + 16 * 6.5), (64, 30.0 + 64 * 6.5)])
    assert cost.fixed_ms == pytest.approx(30.0) and cost.per_token_ms == pytest.approx(6.5)
    assert cost.step_ms(10) == pytest.approx(95.0)


def test_fit_of_noisy_points_is_least_squares():
    # Points off the line y = 10 + 2x by e = +1, -1, +1, -1: least squares tilts the slope by
    # sum(dx * e) / sum(dx^2) (dx = x - mean x = -27.25, -12.25, 3.75, 35.75), i.e. -47 / 2184.75.
    cost = fit_step_cost([(1, 13.0), (16, 41.0), (32, 75.0), (64, 137.0)])
    slope = 2.0 - 47.0 / 2184.75
    assert cost.per_token_ms == pytest.approx(slope)
    assert cost.fixed_ms == pytest.approx(266.0 / 4 - slope * 113.0 / 4)


def test_fit_keeps_costs_non_negative():
    # A fit through these has a negative intercept: the line is taken through the origin instead.
    cost = fit_step_cost([(1, 0.5), (64, 200.0)])
    assert cost.fixed_ms == 0.0 and cost.per_token_ms == pytest.approx((0.5 + 64 * 200.0) / (1 + 64 * 64))
    # A falling fit (noise): each token costs what the dearest step's did per token.
    cost = fit_step_cost([(1, 9.0), (16, 8.0)])
    assert cost.fixed_ms == 0.0 and cost.per_token_ms == pytest.approx(9.0)
    with pytest.raises(ValueError, match="two distinct"):
        fit_step_cost([(16, 3.0), (16, 4.0)])


def test_token_budget_is_what_fits_clamped():
    cost = StepCost(fixed_ms=30.0, per_token_ms=6.5)  # ~1B-shape figures from issue 14
    assert token_budget(cost, 250, min_tokens=16, max_tokens=256) == 33  # floor(220 / 6.5)
    assert token_budget(cost, 100, min_tokens=16, max_tokens=256) == 16  # 10 fit: the floor is one block
    assert token_budget(StepCost(5.0, 0.5), 250, min_tokens=16, max_tokens=256) == 256  # 490 fit
    assert token_budget(cost, 250, min_tokens=16, max_tokens=8) == 8  # never above the configured budget
    with pytest.raises(ValueError):
        token_budget(cost, 0, min_tokens=16, max_tokens=256)


def test_calibration_sizes_stay_within_one_step():
    assert calibration_sizes(256) == (16, 64)
    assert calibration_sizes(40) == (16, 40)
    assert calibration_sizes(8) == (8,)
    assert calibration_sizes(1) == ()


class TimedFakeRunner:
    """A 'model' whose steps take fixed_ms + per_token_ms * tokens on a fake clock; samples token 7."""

    def __init__(self, fixed_ms: float, per_token_ms: float):
        self.fixed_ms, self.per_token_ms = fixed_ms, per_token_ms
        self.now_s = 0.0
        self.batched_tokens: list[int] = []

    def clock(self) -> float:
        return self.now_s

    def execute(self, scheduler_output):
        n = scheduler_output.num_batched_tokens
        self.batched_tokens.append(n)
        self.now_s += (self.fixed_ms + self.per_token_ms * n) / 1e3
        return RunnerOutput({r.request_id: SampledToken(7, 0.0) for r in scheduler_output.scheduled if r.sample})


def test_calibrated_budget_is_what_the_scheduler_keeps_to():
    runner = TimedFakeRunner(fixed_ms=20.0, per_token_ms=2.0)
    config = create_config(block_size=4, num_blocks=256, max_model_len=512, max_num_batched_tokens=256,
                           max_num_seqs=16)
    calibrating = LLMEngine(runner, config)
    calibrated = calibrated_config(calibrating, 100.0, vocab_size=101, timer=runner.clock)
    assert calibrated.max_num_batched_tokens == 40  # (100 - 20) / 2
    assert (calibrated.max_step_ms, calibrated.step_fixed_ms, calibrated.step_per_token_ms) == pytest.approx((100.0, 20.0, 2.0))
    assert calibrated.step_fixed_tokens == pytest.approx(10.0)  # 20 ms fixed / 2 ms per token
    # nothing else changed
    assert dataclasses.replace(calibrated, max_num_batched_tokens=256, max_step_ms=config.max_step_ms,
                               step_fixed_ms=0.0, step_per_token_ms=0.0) == config
    assert config.max_num_batched_tokens == 256
    # Serving with it: 3 running decodes and a 300-token prompt; no step computes more than 40
    # tokens, so no step takes more than 100 ms on the fake clock, and the prompt is chunked to fill it.
    runner.batched_tokens.clear()
    engine = LLMEngine(TimedFakeRunner(20.0, 2.0), calibrated)
    for prompt in ([1, 2], [3, 4], [5, 6]):
        engine.add_request(prompt, SamplingParams(max_tokens=30, ignore_eos=True))
    engine.step()
    engine.add_request(list(range(1, 301)), SamplingParams(max_tokens=1, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()
    steps = engine.runner.batched_tokens
    assert max(steps) == 40 and steps.count(40) >= 7  # 300 prompt tokens in chunks of 37 + 3 decodes
    assert all(20.0 + 2.0 * n <= 100.0 for n in steps)


def test_real_model_budget_is_within_bounds(smollm2_model):
    args = EngineArgs(num_kv_blocks=64, kv_cache_memory=None, max_num_batched_tokens=128, max_step_ms=50.0)
    engine, _ = build_engine(args, model=smollm2_model, warm_up=True)
    assert 16 <= engine.config.max_num_batched_tokens <= 128
    # The runner holds none of the warm-up's or calibration's requests; the engine serves.
    assert engine.runner.states.request_ids() == set()
    [out] = engine.generate([[1, 2, 3, 4]], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))
    assert len(out.new_token_ids) == 3 and out.finished
    off, _ = build_engine(dataclasses.replace(args, max_step_ms=0.0), model=smollm2_model, warm_up=True)
    assert off.config.max_num_batched_tokens == 128


def test_calibration_fits_a_tiny_kv_cache():
    # 3 usable blocks of 4 tokens: the calibration prompts are cut to 10 tokens (+2 generated).
    runner = TimedFakeRunner(fixed_ms=10.0, per_token_ms=1.0)
    config = create_config(block_size=4, num_blocks=4, max_model_len=256, max_num_batched_tokens=64)
    calibrated = calibrated_config(LLMEngine(runner, config), 30.0, vocab_size=101, timer=runner.clock)
    assert max(runner.batched_tokens) == 10
    assert calibrated.max_num_batched_tokens == 20  # (30 - 10) / 1
