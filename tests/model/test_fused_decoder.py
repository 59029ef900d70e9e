"""The one decoder layer (kernels/decoder_layer.py) gives the same bits on every path: all layers
in one compiled call, one compiled call per layer, and the layer body interpreted (float weights)."""

import numpy as np
import pytest

from pagedserve.engine.engine_factory import EngineArgs, build_engine
from pagedserve.kernels.decoder_layer import decoder_layer
from pagedserve.model.loader import load_model
from pagedserve.worker.batch_metadata import SequenceChunk, build_metadata
from pagedserve.worker.perplexity import window_logits
from tests.model.reference_forward import ReferenceModel
from tests.model.synthetic_gguf import SynthSpec, encode, model_metadata, model_tensors, write_gguf, write_model


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


def _per_layer(transformer, interpreted: bool = False):
    """Make `transformer` call the layer once per layer (interpreted: its Python source)."""
    transformer.fused = False
    if interpreted:
        transformer._run_layer = [decoder_layer.py_func] * len(transformer._run_layer)
    return transformer


@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_fused_equals_per_layer_and_interpreted(make_engine, kv_dtype):
    fused = make_engine(num_kv_blocks=64, kv_dtype=kv_dtype).runner.transformer
    per_layer = _per_layer(make_engine(num_kv_blocks=64, kv_dtype=kv_dtype).runner.transformer)
    interpreted = _per_layer(make_engine(num_kv_blocks=64, kv_dtype=kv_dtype).runner.transformer, True)
    assert fused.fused
    for step in (_step(37, []), _step(5, [40, 17, 3])):
        ids, meta = build_metadata(step, 16, 1)
        expected = fused.forward(ids, meta)
        np.testing.assert_array_equal(per_layer.forward(ids, meta), expected)
        np.testing.assert_array_equal(interpreted.forward(ids, meta), expected)
    k_f, v_f = fused.kv.group_arrays(0)
    assert k_f.dtype == (np.uint16 if kv_dtype == "f16" else np.float32) and np.count_nonzero(k_f) > 0
    for other in (per_layer, interpreted):
        k_o, v_o = other.kv.group_arrays(0)
        np.testing.assert_array_equal(k_o, k_f)
        np.testing.assert_array_equal(v_o, v_f)  # f16: uint16 half bits, compared bit for bit


def test_int8_kv_takes_the_per_layer_path(make_engine):
    # The one-call path has no scale arrays: int8 caches must not take it.
    assert not make_engine(num_kv_blocks=8, kv_dtype="int8").runner.transformer.fused


def _engine(model):
    args = EngineArgs(num_kv_blocks=32, kv_cache_memory=None, block_size=4, kv_dtype="f32")
    return build_engine(args, model=model, warm_up=False)[0]


def _prompt(n: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(n).integers(3, 200, n)]


def test_gemma3_norms_and_gelu_take_the_one_call_path(tmp_path):
    """Gemma 3 blocks (q/k norms, post-norms, GELU) stack when uniform; both paths agree."""
    spec = SynthSpec("gemma3", "Q8_0", seed=21)  # 2 layers, both windowed: one KV group
    path = write_model(str(tmp_path / "gemma.gguf"), spec)
    model = load_model(path)
    assert model.weights.stack is not None and model.weights.stack.q_norm.shape[1] == spec.dh
    fused = _engine(model).runner.transformer
    assert fused.fused
    prompt = _prompt(14)
    logits = window_logits(fused, prompt, 4)
    np.testing.assert_array_equal(window_logits(_per_layer(_engine(model).runner.transformer), prompt, 4), logits)
    ref = ReferenceModel(path).logits(prompt)
    assert np.abs(logits - ref).max() <= 5e-4 * max(1.0, np.abs(ref).max())


def test_mixed_formats_run_per_layer_with_split_projections(tmp_path):
    """Layer 0 has v in another format than q and k (split projection), layer 1 a different
    ffn_down format (no stack): the compiled layer handles both, bit-identical to the interpreted
    one, and matches the float64 reference."""
    spec = SynthSpec("llama", "Q4_0", seed=22)
    tensors = model_tensors(spec)
    raw = {name: encode(tensors.pop(name), "Q8_0") for name in ("blk.0.attn_v.weight", "blk.1.ffn_down.weight")}
    path = write_gguf(str(tmp_path / "mixed.gguf"), model_metadata(spec), tensors, spec.fmt, raw=raw)
    model = load_model(path)
    assert model.weights.stack is None
    assert len(model.weights.layers[0].qkv_split) == 3 and not model.weights.layers[1].qkv_split
    compiled = _engine(model).runner.transformer
    assert not compiled.fused and compiled._run_layer == [decoder_layer] * 2
    prompt = _prompt(13)
    logits = window_logits(compiled, prompt, 4)
    np.testing.assert_array_equal(
        window_logits(_per_layer(_engine(model).runner.transformer, interpreted=True), prompt, 4), logits)
    ref = ReferenceModel(path).logits(prompt)
    assert np.abs(logits - ref).max() <= 5e-4 * max(1.0, np.abs(ref).max())


def test_float_weights_run_the_layer_interpreted(tmp_path):
    model = load_model(write_model(str(tmp_path / "f32.gguf"), SynthSpec("llama", "F32", seed=23)))
    transformer = _engine(model).runner.transformer
    assert not transformer.fused and transformer._run_layer == [decoder_layer.py_func] * 2
