"""A plain NumPy float64 forward pass of llama, qwen2 and gemma3 GGUF models, for tests only.

Written from the architectures' definitions (as llama.cpp runs them), not from model/forward.py:
it reads the file with gguf-py's own `GGUFReader`, dequantizes every tensor with
`gguf.quants.dequantize`, and evaluates one sequence from scratch with full causal attention
(optionally limited per layer to the last W positions). Slow, obvious, and independent of our
loader, config and kernels.

Promises: `ReferenceModel(path).logits(ids)` is [T, V] float64 logits of every position;
`greedy(ids, n)` is the chain of n argmax tokens, each appended before the next step.
"""

from __future__ import annotations

import math

import gguf
import numpy as np


def _meta(reader: gguf.GGUFReader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        value = field.contents()
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _rope(x: np.ndarray, pos: np.ndarray, inv_freq: np.ndarray, neox: bool) -> np.ndarray:
    """Rotate the first 2 * len(inv_freq) dims of x [T, H, Dh]: pairs (i, i + R/2) for NeoX,
    (2i, 2i + 1) otherwise. The rest of each head passes through."""
    r = 2 * inv_freq.shape[0]
    ang = pos[:, None].astype(np.float64) * inv_freq[None, :]  # [T, R/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.copy()
    if neox:
        a, b = x[..., : r // 2], x[..., r // 2: r]
        out[..., : r // 2] = a * cos - b * sin
        out[..., r // 2: r] = b * cos + a * sin
    else:
        a, b = x[..., 0:r:2], x[..., 1:r:2]
        out[..., 0:r:2] = a * cos - b * sin
        out[..., 1:r:2] = b * cos + a * sin
    return out


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int) -> np.ndarray:
    """Causal GQA attention. q [T, H, Dh], k/v [T, KVH, Dh] -> [T, H, Dh]. window W > 0 lets
    position i see only keys j with i - j < W."""
    t, h, _ = q.shape
    rep = h // k.shape[1]
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    visible = j <= i
    if window > 0:
        visible &= (i - j) < window
    out = np.empty_like(q)
    for head in range(h):
        kh, vh = k[:, head // rep], v[:, head // rep]
        s = (q[:, head] @ kh.T) * scale
        s = np.where(visible, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, head] = p @ vh
    return out


class ReferenceModel:
    """Reads one GGUF model and evaluates it in float64."""

    def __init__(self, path: str):
        reader = gguf.GGUFReader(path, "r")
        self.meta = m = _meta(reader)
        self.w: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))
            values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
            self.w[t.name] = np.asarray(values, dtype=np.float64).reshape(shape)
        self.arch = a = m["general.architecture"]
        self.num_layers = int(m[f"{a}.block_count"])
        self.hidden = int(m[f"{a}.embedding_length"])
        self.heads = int(m[f"{a}.attention.head_count"])
        self.kv_heads = int(m.get(f"{a}.attention.head_count_kv", self.heads))
        self.head_dim = int(m.get(f"{a}.attention.key_length", self.hidden // self.heads))
        self.rope_dim = int(m.get(f"{a}.rope.dimension_count", self.head_dim))
        self.eps = float(m.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-6))
        self.rope_base = float(m.get(f"{a}.rope.freq_base", 10000.0))
        linear = m.get(f"{a}.rope.scaling.type") == "linear"
        self.rope_linear = float(m.get(f"{a}.rope.scaling.factor", 1.0)) if linear else 1.0
        self.neox = a in ("qwen2", "gemma3")
        self.gemma = a == "gemma3"
        self.window = int(m.get("gemma3.attention.sliding_window", 0)) if self.gemma else 0

    def is_local(self, layer: int) -> bool:
        """Gemma 3: five sliding-window layers, then one global layer."""
        return self.gemma and layer % 6 != 5

    def inv_freq(self, layer: int) -> tuple[np.ndarray, float]:
        """Inverse frequencies of `layer` and the factor its positions are divided by."""
        base, factor = self.rope_base, self.rope_linear
        if self.is_local(layer):  # llama.cpp: rope_freq_base_train_swa 10000, scale 1
            base, factor = 10000.0, 1.0
        inv = base ** (-np.arange(0, self.rope_dim, 2, dtype=np.float64) / self.rope_dim)
        if "rope_freqs.weight" in self.w:
            inv = inv / self.w["rope_freqs.weight"]
        return inv, factor

    def logits(self, ids: list[int]) -> np.ndarray:
        """[T, V] float64 logits of every position of `ids` (one sequence, from position 0)."""
        w, eps, dh = self.w, self.eps, self.head_dim
        t = len(ids)
        pos = np.arange(t, dtype=np.float64)
        x = w["token_embd.weight"][np.asarray(ids)].copy()
        if self.gemma:
            x *= math.sqrt(self.hidden)
        for layer in range(self.num_layers):
            p = f"blk.{layer}."
            h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
            q, k, v = (h @ w[p + f"attn_{n}.weight"].T for n in "qkv")
            if p + "attn_q.bias" in w:
                q, k, v = (z + w[p + f"attn_{n}.bias"] for z, n in zip((q, k, v), "qkv"))
            q = q.reshape(t, self.heads, dh)
            k = k.reshape(t, self.kv_heads, dh)
            v = v.reshape(t, self.kv_heads, dh)
            if self.gemma:
                q = _rms_norm(q, w[p + "attn_q_norm.weight"], eps)
                k = _rms_norm(k, w[p + "attn_k_norm.weight"], eps)
            inv, factor = self.inv_freq(layer)
            q = _rope(q, pos / factor, inv, self.neox)
            k = _rope(k, pos / factor, inv, self.neox)
            window = self.window if self.is_local(layer) else 0
            attn = _attention(q, k, v, dh ** -0.5, window).reshape(t, self.heads * dh)
            o = attn @ w[p + "attn_output.weight"].T
            if self.gemma:
                o = _rms_norm(o, w[p + "post_attention_norm.weight"], eps)
            x = x + o
            h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
            gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            act = (_gelu_tanh(gate) if self.gemma else _silu(gate)) * up
            d = act @ w[p + "ffn_down.weight"].T
            if self.gemma:
                d = _rms_norm(d, w[p + "post_ffw_norm.weight"], eps)
            x = x + d
        out = w.get("output.weight", w["token_embd.weight"])
        return _rms_norm(x, w["output_norm.weight"], eps) @ out.T

    def greedy(self, ids: list[int], n: int) -> tuple[list[int], float]:
        """n greedy tokens after `ids`, and the smallest top-1/top-2 logit margin on the way."""
        seq, out, margin = list(ids), [], math.inf
        for _ in range(n):
            last = self.logits(seq)[-1]
            top2 = np.sort(last)[-2:]
            margin = min(margin, float(top2[1] - top2[0]))
            tok = int(np.argmax(last))
            out.append(tok)
            seq.append(tok)
        return out, margin
