"""The real runner's diff-built state on Gemma 3 (512-token local window): equal to the scheduler's
requests at every step, and the sampler's penalty history equal to the full history."""

import numpy as np
import pytest

from pagedserve.engine.engine_factory import EngineArgs, build_engine
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.step_io import RunnerOutput, SchedulerOutput
from tests.scheduler.factories import assert_runner_state_matches

pytestmark = pytest.mark.slow


class StateCheckingRunner:
    """Runs the engine's runner, then checks its state and what its sampler was given."""

    def __init__(self, engine):
        self.runner, self.scheduler = engine.runner, engine.scheduler
        self.num_checked_steps = 0
        self.num_checked_samples = 0
        self._sampler_inputs = []
        sample = self.runner.sampler.sample

        def recording_sample(logits, params, prompt_token_ids, output_token_ids, seeds):
            self._sampler_inputs.append(([list(p) for p in prompt_token_ids], [list(o) for o in output_token_ids]))
            return sample(logits, params, prompt_token_ids, output_token_ids, seeds)

        self.runner.sampler.sample = recording_sample

    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        output = self.runner.execute(scheduler_output)
        try:
            assert_runner_state_matches(self.runner.states, self.scheduler, scheduler_output)
            truths = [self.scheduler.requests[r.request_id] for r in scheduler_output.scheduled if r.sample]
            if truths:
                prompts, outputs = self._sampler_inputs.pop()
                assert prompts == [t.prompt_token_ids for t in truths]
                assert outputs == [t.output_token_ids for t in truths]
                self.num_checked_samples += len(truths)
            assert not self._sampler_inputs
        except AssertionError as error:
            pytest.fail(f"runner state check failed: {error!r}")  # the engine would swallow an AssertionError
        self.num_checked_steps += 1
        return output


def test_runner_state_through_window_preemption_prefix_hits_and_penalties(gemma3_model):
    rng = np.random.default_rng(12)
    shared = rng.integers(100, 20000, 96).tolist()
    prompts = [shared + rng.integers(100, 20000, n).tolist() for n in (520, 40, 30)]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, repetition_penalty=1.3,
                            presence_penalty=0.4, frequency_penalty=0.3)

    def run(num_kv_blocks):
        engine, _ = build_engine(EngineArgs(num_kv_blocks=num_kv_blocks, kv_cache_memory=None,
                                            max_num_batched_tokens=128), model=gemma3_model, warm_up=False)
        checker = StateCheckingRunner(engine)
        engine.runner = checker
        ids = [o.new_token_ids for o in engine.generate(prompts, params)]
        return ids, engine.stats(), checker

    # 45 usable blocks of 16: the 628-token request takes 40 in the global group, so the others
    # (9 and 8 blocks, 6 of them shared) force a preemption.
    tight_ids, tight, checker = run(46)
    assert tight.num_preemptions > 0 and tight.num_prefix_hit_tokens > 0 and tight.num_window_freed_blocks > 0
    assert checker.num_checked_steps == tight.num_steps and checker.num_checked_samples >= 3 * 12
    roomy_ids, roomy, _ = run(160)
    assert roomy.num_preemptions == 0
    assert tight_ids == roomy_ids  # the penalties saw the same history after the resume
