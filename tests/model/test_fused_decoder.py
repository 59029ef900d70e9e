"""The fused decoder (all layers in one compiled call) is bit-identical to the generic path."""

import numpy as np
import pytest

from pagedserve.worker.batch_metadata import SequenceChunk, build_metadata


def _step(prompt_len: int, decode_contexts: list[int]) -> list[SequenceChunk]:
    """A mixed batch: one prefill chunk plus single-token decodes at the given context lengths."""
    rng = np.random.default_rng(prompt_len)
    reqs = [SequenceChunk(rng.integers(100, 9000, prompt_len).tolist(), 0,
                          (list(range(1, 1 + -(-prompt_len // 16))),))]
    next_block = 1 + -(-prompt_len // 16)
    for i, ctx in enumerate(decode_contexts):
        n = -(-ctx // 16)
        reqs.append(SequenceChunk([int(rng.integers(100, 9000))], ctx - 1,
                                  (list(range(next_block, next_block + n)),)))
        next_block += n
    return reqs


@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_fused_equals_generic(make_engine, kv_dtype):
    fused = make_engine(num_kv_blocks=64, kv_dtype=kv_dtype).runner.transformer
    generic = make_engine(num_kv_blocks=64, kv_dtype=kv_dtype).runner.transformer
    assert fused.fused
    generic.fused = False
    for step in (_step(37, []), _step(5, [40, 17, 3])):
        ids, meta = build_metadata(step, 16, 1)
        np.testing.assert_array_equal(fused.forward(ids, meta), generic.forward(ids, meta))
    k_f, v_f = fused.kv.group_arrays(0)
    k_g, v_g = generic.kv.group_arrays(0)
    assert k_f.dtype == (np.uint16 if kv_dtype == "f16" else np.float32) and np.count_nonzero(k_f) > 0
    np.testing.assert_array_equal(k_f, k_g)
    np.testing.assert_array_equal(v_f, v_g)  # f16: uint16 half bits, compared bit for bit


def test_int8_kv_takes_the_generic_path(make_engine):
    # The fused call has no scale arrays: int8 caches must not take it.
    assert not make_engine(num_kv_blocks=8, kv_dtype="int8").runner.transformer.fused
