"""`pagedserve synth-model`: random-weight GGUF files at the shapes of popular models.

Speed depends on sizes and formats, not on what the weights say, so a file with the shape of
Llama-3.2-1B and random weights measures what the real model would. The file carries everything
both pagedserve and llama.cpp need to load it (architecture metadata, a synthetic byte-level BPE
vocabulary and a chat template), so the same file serves both sides of a comparison.

Formats: every format pagedserve serves, applied to every matrix (as `llama-quantize --pure`),
or "Q4_K_M", llama.cpp's mixture (`q4km_type`). Norm weights, biases and rope factors stay F32.
Quantized blocks are written directly: random code bytes and f16 scales chosen so that the
dequantized weights have mean about 0 and standard deviation about WEIGHT_STD. A 3B Q4_K_M file
(2 GB) takes about 10 s of generation plus the time to write it to disk.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from pagedserve.bench.synth_blocks import BLOCK, FLOAT_BYTES, random_matrix
from pagedserve.bench.synth_shapes import SHAPES, ModelShape, get_shape
from pagedserve.bench.synth_vocab import vocab_metadata
from pagedserve.model.weight_formats import SUPPORTED_FORMATS

WEIGHT_STD = 0.02  # like the initializer_range of the real models' configs
MIXTURES = ("Q4_K_M",)
FORMATS = SUPPORTED_FORMATS + MIXTURES

# llama.cpp's LLAMA_FTYPE of each file (general.file_type). A pure K-quant file is labelled with the
# _S mixture of its type, as `llama-quantize --pure ... Q4_K_S` labels the same tensors.
_FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K": 14,
              "Q4_K_M": 15, "Q5_K": 16, "Q6_K": 18, "BF16": 32}


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order: [rows, cols] for a matrix
    type_name: str  # GGML type

    @property
    def nbytes(self) -> int:
        n = int(np.prod(self.shape))
        if self.type_name in FLOAT_BYTES:
            return n * FLOAT_BYTES[self.type_name]
        per_block, block_bytes = BLOCK[self.type_name]
        return n // per_block * block_bytes


# ---- llama.cpp's Q4_K_M recipe ----------------------------------------------------------------

def use_more_bits(layer: int, num_layers: int) -> bool:
    """llama.cpp's rule for the layers that get more bits: the first and last eighth of the
    layers, and every third layer between them (src/llama-quant.cpp, `use_more_bits`)."""
    eighth = num_layers // 8
    return layer < eighth or layer >= 7 * num_layers // 8 or (layer - eighth) % 3 == 2


def fallback_type(type_name: str, num_cols: int) -> str:
    """The type llama.cpp writes when rows of `num_cols` are not whole blocks of `type_name`
    (src/llama-quant.cpp, `tensor_type_fallback`): a 32-weight-block type of about the same
    bits, or F16 when even that does not fit."""
    if type_name in FLOAT_BYTES or num_cols % BLOCK[type_name][0] == 0:
        return type_name
    wider = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}.get(type_name, "F16")
    return wider if wider != "F16" and num_cols % BLOCK[wider][0] == 0 else "F16"


def q4km_type(name: str, num_cols: int, layer: int, num_layers: int, tied: bool) -> str:
    """The type llama-quantize Q4_K_M gives matrix `name` (dense, non-Falcon models; from
    `llama_tensor_get_type_impl` in llama.cpp's src/llama-quant.cpp):
    - output.weight, or token_embd.weight when it doubles as the output (tied embeddings):
      Q6_K, or Q8_0 when the rows are not whole 256-weight blocks;
    - attn_v and ffn_down: Q6_K in the `use_more_bits` layers (llama.cpp counts attn_v tensors
      and ffn_down layers in layer order, so the counter is the layer index);
    - everything else Q4_K; then the block-size fallback."""
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "Q6_K" if num_cols % 256 == 0 else "Q8_0"
    chosen = "Q4_K"
    if (name.endswith("attn_v.weight") or name.endswith("ffn_down.weight")) and use_more_bits(layer, num_layers):
        chosen = "Q6_K"
    return fallback_type(chosen, num_cols)


def tensor_plan(shape: ModelShape, fmt: str) -> list[TensorPlan]:
    """Every tensor of a `shape` model in format `fmt`, in file order."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    d, f = shape.hidden_size, shape.ffn_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim

    def matrix(name: str, rows: int, cols: int, layer: int = -1) -> TensorPlan:
        if fmt in MIXTURES:
            type_name = q4km_type(name, cols, layer, shape.num_layers, shape.tied_embeddings)
        else:
            type_name = fallback_type(fmt, cols)
        return TensorPlan(name, (rows, cols), type_name)

    def vector(name: str, size: int) -> TensorPlan:
        return TensorPlan(name, (size,), "F32")

    plan = []
    if shape.rope_scaling is not None:
        plan.append(vector("rope_freqs.weight", shape.head_dim // 2))
    plan.append(matrix("token_embd.weight", shape.vocab_size, d))
    for i in range(shape.num_layers):
        p = f"blk.{i}."
        plan.append(vector(p + "attn_norm.weight", d))
        plan += [matrix(p + "attn_q.weight", q, d, i), matrix(p + "attn_k.weight", kv, d, i),
                 matrix(p + "attn_v.weight", kv, d, i)]
        if shape.qkv_bias:
            plan += [vector(p + "attn_q.bias", q), vector(p + "attn_k.bias", kv), vector(p + "attn_v.bias", kv)]
        plan.append(matrix(p + "attn_output.weight", d, q, i))
        plan.append(vector(p + "ffn_norm.weight", d))
        plan += [matrix(p + "ffn_gate.weight", f, d, i), matrix(p + "ffn_up.weight", f, d, i),
                 matrix(p + "ffn_down.weight", d, f, i)]
    plan.append(vector("output_norm.weight", d))
    if not shape.tied_embeddings:
        plan.append(matrix("output.weight", shape.vocab_size, d))
    return plan


# ---- the file ----------------------------------------------------------------------------------

def _metadata(shape: ModelShape, fmt: str) -> dict:
    """GGUF key/values: what llama.cpp's loader requires for the architecture and what
    pagedserve's model/config.py reads, plus the synthetic tokenizer."""
    arch = shape.architecture
    meta = {
        "general.name": f"{shape.name} (random weights)",
        "general.file_type": _FILE_TYPE[fmt],
        "general.quantization_version": 2,
        f"{arch}.vocab_size": shape.vocab_size,
        f"{arch}.context_length": shape.context_length,
        f"{arch}.embedding_length": shape.hidden_size,
        f"{arch}.block_count": shape.num_layers,
        f"{arch}.feed_forward_length": shape.ffn_size,
        f"{arch}.attention.head_count": shape.num_heads,
        f"{arch}.attention.head_count_kv": shape.num_kv_heads,
        f"{arch}.rope.freq_base": shape.rope_base,
        f"{arch}.rope.dimension_count": shape.head_dim,
        f"{arch}.attention.layer_norm_rms_epsilon": shape.rms_eps,
    }
    meta.update(vocab_metadata(shape.vocab_style, shape.vocab_size, shape.num_special_tokens))
    return meta


def _add_metadata(writer, meta: dict) -> None:
    from gguf import GGUFValueType

    for key, value in meta.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:  # a list of str or of int: arrays as llama.cpp's converter writes them (int32, str)
            sub_type = GGUFValueType.STRING if isinstance(value[0], str) else GGUFValueType.INT32
            writer.add_key_value(key, list(value), GGUFValueType.ARRAY, sub_type=sub_type)


def _tensor_data(t: TensorPlan, shape: ModelShape, rng: np.random.Generator) -> np.ndarray:
    if len(t.shape) == 2:
        return random_matrix(t.type_name, t.shape[0], t.shape[1], rng, WEIGHT_STD)
    if t.name == "rope_freqs.weight":
        return shape.rope_freq_factors()
    if t.name.endswith(".bias"):
        return (rng.standard_normal(t.shape, dtype=np.float32) * np.float32(WEIGHT_STD)).astype(np.float32)
    return rng.uniform(0.9, 1.1, t.shape).astype(np.float32)  # norm weights, about 1 as trained ones


def write_synth_model(shape_name: str, fmt: str, out_path: str, seed: int = 0) -> list[TensorPlan]:
    """Write a random-weight GGUF of shape `shape_name` in format `fmt` to `out_path`; returns
    the tensors written. Tensors are generated and written one at a time, so memory stays at
    about the largest tensor. Raises ValueError for an unknown shape or format."""
    from gguf import GGMLQuantizationType, GGUFWriter

    shape = get_shape(shape_name)
    plan = tensor_plan(shape, fmt)
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(out_path, shape.architecture)
    try:
        _add_metadata(writer, _metadata(shape, fmt))
        for t in plan:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes,
                                   raw_dtype=GGMLQuantizationType[t.type_name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in plan:
            writer.write_tensor_data(_tensor_data(t, shape, rng))
    finally:
        writer.close()
    return plan


# ---- the command -------------------------------------------------------------------------------

def add_synth_model_parser(sub) -> None:
    p = sub.add_parser("synth-model", help="write a random-weight GGUF at the shape of a popular model")
    p.add_argument("--shape", required=True, metavar="NAME", help=f"model shape: {', '.join(SHAPES)}")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="weight format of every matrix, or Q4_K_M for llama.cpp's mixture")
    p.add_argument("--out", required=True, help="output .gguf path")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.set_defaults(func=cmd_synth_model)


def cmd_synth_model(ns: argparse.Namespace) -> int:
    from collections import Counter

    start = time.perf_counter()
    plan = write_synth_model(ns.shape, ns.format, ns.out, ns.seed)
    counts = Counter(t.type_name for t in plan if len(t.shape) == 2)
    total = sum(t.nbytes for t in plan)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"wrote {ns.out}: {ns.shape} {ns.format}, {total / 1e9:.2f} GB of tensors "
          f"(matrices: {kinds}) in {time.perf_counter() - start:.1f} s")
    return 0
