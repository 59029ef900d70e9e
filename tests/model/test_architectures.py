"""Every architecture x a spread of weight formats matches an independent float64 NumPy reference.

Each case writes a tiny random GGUF model (tests/model/synthetic_gguf.py), loads it with
`load_model`, and checks
- prompt logits (`window_logits`, all positions) against `ReferenceModel.logits` within 1e-4 of
  the logit scale (the reference uses the same dequantized weights, so only float32 rounding
  separates them), and
- greedy generation through the engine (prefill + KV-cache decode) against the reference's
  argmax chain, token for token.
A Gemma 3 case with six layers (five local, one global), a window of 8 and a longer prompt checks
that the window is applied, to local layers only, with local/global RoPE bases and scaling.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from pagedserve.model.loader import load_model
from pagedserve.worker.perplexity import window_logits
from pagedserve.sampling_params import SamplingParams
from pagedserve.engine.engine_factory import EngineArgs, build_engine
from tests.model.reference_forward import ReferenceModel
from tests.model.synthetic_gguf import VOCAB_SIZE, SynthSpec, encode, write_model

BLOCK_SIZE = 4  # small blocks: prompts span several blocks, windows free some
REL_TOL = 1e-4  # max |ours - reference| / max |reference|: float weights (float32 matmuls)
# Quantized weights meet activations rounded to 16 bits per 32 inputs (kernels/quant_matmul.py):
# about 2e-4 measured on these random models, so they get 5e-4.
REL_TOL_QUANT = 5e-4


def _tol(fmt: str) -> float:
    return REL_TOL if fmt in ("F32", "F16", "BF16") else REL_TOL_QUANT
K256 = dict(hidden=256, ffn=512)  # K-quants need inputs that are multiples of 256

CASES = [
    SynthSpec("llama", "F32"),
    SynthSpec("llama", "F16", tied=False),
    SynthSpec("llama", "Q8_0", rope_freqs=True, seed=1),
    SynthSpec("llama", "Q4_0", tied=False, rope_dim=8, rope_linear=2.0, seed=14),  # partial rotary
    SynthSpec("llama", "Q4_K", **K256, seed=3),
    SynthSpec("llama", "Q6_K", tied=False, **K256, seed=4),
    SynthSpec("qwen2", "BF16", seed=5),
    SynthSpec("qwen2", "Q5_0", tied=False, seed=6),
    SynthSpec("qwen2", "Q4_1", seed=7),
    SynthSpec("qwen2", "Q5_K", **K256, seed=8),
    SynthSpec("gemma3", "F32", head_dim=32, seed=9),  # key_length != hidden / heads
    SynthSpec("gemma3", "Q5_1", seed=10),
    SynthSpec("gemma3", "Q8_0", head_dim=32, seed=11),
    SynthSpec("gemma3", "Q4_K", **K256, seed=12),
]

GEMMA_WINDOW = SynthSpec("gemma3", "Q8_0", layers=6, sliding_window=8, rope_base=1e6,
                         rope_linear=8.0, seed=13)


def _case_id(spec: SynthSpec) -> str:
    return f"{spec.arch}-{spec.fmt}{'' if spec.tied else '-untied'}-s{spec.seed}"


def _prompt(seed: int, n: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(1000 + seed).integers(3, VOCAB_SIZE, n)]


def _engine(model, **overrides):
    # f32 KV: these cases check the forward pass's arithmetic; KV rounding has its own tests (tests/cache)
    args = EngineArgs(**{"num_kv_blocks": 64, "kv_cache_memory": None, "block_size": BLOCK_SIZE,
                         "kv_dtype": "f32", **overrides})
    engine, _ = build_engine(args, model=model, warm_up=False)
    return engine


def _assert_close(ours: np.ndarray, ref: np.ndarray, tol: float) -> None:
    assert ours.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours.astype(np.float64) - ref).max())
    assert err <= tol * scale, f"max abs diff {err:.3g} vs logit scale {scale:.3g}"


def _assert_greedy_matches(engine, ref: ReferenceModel, prompt: list[int], n: int, tol: float) -> None:
    expected, margin = ref.greedy(prompt, n)
    scale = float(np.abs(ref.logits(prompt)).max())
    assert margin > 2 * tol * scale, "near-tie in the reference chain: pick another seed"
    out = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))
    assert out[0].new_token_ids == expected


@pytest.fixture(scope="module", params=CASES, ids=_case_id)
def built(request, tmp_path_factory):
    """(spec, loaded model, reference) of one case, written and loaded once per module."""
    spec = request.param
    path = write_model(str(tmp_path_factory.mktemp("synth") / f"{_case_id(spec)}.gguf"), spec)
    return spec, load_model(path), ReferenceModel(path)


def test_config_reads_the_spec(built):
    spec, model, _ = built
    cfg = model.config
    assert (cfg.architecture, cfg.weight_format) == (spec.arch, spec.fmt)
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_size) == (spec.layers, spec.hidden, spec.ffn)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (spec.heads, spec.kv_heads, spec.dh)
    assert cfg.vocab_size == VOCAB_SIZE == model.tokenizer.vocab_size
    assert cfg.rope_neox == (spec.arch != "llama")
    assert (spec.arch == "gemma3") == (cfg.gated_activation == "gelu_tanh")
    if spec.arch == "gemma3":
        assert cfg.embedding_scale == pytest.approx(np.sqrt(spec.hidden))
        assert cfg.layer_windows == (spec.sliding_window,) * spec.layers


def test_logits_match_reference(built):
    spec, model, ref = built
    prompt = _prompt(spec.seed, 13)
    engine = _engine(model)
    _assert_close(window_logits(engine.runner.transformer, prompt, BLOCK_SIZE), ref.logits(prompt),
                  _tol(spec.fmt))


def test_greedy_generation_matches_reference(built):
    spec, model, ref = built
    _assert_greedy_matches(_engine(model), ref, _prompt(spec.seed, 6), 8, _tol(spec.fmt))


def test_tokenizer_round_trip(built):
    _, model, _ = built
    tok = model.tokenizer
    ids = tok.encode("the cat sat on the mat, and the dog was in it")
    assert tok.decode(ids) == "the cat sat on the mat, and the dog was in it"
    assert len(ids) < 30  # merges were used


# ---- Gemma 3 sliding window ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_window(tmp_path_factory):
    path = write_model(str(tmp_path_factory.mktemp("gemma") / "window.gguf"), GEMMA_WINDOW)
    return load_model(path), ReferenceModel(path)


def test_gemma3_window_layers(gemma_window):
    model, ref = gemma_window
    assert model.config.layer_windows == (8, 8, 8, 8, 8, 0)
    assert [ref.is_local(i) for i in range(6)] == [True] * 5 + [False]


def test_gemma3_window_logits(gemma_window):
    """A 24-token prompt, three windows long: the window changes logits, and ours follow it."""
    model, ref = gemma_window
    prompt = _prompt(GEMMA_WINDOW.seed, 24)
    expected = ref.logits(prompt)
    ref.window = 0  # the same model with full attention everywhere
    try:
        unwindowed = ref.logits(prompt)
    finally:
        ref.window = GEMMA_WINDOW.sliding_window
    np.testing.assert_allclose(unwindowed[:8], expected[:8], rtol=0, atol=1e-9)
    assert np.abs(unwindowed[8:] - expected[8:]).max() > 0.1, "window should matter"
    _assert_close(window_logits(_engine(model).runner.transformer, prompt, BLOCK_SIZE), expected,
                  _tol(GEMMA_WINDOW.fmt))


@pytest.mark.parametrize("chunk", [512, 5], ids=["one-prefill", "chunked-prefill"])
def test_gemma3_window_generation(gemma_window, chunk):
    """Prompt and generated tokens run past the window; chunks smaller than it also agree."""
    model, ref = gemma_window
    engine = _engine(model, max_num_batched_tokens=chunk)
    _assert_greedy_matches(engine, ref, _prompt(GEMMA_WINDOW.seed, 14), 8, _tol(GEMMA_WINDOW.fmt))


# ---- the helper's own encoders --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                 "Q4_K", "Q5_K", "Q6_K"])
def test_synthetic_encoders_round_trip(fmt):
    """encode() writes blocks gguf-py decodes back to about the values given."""
    values = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    data, qtype = encode(values, fmt)
    back = np.asarray(gguf.quants.dequantize(data, qtype)).reshape(values.shape)
    bits = {"F16": 11, "BF16": 8, "Q8_0": 8, "Q6_K": 6, "Q5_0": 5, "Q5_1": 5, "Q5_K": 5}.get(fmt, 4)
    assert np.abs(back - values).max() <= np.abs(values).max() * 2.0 ** (1 - bits)
