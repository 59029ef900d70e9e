"""KVStore.copy_blocks against a plain NumPy reference: whole blocks of every layer of a group."""

import numpy as np
import pytest

from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.cache.kv_store import KVStore


def random_store(kv_dtype, rng, layer_windows=(0, 5, 0), block_size=3, num_blocks=7):
    spec = KVCacheSpec.from_layer_windows(layer_windows, block_size=block_size, num_blocks=num_blocks,
                                          num_kv_heads=2, head_dim=5, kv_dtype=kv_dtype)
    store = KVStore(spec)
    arrays = []
    for layer in store.layers.values():
        arrays += [layer.k, layer.v] + ([layer.k_scale, layer.v_scale] if layer.k_scale is not None else [])
    for array in arrays:
        array[...] = rng.integers(-100, 100, size=array.shape).astype(array.dtype)
    return store


def snapshot(store):
    return {i: [None if a is None else a.copy() for a in (l.k, l.v, l.k_scale, l.v_scale)]
            for i, l in store.layers.items()}


@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "int8"])
def test_copy_blocks_equals_a_per_layer_reference(kv_dtype):
    rng = np.random.default_rng(5)
    store = random_store(kv_dtype, rng)
    before = snapshot(store)
    # group 0 = full-attention layers (0, 2), group 1 = windowed layer 1; pairs applied in order
    blocks_to_copy = (((2, 5), (3, 6)), ((1, 4),))
    store.copy_blocks(blocks_to_copy)
    for layer_id, layer in store.layers.items():
        want = [None if a is None else a.copy() for a in before[layer_id]]
        for src, dst in blocks_to_copy[layer.group]:
            for a in want:
                if a is not None:
                    a[dst] = a[src]
        got = (layer.k, layer.v, layer.k_scale, layer.v_scale)
        for w, g in zip(want, got):
            if w is None:
                assert g is None
            else:
                np.testing.assert_array_equal(g, w)
    assert not np.array_equal(before[0][0][5], before[0][0][2])  # the copy changed something


def test_no_copies_change_nothing():
    rng = np.random.default_rng(6)
    store = random_store("f32", rng)
    before = snapshot(store)
    store.copy_blocks(())
    store.copy_blocks(((), ()))
    for layer_id, layer in store.layers.items():
        np.testing.assert_array_equal(layer.k, before[layer_id][0])
        np.testing.assert_array_equal(layer.v, before[layer_id][1])
