"""The runner's per-request state, built from step diffs, and the batch flattening it feeds."""

import numpy as np
import pytest

from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.step_io import NewRequestData, ScheduledRequest, SchedulerOutput
from pagedserve.worker.batch_metadata import SequenceChunk, build_metadata
from pagedserve.worker.request_state import GrowingIds, RequestStates

PARAMS = SamplingParams(temperature=0.0, repetition_penalty=1.3)


def diff(request_id, start, num_new, new_block_ids, num_null=(0,), new_outputs=(), sample=True):
    return ScheduledRequest(request_id, start, num_new, new_block_ids, num_null, new_outputs, sample)


def test_growing_ids_keep_their_values_across_reallocations():
    ids = GrowingIds([1, 2, 3])
    expected = [1, 2, 3]
    for n in range(1, 40):
        new = list(range(100 * n, 100 * n + n))
        ids.extend(new)
        expected += new
    assert ids.ids.tolist() == expected and len(ids) == len(expected)
    assert ids.ids.dtype == np.int32


def test_new_request_then_diffs_build_history_and_block_tables():
    states = RequestStates(num_groups=2, seed_for=lambda request_id: 41)
    new = NewRequestData("a", (5, 6, 7, 8, 9), (), PARAMS)
    [state] = states.update(SchedulerOutput((diff("a", 0, 3, ((1,), (2,)), (0, 0), sample=False),), (new,)))
    assert state.prompt_token_ids.tolist() == [5, 6, 7, 8, 9] and state.output_token_ids.tolist() == []
    assert [t.tolist() for t in state.block_table_rows()] == [[1], [2]]
    assert state.seed == 41 and state.sampling_params is PARAMS
    states.update(SchedulerOutput((diff("a", 3, 2, ((3,), (4,)), (0, 0)),)))  # rest of the prompt
    [state] = states.update(SchedulerOutput((diff("a", 5, 1, ((), ()), (0, 0), new_outputs=(11,)),)))
    assert state.token_ids.ids.tolist() == [5, 6, 7, 8, 9, 11]
    assert state.output_token_ids.tolist() == [11]
    assert [t.tolist() for t in state.block_table_rows()] == [[1, 3], [2, 4]]
    # A window frees the first block of group 1: its entry becomes the null block, group 0 keeps its own.
    [state] = states.update(SchedulerOutput((diff("a", 6, 1, ((7,), (8,)), (0, 1), new_outputs=(12,)),)))
    assert [t.tolist() for t in state.block_table_rows()] == [[1, 3, 7], [0, 4, 8]]
    assert state.output_token_ids.tolist() == [11, 12]


def test_resumed_request_brings_its_outputs_and_leading_null_blocks():
    states = RequestStates(num_groups=1, seed_for=lambda request_id: 0)
    new = NewRequestData("a", (1, 2, 3), (4, 5), PARAMS)  # resumed after a preemption
    [state] = states.update(SchedulerOutput((diff("a", 0, 5, ((0, 0, 9),), (2,)),), (new,)))
    assert state.prompt_token_ids.tolist() == [1, 2, 3] and state.output_token_ids.tolist() == [4, 5]
    assert state.block_table_rows()[0].tolist() == [0, 0, 9]


def test_finished_ids_are_dropped_before_new_ones_are_added():
    states = RequestStates(num_groups=1, seed_for=lambda request_id: 0)
    states.update(SchedulerOutput((diff("a", 0, 2, ((1,),)),), (NewRequestData("a", (1, 2), (), PARAMS),)))
    states.update(SchedulerOutput((diff("b", 0, 1, ((2,),)),), (NewRequestData("b", (3,), (), PARAMS),)))
    assert states.request_ids() == {"a", "b"}
    # "a" finished and a new request reuses its id in the same step: the new one wins.
    again = NewRequestData("a", (8, 8, 8), (), PARAMS)
    [state] = states.update(SchedulerOutput((diff("a", 0, 3, ((5,),)),), (again,), ("a", "b")))
    assert states.request_ids() == {"a"}
    assert state.prompt_token_ids.tolist() == [8, 8, 8] and state.block_table_rows()[0].tolist() == [5]


def test_a_diff_for_an_unknown_request_or_beyond_its_tokens_is_refused():
    states = RequestStates(num_groups=1, seed_for=lambda request_id: 0)
    with pytest.raises(ValueError, match="request x, which the runner does not hold"):
        states.update(SchedulerOutput((diff("x", 0, 1, ((1,),)),)))
    with pytest.raises(ValueError, match="up to position 3 but the runner holds 2 tokens"):
        states.update(SchedulerOutput((diff("y", 0, 3, ((1,),)),), (NewRequestData("y", (1, 2), (), PARAMS),)))


def test_build_metadata_packs_chunks_and_maps_slots_through_block_tables():
    chunks = [
        SequenceChunk(np.array([10, 11, 12], np.int32), 0, (np.array([3], np.int32), [4])),
        SequenceChunk([20], 5, ([7, 2], [0, 6])),  # group 1's first block left the window
    ]
    token_ids, meta = build_metadata(chunks, block_size=4, num_groups=2)
    assert token_ids.tolist() == [10, 11, 12, 20] and token_ids.dtype == np.int32
    assert meta.positions.tolist() == [0, 1, 2, 5] and meta.positions.dtype == np.int64
    assert meta.query_start_loc.tolist() == [0, 3, 4] and meta.seq_lens.tolist() == [3, 6]
    assert [t.tolist() for t in meta.block_tables] == [[[3, 0], [7, 2]], [[4, 0], [0, 6]]]
    assert [s.tolist() for s in meta.slot_mappings] == [[12, 13, 14, 9], [16, 17, 18, 25]]
