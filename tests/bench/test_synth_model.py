"""`pagedserve synth-model`: random-weight GGUFs at real model shapes (pagedserve/bench/synth_*.py).

Tiny test shapes are written to tmp_path in every format and served end to end; the big shapes are
checked through their tensor plans only (no large files). Expected Q4_K_M type counts are those
llama.cpp prints when it loads the published Q4_K_M files of the real models.
"""

from __future__ import annotations

from collections import Counter

import gguf
import numpy as np
import pytest

from pagedserve.bench.synth_model import FORMATS, tensor_plan, use_more_bits, write_synth_model
from pagedserve.bench.synth_shapes import SHAPES, TEST_SHAPES
from pagedserve.bench.workloads import measure_decode
from pagedserve.cli.main import main
from pagedserve.engine.engine_factory import EngineArgs, build_engine
from pagedserve.model.gguf_file import read_gguf
from pagedserve.model.loader import load_model
from pagedserve.model.weight_formats import SUPPORTED_FORMATS


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    """(shape, format) -> path of a file written once per module."""
    folder = tmp_path_factory.mktemp("synth")
    written: dict[tuple[str, str], str] = {}

    def get(shape: str, fmt: str) -> str:
        if (shape, fmt) not in written:
            path = str(folder / f"{shape}-{fmt}.gguf")
            write_synth_model(shape, fmt, path, seed=1)
            written[shape, fmt] = path
        return written[shape, fmt]

    return get


def matrix_types(path: str) -> dict[str, str]:
    return {t.name: t.type_name for t in read_gguf(path).tensors.values() if len(t.shape) == 2}


def type_counts(shape: str, fmt: str) -> Counter:
    return Counter(t.type_name for t in tensor_plan(SHAPES[shape], fmt))


# ---- llama.cpp's Q4_K_M recipe ----------------------------------------------------------------

def test_use_more_bits_picks_first_and_last_eighth_and_every_third_layer_between():
    assert [i for i in range(16) if use_more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]
    assert [i for i in range(24) if use_more_bits(i, 24)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]


def test_q4km_llama_3_2_1b_matches_the_published_file():
    # llama.cpp on Llama-3.2-1B-Instruct-Q4_K_M: f32 34, q4_K 96, q6_K 17 tensors
    assert type_counts("llama-3.2-1b", "Q4_K_M") == Counter({"F32": 34, "Q4_K": 96, "Q6_K": 17})
    types = {t.name: t.type_name for t in tensor_plan(SHAPES["llama-3.2-1b"], "Q4_K_M")}
    assert types["token_embd.weight"] == "Q6_K" and "output.weight" not in types  # tied: embd is the output
    for i in range(16):
        more = i in (0, 1, 4, 7, 10, 13, 14, 15)
        assert types[f"blk.{i}.attn_v.weight"] == types[f"blk.{i}.ffn_down.weight"] == ("Q6_K" if more else "Q4_K")
        for name in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            assert types[f"blk.{i}.{name}.weight"] == "Q4_K"
        assert types[f"blk.{i}.attn_norm.weight"] == types[f"blk.{i}.ffn_norm.weight"] == "F32"


def test_q4km_llama_3_1_8b_untied_output_is_q6k_and_embedding_q4k():
    # llama.cpp on Meta-Llama-3.1-8B-Instruct-Q4_K_M: f32 66, q4_K 193, q6_K 33 tensors
    assert type_counts("llama-3.1-8b", "Q4_K_M") == Counter({"F32": 66, "Q4_K": 193, "Q6_K": 33})
    types = {t.name: t.type_name for t in tensor_plan(SHAPES["llama-3.1-8b"], "Q4_K_M")}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"


def test_q4km_qwen2_5_0_5b_falls_back_where_rows_are_not_whole_k_blocks():
    # hidden 896 is not a multiple of 256: Q4_K -> Q5_0, Q6_K -> Q8_0 (ffn_down has 4864 = 19 x 256 columns).
    # llama.cpp on Qwen2.5-0.5B-Instruct Q4_K_M: f32 121, q5_0 132, q8_0 13, q4_K 12, q6_K 12 tensors
    assert type_counts("qwen2.5-0.5b", "Q4_K_M") == Counter(
        {"F32": 121, "Q5_0": 132, "Q8_0": 13, "Q4_K": 12, "Q6_K": 12})
    types = {t.name: t.type_name for t in tensor_plan(SHAPES["qwen2.5-0.5b"], "Q4_K_M")}
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_v.weight"] == "Q8_0" and types["blk.3.attn_v.weight"] == "Q5_0"
    assert types["blk.0.ffn_down.weight"] == "Q6_K" and types["blk.3.ffn_down.weight"] == "Q4_K"
    assert types["blk.3.attn_q.bias"] == "F32"


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_pure_formats_give_every_matrix_the_format(fmt):
    plan = tensor_plan(SHAPES["llama-3.2-3b"], fmt)
    assert Counter(t.type_name for t in plan if len(t.shape) == 2) == Counter({fmt: 28 * 7 + 1})
    assert Counter(t.type_name for t in plan if len(t.shape) == 1) == Counter({"F32": 28 * 2 + 2})


def test_shapes_have_the_real_models_hyper_parameters():
    one_b, three_b, qwen = SHAPES["llama-3.2-1b"], SHAPES["llama-3.2-3b"], SHAPES["qwen2.5-0.5b"]
    assert (one_b.hidden_size, one_b.num_layers, one_b.num_heads, one_b.num_kv_heads, one_b.ffn_size,
            one_b.vocab_size, one_b.head_dim) == (2048, 16, 32, 8, 8192, 128256, 64)
    assert (three_b.hidden_size, three_b.num_layers, three_b.num_heads, three_b.num_kv_heads,
            three_b.ffn_size, three_b.head_dim) == (3072, 28, 24, 8, 8192, 128)
    assert one_b.tied_embeddings and three_b.tied_embeddings and one_b.rope_base == 500_000.0
    assert (qwen.architecture, qwen.hidden_size, qwen.num_layers, qwen.num_heads, qwen.num_kv_heads,
            qwen.ffn_size, qwen.vocab_size) == ("qwen2", 896, 24, 14, 2, 4864, 151936)
    assert qwen.qkv_bias and qwen.tied_embeddings and qwen.rope_scaling is None


def test_llama3_rope_factors_keep_short_wavelengths_and_divide_long_ones_by_the_factor():
    factors = SHAPES["llama-3.2-1b"].rope_freq_factors()  # factor 32, window 8192 / 4 .. 8192 / 1
    assert factors.shape == (32,) and factors.dtype == np.float32
    assert factors[0] == 1.0 and factors[-1] == 32.0
    assert np.all(np.diff(factors) >= 0) and np.all((factors >= 1) & (factors <= 32))
    inv_freq = 500_000.0 ** (-np.arange(0, 64, 2) / 64)
    wavelen = 2 * np.pi / inv_freq
    assert np.all(factors[wavelen < 2048] == 1.0) and np.all(factors[wavelen > 8192] == 32.0)
    assert SHAPES["qwen2.5-0.5b"].rope_freq_factors() is None


# ---- written files ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_and_generates_ignoring_eos(synth_file, fmt):
    path = synth_file("tiny-llama", fmt)
    types = matrix_types(path)
    if fmt == "Q4_K_M":  # 2 layers: use_more_bits holds for layer 1 only; the untied output is Q6_K
        q6k = {"blk.1.attn_v.weight", "blk.1.ffn_down.weight", "output.weight"}
        assert {n for n, t in types.items() if t == "Q6_K"} == q6k
        assert all(t == "Q4_K" for n, t in types.items() if n not in q6k)
    else:
        assert set(types.values()) == {fmt} and len(types) == 2 * 7 + 2
    model = load_model(path)
    shape = TEST_SHAPES["tiny-llama"]
    cfg = model.config
    assert (cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.ffn_size, cfg.num_heads, cfg.num_kv_heads,
            cfg.vocab_size, cfg.rope_base, cfg.rms_eps) == (
        "llama", 2, 256, 512, 4, 2, 1024, 500_000.0, np.float32(1e-5))
    np.testing.assert_array_equal(model.weights.rope_freq_factors, shape.rope_freq_factors())
    engine, _ = build_engine(EngineArgs(num_kv_blocks=16, kv_cache_memory=None, enable_prefix_caching=False), model=model, warm_up=False)
    prompts = [model.tokenizer.encode("Hello world"), model.tokenizer.encode("synthetic weights")]
    result = measure_decode(engine, prompts, 6)  # the bench's own workload: EOS must not stop it
    assert result.generated_tokens == 12


@pytest.mark.parametrize("fmt", ["Q4_K_M", "Q4_K", "F16"])
def test_qwen2_shape_with_bias_and_fallbacks_loads_and_generates(synth_file, fmt):
    path = synth_file("tiny-qwen2", fmt)
    types = matrix_types(path)
    if fmt == "Q4_K_M":  # hidden 384: K-quants fall back, except ffn_down (768 columns)
        assert types["token_embd.weight"] == "Q8_0" and "output.weight" not in types
        assert types["blk.0.attn_v.weight"] == "Q5_0" and types["blk.1.attn_v.weight"] == "Q8_0"
        assert types["blk.0.ffn_down.weight"] == "Q4_K" and types["blk.1.ffn_down.weight"] == "Q6_K"
        assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_up.weight"] == "Q5_0"
    elif fmt == "Q4_K":
        assert types["blk.0.attn_q.weight"] == "Q5_0" and types["blk.0.ffn_down.weight"] == "Q4_K"
    model = load_model(path)
    assert model.config.architecture == "qwen2" and model.config.rope_neox
    assert model.weights.layers[0].qkv_bias.shape == (384 + 2 * 2 * 64,)
    engine, _ = build_engine(EngineArgs(num_kv_blocks=16, kv_cache_memory=None, enable_prefix_caching=False), model=model, warm_up=False)
    result = measure_decode(engine, [model.tokenizer.encode("Hi")], 5)
    assert result.generated_tokens == 5


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-qwen2"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantized_weights_are_finite_centred_with_the_intended_spread(synth_file, shape, fmt):
    reader = gguf.GGUFReader(synth_file(shape, fmt))
    for t in reader.tensors:
        if len(t.shape) != 2:
            continue
        w = gguf.quants.dequantize(t.data, t.tensor_type)  # gguf's reference decoder, not ours
        assert np.all(np.isfinite(w)), t.name
        assert 0.017 < w.std() < 0.023, (t.name, t.tensor_type.name, w.std())
        assert abs(w.mean()) < 0.003, (t.name, t.tensor_type.name, w.mean())


def test_norm_weights_and_biases_are_f32(synth_file):
    tensors = read_gguf(synth_file("tiny-qwen2", "Q4_K_M")).tensors
    vectors = {n: t for n, t in tensors.items() if len(t.shape) == 1}
    assert {n.split(".")[-2] for n in vectors} == {"attn_norm", "ffn_norm", "output_norm", "attn_q", "attn_k",
                                                    "attn_v"}
    assert all(t.type_name == "F32" and np.all(np.isfinite(t.data)) for t in vectors.values())


def test_same_seed_same_file_other_seed_other_weights(tmp_path):
    paths = [str(tmp_path / f"{i}.gguf") for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6)):
        write_synth_model("tiny-llama", "Q4_0", path, seed=seed)
    data = [open(p, "rb").read() for p in paths]
    assert data[0] == data[1] and data[0] != data[2] and len(data[0]) == len(data[2])


# ---- the vocabulary ---------------------------------------------------------------------------

def test_llama3_style_vocabulary_round_trips_text_and_knows_its_control_tokens(synth_file):
    tok = load_model(synth_file("tiny-llama", "Q8_0")).tokenizer
    assert tok.vocab_size == 1024 and tok.add_bos
    text = "Hello wörld, 123!\n  tabs\tand ✓"
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and tok.decode(ids[1:]) == text
    assert len(tok.encode("hello", add_special=False)) < 5  # merges join letters
    eot = tok.encode("<|eot_id|>", add_special=False)
    assert len(eot) == 1 and tok.is_control(eot[0]) and eot[0] in tok.stop_ids
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_qwen2_style_vocabulary_ends_turns_with_im_end(synth_file):
    tok = load_model(synth_file("tiny-qwen2", "F16")).tokenizer
    assert tok.vocab_size == 1024 and not tok.add_bos
    assert tok.token_text(tok.eos_id) == "<|im_end|>" and tok.token_text(tok.bos_id) == "<|endoftext|>"
    assert tok.decode(tok.encode("Qwen digits 2024")) == "Qwen digits 2024"


@pytest.mark.parametrize("style, size, num_special, eos", [("qwen2", 151936, 293, "<|im_end|>"),
                                                          ("llama3", 128256, 256, "<|eot_id|>"),
                                                          ("llama3", 1024, 32, "<|eot_id|>")])
def test_vocabularies_have_unique_tokens_and_the_real_size(style, size, num_special, eos):
    # llama.cpp aborts on a vocabulary with a repeated token text (llama-vocab.cpp asserts it)
    from pagedserve.bench.synth_vocab import vocab_metadata

    meta = vocab_metadata(style, size, num_special)
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == size == len(set(tokens)) == len(meta["tokenizer.ggml.token_type"])
    assert len(meta["tokenizer.ggml.merges"]) == size - 256 - num_special
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == eos


# ---- the command ------------------------------------------------------------------------------

def test_cli_writes_the_file_and_reports_it(tmp_path, capsys):
    out = str(tmp_path / "m.gguf")
    assert main(["synth-model", "--shape", "tiny-qwen2", "--format", "Q8_0", "--out", out, "--seed", "3"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert set(matrix_types(out).values()) == {"Q8_0"}


def test_cli_rejects_an_unknown_shape_by_name(tmp_path, capsys):
    assert main(["synth-model", "--shape", "llama-9b", "--format", "Q8_0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown shape 'llama-9b'" in err and "llama-3.2-1b" in err
