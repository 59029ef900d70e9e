"""Model hyper-parameters read from GGUF metadata, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pagedserve.model.gguf_file import ModelLoadError

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gemma3")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    name: str
    num_layers: int
    hidden_size: int
    ffn_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rms_eps: float
    rope_base: float
    rope_dim: int  # dimensions of each head that RoPE rotates
    rope_neox: bool  # NeoX-style rotation (i, i + d/2) instead of adjacent pairs
    rope_linear_factor: float  # positions are divided by this (linear rope scaling)
    # Gemma 3: local layers use a different base; None = every layer uses rope_base
    rope_base_local: float | None
    # per-layer sliding window (0 = full attention); empty tuple = no model window
    layer_windows: tuple[int, ...]
    attn_scale: float  # softmax scale applied to q.k
    embedding_scale: float  # token embeddings are multiplied by this (Gemma: sqrt(hidden))
    gated_activation: str  # "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    weight_format: str  # dominant GGUF weight type of the matrices

    def __post_init__(self):
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ModelLoadError(f"unsupported architecture {self.architecture!r}")
        if self.num_heads % self.num_kv_heads:
            raise ModelLoadError(
                f"head_count {self.num_heads} is not a multiple of head_count_kv {self.num_kv_heads}"
            )
        if self.rope_dim > self.head_dim or self.rope_dim % 2:
            raise ModelLoadError(f"rope dimension {self.rope_dim} does not fit head dim {self.head_dim}")
        if self.layer_windows and len(self.layer_windows) != self.num_layers:
            raise ModelLoadError("layer_windows must name every layer")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def window_of_layer(self, layer: int) -> int:
        return self.layer_windows[layer] if self.layer_windows else 0

    def rope_inv_freq(self, layer: int) -> np.ndarray:
        """[rope_dim / 2] float32 inverse frequencies of `layer` (linear scaling folded in).

        Gemma 3 local layers use `rope_base_local` and no scaling (llama.cpp's swa rope settings).
        """
        base = self.rope_base
        local = self.rope_base_local is not None and self.window_of_layer(layer) > 0
        if local:
            base = self.rope_base_local
        exponents = np.arange(0, self.rope_dim, 2, dtype=np.int64).astype(np.float32) / self.rope_dim
        inv_freq = (1.0 / (base ** exponents.astype(np.float64))).astype(np.float32)
        if self.rope_linear_factor != 1.0 and not local:
            inv_freq = (inv_freq / np.float32(self.rope_linear_factor)).astype(np.float32)
        return inv_freq


def _get(meta: dict[str, Any], key: str, default: Any = None, required: bool = True) -> Any:
    if key in meta:
        return meta[key]
    if required and default is None:
        raise ModelLoadError(f"GGUF metadata lacks required key {key!r}")
    return default


def config_from_metadata(meta: dict[str, Any], weight_format: str, vocab_size: int) -> ModelConfig:
    """Build the config of a supported architecture or raise ModelLoadError naming the problem."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    num_layers = int(_get(meta, f"{arch}.block_count"))
    hidden = int(_get(meta, f"{arch}.embedding_length"))
    num_heads = int(_get(meta, f"{arch}.attention.head_count"))
    num_kv_heads = int(_get(meta, f"{arch}.attention.head_count_kv", num_heads))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // num_heads))
    rope_dim = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    scaling_type = meta.get(f"{arch}.rope.scaling.type", "none")
    factor = float(meta.get(f"{arch}.rope.scaling.factor", 1.0) or 1.0)
    if scaling_type not in ("none", "linear", "llama3") and factor != 1.0:
        raise ModelLoadError(f"unsupported rope scaling type {scaling_type!r}")
    linear_factor = factor if scaling_type == "linear" else 1.0

    layer_windows: tuple[int, ...] = ()
    rope_base_local = None
    embedding_scale = 1.0
    activation = "silu"
    attn_scale = head_dim ** -0.5
    if arch == "gemma3":
        window = int(meta.get("gemma3.attention.sliding_window", 512))
        # Gemma 3 is global every 6th layer (l % 6 == 5); the pattern is not written in the file.
        layer_windows = tuple(0 if layer % 6 == 5 else window for layer in range(num_layers))
        rope_base_local = 10000.0
        embedding_scale = float(np.float32(np.sqrt(hidden)))
        activation = "gelu_tanh"
    return ModelConfig(
        architecture=arch,
        name=str(meta.get("general.name", "")),
        num_layers=num_layers,
        hidden_size=hidden,
        ffn_size=int(_get(meta, f"{arch}.feed_forward_length")),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        vocab_size=vocab_size,
        context_length=int(meta.get(f"{arch}.context_length", 2048)),
        rms_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_base=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_dim=rope_dim,
        rope_neox=arch in ("qwen2", "gemma3"),
        rope_linear_factor=linear_factor,
        rope_base_local=rope_base_local,
        layer_windows=layer_windows,
        attn_scale=attn_scale,
        embedding_scale=embedding_scale,
        gated_activation=activation,
        weight_format=weight_format,
    )
