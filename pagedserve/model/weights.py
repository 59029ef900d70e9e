"""Gather a model's tensors from a GGUF file into per-layer weights ready for the kernels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from pagedserve.kernels.decoder_layer import LayerParams, Linear
from pagedserve.model.config import ModelConfig
from pagedserve.model.freed_memory import release_freed_memory
from pagedserve.model.gguf_file import GGUFFile, GGUFTensor, ModelLoadError
from pagedserve.model.layer_stack import LayerStack
from pagedserve.model.weight_formats import QUANT_FORMATS, SUPPORTED_FORMATS, dequantize
from pagedserve.model.weight_layout import LinearWeight, build_linear, build_linear_fused


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: np.ndarray  # [D]
    qkv: LinearWeight  # [q_size + 2 kv_size, D] (q, k, v rows fused when formats allow)
    qkv_split: tuple[LinearWeight, ...]  # the same as separate q, k, v when not fused (else ())
    qkv_bias: np.ndarray | None  # [q_size + 2 kv_size] (qwen2)
    q_norm: np.ndarray | None  # [head_dim] (gemma3)
    k_norm: np.ndarray | None  # [head_dim] (gemma3)
    attn_output: LinearWeight  # [D, q_size]
    post_attn_norm: np.ndarray | None  # [D] (gemma3)
    ffn_norm: np.ndarray  # [D]
    gate_up: LinearWeight  # [2 F, D] (gate rows then up rows, fused when formats allow)
    gate_up_split: tuple[LinearWeight, ...]
    ffn_down: LinearWeight  # [D, F]
    post_ffn_norm: np.ndarray | None  # [D] (gemma3)

    def params(self) -> LayerParams:
        """The arrays of this layer as the compiled layer body takes them (no copy)."""
        return LayerParams(
            attn_norm=self.attn_norm,
            qkv=_linear_parts(self.qkv, self.qkv_split),
            qkv_bias=_or_empty(self.qkv_bias),
            q_norm=_or_empty(self.q_norm),
            k_norm=_or_empty(self.k_norm),
            attn_output=_linear_parts(self.attn_output),
            post_attn_norm=_or_empty(self.post_attn_norm),
            ffn_norm=self.ffn_norm,
            gate_up=_linear_parts(self.gate_up, self.gate_up_split),
            ffn_down=_linear_parts(self.ffn_down),
            post_ffn_norm=_or_empty(self.post_ffn_norm),
        )


_EMPTY = np.zeros(0, dtype=np.float32)


def _or_empty(vector: np.ndarray | None) -> np.ndarray:
    return _EMPTY if vector is None else vector


def _linear_parts(fused: LinearWeight, split: tuple[LinearWeight, ...] = ()) -> tuple[Linear, ...]:
    """A projection as the kernels take it: its unfused parts when there are any, else the one matrix."""
    return tuple(Linear(w.codes, w.scale, w.minv, w.num_out) for w in (split or (fused,)))


@dataclass(frozen=True)
class ModelWeights:
    token_embedding: LinearWeight  # [V, D]
    output: LinearWeight  # [V, D] (the embedding itself when tied)
    output_norm: np.ndarray  # [D]
    layers: tuple[LayerWeights, ...]
    rope_freq_factors: np.ndarray | None  # [rope_dim / 2] (Llama 3.1 style rope_freqs)
    stack: LayerParams | None = None  # the layers as [L, ...] arrays when the model is uniform

    @property
    def nbytes(self) -> int:
        total = self.token_embedding.nbytes + self.output_norm.nbytes
        if self.output is not self.token_embedding:
            total += self.output.nbytes
        for layer in self.layers:
            for value in vars(layer).values():
                if isinstance(value, LinearWeight):
                    total += value.nbytes
                elif isinstance(value, tuple):
                    total += sum(w.nbytes for w in value)
                elif isinstance(value, np.ndarray):
                    total += value.nbytes
        return total


def dominant_format(gguf: GGUFFile) -> str:
    """The weight type holding most matrix elements (what a user calls the model's format)."""
    counts: Counter[str] = Counter()
    for t in gguf.tensors.values():
        if len(t.shape) == 2:
            counts[t.type_name] += int(np.prod(t.shape))
    return counts.most_common(1)[0][0] if counts else "F32"


def check_formats(gguf: GGUFFile) -> None:
    for t in gguf.tensors.values():
        if t.type_name not in SUPPORTED_FORMATS:
            raise ModelLoadError(
                f"tensor {t.name!r} has unsupported weight type {t.type_name} "
                f"(supported: {', '.join(SUPPORTED_FORMATS)})"
            )


def _vector(gguf: GGUFFile, name: str, size: int, required: bool = True) -> np.ndarray | None:
    t = gguf.tensors.get(name)
    if t is None:
        if required:
            raise ModelLoadError(f"{gguf.path}: missing tensor {name!r}")
        return None
    values = dequantize(t.type_name, t.data, int(np.prod(t.shape))).reshape(-1)
    if values.shape[0] != size:
        raise ModelLoadError(f"tensor {name!r} has {values.shape[0]} values, expected {size}")
    # A copy: a view would keep the whole memory-mapped file resident for a few small vectors.
    return np.array(values, dtype=np.float32, copy=True)


def _matrix(gguf: GGUFFile, name: str, shape: tuple[int, int]) -> GGUFTensor:
    t = gguf.tensors.get(name)
    if t is None:
        raise ModelLoadError(f"{gguf.path}: missing tensor {name!r}")
    if tuple(t.shape) != shape:
        raise ModelLoadError(f"tensor {name!r} has shape {t.shape}, expected {shape}")
    return t


def _fused(tensors: list[GGUFTensor]) -> tuple[LinearWeight, tuple[LinearWeight, ...]]:
    """One fused matrix when all parts share a format (fewer, larger kernel calls), else parts."""
    if len({t.type_name for t in tensors}) == 1:
        return build_linear_fused(tensors), ()
    parts = tuple(build_linear(t) for t in tensors)
    return parts[0], parts


def _release_tensors(gguf: GGUFFile, prefix: str) -> None:
    """Drop the file pages of the tensors named `prefix`... from resident memory (they are
    repacked), and the freed repacking temporaries with them."""
    for name, tensor in gguf.tensors.items():
        if name.startswith(prefix):
            gguf.release(tensor)
    release_freed_memory()


def _chunk_releaser(gguf: GGUFFile):
    """The release callback of a vocabulary-sized matrix: each chunk's file pages and temporaries."""
    def release(view: np.ndarray) -> None:
        gguf.release_bytes(view)
        release_freed_memory()
    return release


def _layer_formats_uniform(gguf: GGUFFile, num_layers: int) -> bool:
    """Every layer stores each matrix role in one quantized format, q/k/v alike and gate/up alike:
    the layers will repack to one layout per role and can be stacked (model/layer_stack.py)."""
    for names in (("attn_q", "attn_k", "attn_v"), ("attn_output",), ("ffn_gate", "ffn_up"), ("ffn_down",)):
        tensors = [gguf.tensors.get(f"blk.{i}.{name}.weight") for i in range(num_layers) for name in names]
        if any(t is None for t in tensors):
            return False
        formats = {t.type_name for t in tensors}
        if len(formats) != 1 or formats.pop() not in QUANT_FORMATS:
            return False
    return True


def _load_layer(gguf: GGUFFile, cfg: ModelConfig, i: int) -> LayerWeights:
    d, f = cfg.hidden_size, cfg.ffn_size
    p = f"blk.{i}."
    q = _matrix(gguf, p + "attn_q.weight", (cfg.q_size, d))
    k = _matrix(gguf, p + "attn_k.weight", (cfg.kv_size, d))
    v = _matrix(gguf, p + "attn_v.weight", (cfg.kv_size, d))
    qkv, qkv_split = _fused([q, k, v])
    bias = None
    if p + "attn_q.bias" in gguf.tensors:
        bias = np.concatenate([
            _vector(gguf, p + "attn_q.bias", cfg.q_size),
            _vector(gguf, p + "attn_k.bias", cfg.kv_size),
            _vector(gguf, p + "attn_v.bias", cfg.kv_size),
        ])
    gate = _matrix(gguf, p + "ffn_gate.weight", (f, d))
    up = _matrix(gguf, p + "ffn_up.weight", (f, d))
    gate_up, gate_up_split = _fused([gate, up])
    is_gemma = cfg.architecture == "gemma3"
    return LayerWeights(
        attn_norm=_vector(gguf, p + "attn_norm.weight", d),
        qkv=qkv,
        qkv_split=qkv_split,
        qkv_bias=bias,
        q_norm=_vector(gguf, p + "attn_q_norm.weight", cfg.head_dim, required=is_gemma),
        k_norm=_vector(gguf, p + "attn_k_norm.weight", cfg.head_dim, required=is_gemma),
        attn_output=build_linear(_matrix(gguf, p + "attn_output.weight", (d, cfg.q_size))),
        post_attn_norm=_vector(gguf, p + "post_attention_norm.weight", d, required=is_gemma),
        ffn_norm=_vector(gguf, p + "ffn_norm.weight", d),
        gate_up=gate_up,
        gate_up_split=gate_up_split,
        ffn_down=build_linear(_matrix(gguf, p + "ffn_down.weight", (d, f))),
        post_ffn_norm=_vector(gguf, p + "post_ffw_norm.weight", d, required=is_gemma),
    )


def load_weights(gguf: GGUFFile, cfg: ModelConfig) -> ModelWeights:
    """Repack every weight of the model; a model whose layers share their formats comes with the
    stacked arrays (`ModelWeights.stack`), its layers being views into them."""
    check_formats(gguf)
    d = cfg.hidden_size
    stack = LayerStack(cfg.num_layers) if _layer_formats_uniform(gguf, cfg.num_layers) else None
    layers = []
    for i in range(cfg.num_layers):
        layer = _load_layer(gguf, cfg, i)
        layers.append(layer if stack is None else stack.adopt(i, layer))
        del layer  # a stacked layer's own arrays go now, not after the whole model
        _release_tensors(gguf, f"blk.{i}.")
    # The vocabulary matrices are the largest (1B: 128256 rows): their file pages go chunk by chunk.
    embedding = build_linear(_matrix(gguf, "token_embd.weight", (cfg.vocab_size, d)), _chunk_releaser(gguf))
    output = embedding
    if "output.weight" in gguf.tensors:
        output = build_linear(_matrix(gguf, "output.weight", (cfg.vocab_size, d)), _chunk_releaser(gguf))
    factors = _vector(gguf, "rope_freqs.weight", cfg.rope_dim // 2, required=False)
    _release_tensors(gguf, "")
    return ModelWeights(
        token_embedding=embedding,
        output=output,
        output_norm=_vector(gguf, "output_norm.weight", d),
        layers=tuple(layers),
        rope_freq_factors=factors,
        stack=None if stack is None else stack.params(layers),
    )
