"""n > 1 over real models: the choices equal single requests, and the prompt is computed once.

Choice i of a seeded request must give exactly the tokens of a single request with seed + i, which
holds only if it read the prompt's shared KV (and its own copy of the partial last block) right.
Model-free checks of the block sharing live in test_parallel_sampling.py.
"""

import numpy as np
import pytest

from pagedserve.engine.engine_factory import EngineArgs, build_engine
from pagedserve.sampling_params import SamplingParams


def random_prompt(seed: int, n: int) -> list[int]:
    return np.random.default_rng(seed).integers(100, 20000, size=n).tolist()


def ids_by_choice(outputs) -> list[list[int]]:
    return [o.new_token_ids for o in outputs]


@pytest.mark.parametrize("prompt_len", [32, 21])  # block-aligned (2 blocks of 16) and not
@pytest.mark.parametrize("caching", [True, False])
def test_four_greedy_choices_equal_the_single_request_and_prefill_once(make_engine, prompt_len, caching):
    prompt = random_prompt(prompt_len, prompt_len)
    single = make_engine(enable_prefix_caching=caching).generate(
        [prompt], SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True))[0]
    engine = make_engine(enable_prefix_caching=caching)
    outs = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, n=4))
    assert [o.index for o in outs] == [0, 1, 2, 3]
    assert ids_by_choice(outs) == [single.new_token_ids] * 4
    stats = engine.stats()
    assert stats.num_prefill_tokens == prompt_len  # one prompt, not four
    assert stats.num_blocks_used == (0,)


def test_seeded_choices_equal_single_requests_with_shifted_seeds(make_engine):
    prompt = random_prompt(1, 27)
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=12, ignore_eos=True, n=3)
    engine = make_engine(enable_prefix_caching=False)
    outs = engine.generate([prompt], params)
    assert engine.stats().num_prefill_tokens == len(prompt)
    singles = make_engine(enable_prefix_caching=False).generate(
        [prompt] * 3, [params.for_choice(i) for i in range(3)])
    assert ids_by_choice(outs) == ids_by_choice(singles)
    assert len({tuple(ids) for ids in ids_by_choice(outs)}) > 1  # the seeds do make them differ


def test_choices_survive_preemption_under_a_tiny_cache(make_engine):
    prompt = random_prompt(2, 40)
    params = SamplingParams(temperature=0.9, seed=7, max_tokens=40, ignore_eos=True, n=4)
    roomy = make_engine().generate([prompt], params)
    # 12 usable blocks of 16: four choices of 40 + 40 tokens (5 blocks each) share 2 full prompt
    # blocks and need 3 of their own each at the end, 14 in all.
    tight_engine = make_engine(num_kv_blocks=13)
    tight = tight_engine.generate([prompt], params)
    assert tight_engine.stats().num_preemptions > 0
    assert ids_by_choice(tight) == ids_by_choice(roomy)
    assert tight_engine.stats().num_blocks_used == (0,)


def test_abort_mid_generation_frees_every_block(make_engine):
    engine = make_engine()
    engine.add_request(random_prompt(3, 21), SamplingParams(temperature=0.0, max_tokens=100, n=4), "r")
    for _ in range(3):
        engine.step()
    assert engine.stats().num_running == 4 and engine.stats().num_blocks_used[0] > 0
    assert engine.abort_request("r")
    assert engine.stats().num_blocks_used == (0,)
    assert all(all(c == 0 for c in pool.ref_counts) for pool in engine.scheduler.kv.pools)
    finals = [o for o in engine.step() if o.finished]
    assert sorted(o.index for o in finals) == [0, 1, 2, 3]


def test_gemma3_sliding_window_choices_equal_single_requests(gemma3_model):
    """A 530-token prompt is past Gemma 3's 512-token window at the fork, so the windowed group's
    shared table already holds null entries; each choice then drops blocks on its own."""
    prompt = random_prompt(4, 530)
    params = SamplingParams(temperature=0.8, seed=99, max_tokens=6, ignore_eos=True, n=2)

    def engine():
        return build_engine(EngineArgs(num_kv_blocks=160, kv_cache_memory=None, enable_prefix_caching=False),
                            model=gemma3_model, warm_up=False)[0]

    forked = engine()
    outs = forked.generate([prompt], params)
    assert forked.stats().num_prefill_tokens == len(prompt)
    assert forked.config.kv_cache_spec.num_groups == 2
    singles = engine().generate([prompt] * 2, [params.for_choice(i) for i in range(2)])
    assert ids_by_choice(outs) == ids_by_choice(singles)
    assert forked.stats().num_blocks_used == (0, 0)
