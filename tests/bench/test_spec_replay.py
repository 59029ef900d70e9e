"""The replay bench: drafts replayed from a plain greedy run are all accepted, and the speculative
run's tokens equal the plain run's (run() raises otherwise)."""

import numpy as np

from pagedserve.bench import spec_replay
from pagedserve.bench.spec_replay import ReplayBenchOptions, ReplayProposer
from pagedserve.engine.engine_args import EngineArgs


def test_replayed_drafts_are_all_accepted(smollm2_model):
    options = ReplayBenchOptions(new_tokens=12, prompt_tokens=8, num_drafts=(3,), rounds=1)
    result = spec_replay.run(EngineArgs(num_kv_blocks=64, kv_cache_memory=None), options, model=smollm2_model)
    (only,) = result["rounds"]
    assert only["acceptance_rate"] == {"3": 1.0}


def test_replay_proposer_proposes_what_follows_a_recorded_prefix_only():
    proposer = ReplayProposer(np.array([5, 6, 7, 8, 9], np.int32))
    right, off_script, at_end = proposer.propose(
        ["a", "b", "c"], [np.array([5, 6], np.int32), np.array([5, 1], np.int32), np.array([5, 6, 7, 8, 9], np.int32)],
        [2, 2, 2])
    assert right.tolist() == [7, 8] and off_script.tolist() == [] and at_end.tolist() == []
