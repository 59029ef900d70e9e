"""The hyper-parameters of popular models, for writing random-weight GGUFs at their real sizes.

Numbers are those of each model's Hugging Face config.json (the values its llama.cpp conversion
writes into GGUF metadata): hidden_size, num_hidden_layers, num_attention_heads,
num_key_value_heads, intermediate_size, vocab_size, max_position_embeddings, rope_theta,
rms_norm_eps, tie_word_embeddings and rope_scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1-style rope_scaling (config.json "rope_type": "llama3")."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_context_length: int


@dataclass(frozen=True)
class ModelShape:
    name: str
    architecture: str  # GGUF general.architecture: "llama" or "qwen2"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    ffn_size: int
    vocab_size: int
    context_length: int
    rope_base: float
    rms_eps: float
    tied_embeddings: bool  # no output.weight: the token embedding is the output matrix
    qkv_bias: bool  # attn_q/k/v biases (qwen2)
    vocab_style: str  # "llama3" or "qwen2" (synth_vocab.py): special tokens, pre-tokenizer, template
    num_special_tokens: int  # the control tokens at the end of the vocabulary
    rope_scaling: Llama3RopeScaling | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def rope_freq_factors(self) -> np.ndarray | None:
        """[head_dim / 2] float32 divisors of the rope frequencies (GGUF tensor rope_freqs.weight),
        or None without llama3 scaling. The rule is Llama 3.1's: wavelengths shorter than
        original_context / high_freq_factor stay, longer than original_context / low_freq_factor
        are divided by `factor`, and the band between is interpolated smoothly."""
        s = self.rope_scaling
        if s is None:
            return None
        dim = self.head_dim
        inv_freq = 1.0 / (self.rope_base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        short_wavelen = s.original_context_length / s.high_freq_factor
        long_wavelen = s.original_context_length / s.low_freq_factor
        factors = []
        for freq in inv_freq:
            wavelen = 2 * math.pi / freq
            if wavelen < short_wavelen:
                factors.append(1.0)
            elif wavelen > long_wavelen:
                factors.append(s.factor)
            else:
                smooth = (s.original_context_length / wavelen - s.low_freq_factor) / (
                    s.high_freq_factor - s.low_freq_factor)
                factors.append(1.0 / ((1.0 - smooth) / s.factor + smooth))
        return np.asarray(factors, dtype=np.float32)


_LLAMA3_1_SCALING = Llama3RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_context_length=8192)
_LLAMA3_2_SCALING = Llama3RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_context_length=8192)


def _qwen2_5(name: str, hidden: int, layers: int, heads: int, ffn: int) -> ModelShape:
    # Qwen2.5 small models: 2 KV heads, vocab 151936 (151643 BPE tokens + 293 special/padding),
    # rope_theta 1e6, rms_norm_eps 1e-6, QKV bias, tied embeddings up to 3B.
    return ModelShape(name, "qwen2", hidden, layers, heads, 2, ffn, 151936, 32768, 1_000_000.0, 1e-6,
                      tied_embeddings=True, qkv_bias=True, vocab_style="qwen2", num_special_tokens=293)


def _llama3(name: str, hidden: int, layers: int, heads: int, ffn: int, tied: bool,
            scaling: Llama3RopeScaling) -> ModelShape:
    # Llama 3.x: 8 KV heads, vocab 128256 (128000 BPE tokens + 256 special), rope_theta 500000,
    # rms_norm_eps 1e-5, context 131072 with llama3 rope scaling.
    return ModelShape(name, "llama", hidden, layers, heads, 8, ffn, 128256, 131072, 500_000.0, 1e-5,
                      tied_embeddings=tied, qkv_bias=False, vocab_style="llama3", num_special_tokens=256,
                      rope_scaling=scaling)


SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        _qwen2_5("qwen2.5-0.5b", hidden=896, layers=24, heads=14, ffn=4864),
        _qwen2_5("qwen2.5-1.5b", hidden=1536, layers=28, heads=12, ffn=8960),
        _llama3("llama-3.2-1b", hidden=2048, layers=16, heads=32, ffn=8192, tied=True, scaling=_LLAMA3_2_SCALING),
        _llama3("llama-3.2-3b", hidden=3072, layers=28, heads=24, ffn=8192, tied=True, scaling=_LLAMA3_2_SCALING),
        _llama3("llama-3.1-8b", hidden=4096, layers=32, heads=32, ffn=14336, tied=False,
                scaling=_LLAMA3_1_SCALING),
    )
}

# Small shapes for tests (not offered by the command's help, but accepted). tiny-qwen2's hidden
# size is not a multiple of 256, so K-quant formats fall back as llama.cpp's do on Qwen2.5-0.5B.
TEST_SHAPES: dict[str, ModelShape] = {
    "tiny-llama": ModelShape("tiny-llama", "llama", 256, 2, 4, 2, 512, 1024, 2048, 500_000.0, 1e-5,
                             tied_embeddings=False, qkv_bias=False, vocab_style="llama3",
                             num_special_tokens=32, rope_scaling=_LLAMA3_2_SCALING),
    "tiny-qwen2": ModelShape("tiny-qwen2", "qwen2", 384, 2, 6, 2, 768, 1024, 2048, 1_000_000.0, 1e-6,
                             tied_embeddings=True, qkv_bias=True, vocab_style="qwen2", num_special_tokens=32),
}


def get_shape(name: str) -> ModelShape:
    """The shape called `name`; ValueError listing the known ones otherwise."""
    shape = SHAPES.get(name) or TEST_SHAPES.get(name)
    if shape is None:
        raise ValueError(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
    return shape
