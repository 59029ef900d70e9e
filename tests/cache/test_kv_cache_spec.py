import numpy as np
import pytest

from pagedserve.cache.cache_sizing import num_blocks_for_memory, parse_memory, resolve_num_blocks
from pagedserve.cache.kv_cache_spec import KVCacheGroupSpec, KVCacheSpec, make_layer_windows
from pagedserve.cache.kv_store import KVStore


def create_spec(layer_windows=(0, 0), kv_dtype="f32", block_size=16, num_blocks=8):
    return KVCacheSpec.from_layer_windows(
        layer_windows, block_size=block_size, num_blocks=num_blocks, num_kv_heads=2, head_dim=8, kv_dtype=kv_dtype
    )


def test_no_window_is_one_full_group():
    spec = create_spec(make_layer_windows(4))
    assert spec.groups == (KVCacheGroupSpec((0, 1, 2, 3), 0),)


def test_window_on_all_layers_is_one_windowed_group():
    spec = create_spec(make_layer_windows(4, sliding_window=256))
    assert spec.groups == (KVCacheGroupSpec((0, 1, 2, 3), 256),)


def test_gemma3_pattern_gives_global_and_local_groups():
    spec = create_spec(make_layer_windows(26, sliding_window=512, global_layer_ids=(5, 11, 17)))
    assert spec.groups[0] == KVCacheGroupSpec((5, 11, 17), 0)
    assert spec.groups[1].sliding_window == 512
    assert spec.groups[1].layer_ids == tuple(i for i in range(26) if i not in (5, 11, 17))


def test_bytes_per_block_and_token():
    spec = create_spec((0, 0, 64), kv_dtype="f16", block_size=16)
    # group 0: 2 layers, group 1: 1 layer; 2 (K,V) * layers * 16 * 2 heads * 8 dim * 2 bytes
    assert spec.bytes_per_block == (2 * 2 * 16 * 2 * 8 * 2, 2 * 1 * 16 * 2 * 8 * 2)
    assert spec.bytes_per_token == 2 * 3 * 2 * 8 * 2
    assert spec.total_bytes == 8 * (2048 + 1024)


@pytest.mark.parametrize("kv_dtype,element", [("f32", np.float32), ("f16", np.uint16), ("int8", np.int8)])
def test_kv_store_allocates_the_spec_bytes_in_kernel_element_types(kv_dtype, element):
    # f16 caches are uint16 words holding half bits: the kernels have no float16 type.
    spec = create_spec((0, 0, 64), kv_dtype=kv_dtype, block_size=4)
    store = KVStore(spec)
    assert store.nbytes == spec.total_bytes
    for layer in store.layers.values():
        assert layer.k.dtype == layer.v.dtype == element
        assert layer.k.shape == (8, 2, 8, 4) and layer.v.shape == (8, 2, 4, 8)
        assert (layer.k_scale is None) == (kv_dtype != "int8")


def test_int8_bytes_include_scales():
    spec = create_spec((0,), kv_dtype="int8", block_size=4)
    assert spec.bytes_per_block == (2 * 1 * 4 * 2 * 8 * 1 + 2 * 1 * 4 * 2 * 4,)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(block_size=0),
        dict(num_blocks=1),
        dict(groups=()),
        dict(kv_dtype="bf16"),
        dict(groups=(KVCacheGroupSpec((0, 1)), KVCacheGroupSpec((1,), 8))),
    ],
)
def test_invalid_spec_raises(kwargs):
    args = dict(block_size=16, num_blocks=8, groups=(KVCacheGroupSpec((0,)),), num_kv_heads=1, head_dim=4,
                kv_dtype="f32")
    args.update(kwargs)
    with pytest.raises(ValueError):
        KVCacheSpec(**args)


def test_invalid_group_raises():
    with pytest.raises(ValueError):
        KVCacheGroupSpec(())
    with pytest.raises(ValueError):
        KVCacheGroupSpec((0,), -1)


def test_parse_memory():
    assert parse_memory("1GiB") == 1 << 30
    assert parse_memory("512MiB") == 512 << 20
    assert parse_memory("1e9") == 10**9
    assert parse_memory("2GB") == 2 * 10**9
    assert parse_memory(4096) == 4096
    for bad in ("", "1XB", "-1GiB", "GiB", "0"):
        with pytest.raises(ValueError):
            parse_memory(bad)


def test_num_blocks_for_memory():
    # one group of 2 layers, block 16, 2 heads * 8 dim, f32: 2*2*16*2*8*4 = 4096 B per block
    kwargs = dict(block_size=16, group_num_layers=(2,), num_kv_heads=2, head_dim=8, kv_dtype="f32")
    assert num_blocks_for_memory(4096 * 10 + 100, **kwargs) == 10
    assert resolve_num_blocks(None, "1MiB", **kwargs) == 256
    assert resolve_num_blocks(7, None, **kwargs) == 7
    with pytest.raises(ValueError):
        num_blocks_for_memory(4096, **kwargs)
    with pytest.raises(ValueError):
        resolve_num_blocks(7, "1MiB", **kwargs)
