"""Write tiny GGUF models with random weights, for architecture and load-error tests.

`write_model(path, SynthSpec(...))` writes a complete llama / qwen2 / gemma3 file that
`model.loader.load_model` accepts: the architecture's metadata, a small byte-level (gpt2-style)
tokenizer of `VOCAB_SIZE` tokens, and every tensor the architecture needs, the matrices stored in
`spec.fmt` (any of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; K-quants need
every matrix input size to be a multiple of 256, e.g. hidden 256 and ffn 512). Vectors (norms,
biases, rope_freqs) are always F32.

For broken files, build the pieces with `model_metadata` / `model_tensors`, edit them, and write
them with `write_gguf`; `raw` entries are written byte for byte as any GGML type.
The K-quant encoders here are simple min/max quantizers (gguf-py only decodes K-quants); they
produce valid blocks, which is all the tests need: references read back the stored values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n"), ("Ġ", "a"),
           ("o", "n"), ("r", "e"), ("Ġ", "s"), ("Ġ", "w"), ("o", "u"), ("i", "s"), ("e", "n"),
           ("Ġ", "c"), ("a", "t"), ("o", "r"), ("e", "s"), ("Ġ", "b"), ("Ġ", "f"), ("i", "t"),
           ("a", "l"), ("Ġ", "o"), ("Ġ", "m"), ("e", "d"), ("Ġ", "p"), ("in", "g"), ("Ġ", "d"),
           ("Ġa", "n"), ("Ġan", "d"), ("Ġ", "h"), ("l", "l"), ("a", "r"), ("Ġo", "f"), ("Ġ", "i"),
           ("Ġ", "l"), ("o", "m"), ("Ġc", "at"), ("Ġs", "at"), ("Ġ", "n"), ("Ġw", "as")]


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in character for each byte 0..255."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


TOKENS = SPECIAL_TOKENS + _byte_chars() + [a + b for a, b in _MERGES]
VOCAB_SIZE = len(TOKENS)  # 300


@dataclass(frozen=True)
class SynthSpec:
    """Shape and quirks of a synthetic model. head_dim None = hidden // heads (no key_length)."""

    arch: str = "llama"
    fmt: str = "F32"
    hidden: int = 64
    ffn: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int | None = None
    tied: bool = True  # no output.weight: logits use the token embedding
    rope_freqs: bool = False  # write a Llama 3.1 style rope_freqs.weight
    rope_base: float = 10000.0
    rope_dim: int | None = None  # write rope.dimension_count (partial rotary when < head_dim)
    rope_linear: float | None = None  # write rope.scaling.type linear with this factor
    sliding_window: int = 8  # gemma3 only
    eps: float = 1e-6
    context_length: int = 256
    pre: str = "default"
    seed: int = 0

    @property
    def dh(self) -> int:
        return self.head_dim or self.hidden // self.heads


def model_metadata(spec: SynthSpec) -> dict[str, Any]:
    """Every metadata key of the model (general.architecture first), as plain Python values."""
    a = spec.arch
    md: dict[str, Any] = {
        "general.architecture": a,
        "general.name": f"synthetic-{a}-{spec.fmt}",
        f"{a}.block_count": spec.layers,
        f"{a}.context_length": spec.context_length,
        f"{a}.embedding_length": spec.hidden,
        f"{a}.feed_forward_length": spec.ffn,
        f"{a}.attention.head_count": spec.heads,
        f"{a}.attention.head_count_kv": spec.kv_heads,
        f"{a}.attention.layer_norm_rms_epsilon": spec.eps,
        f"{a}.rope.freq_base": spec.rope_base,
    }
    if spec.head_dim is not None:
        md[f"{a}.attention.key_length"] = spec.head_dim
        md[f"{a}.attention.value_length"] = spec.head_dim
    if spec.rope_dim is not None:
        md[f"{a}.rope.dimension_count"] = spec.rope_dim
    if spec.rope_linear is not None:
        md[f"{a}.rope.scaling.type"] = "linear"
        md[f"{a}.rope.scaling.factor"] = spec.rope_linear
    if a == "gemma3":
        md["gemma3.attention.sliding_window"] = spec.sliding_window
    md.update({
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": spec.pre,
        "tokenizer.ggml.tokens": list(TOKENS),
        "tokenizer.ggml.token_type": [3] * len(SPECIAL_TOKENS) + [1] * (VOCAB_SIZE - len(SPECIAL_TOKENS)),
        "tokenizer.ggml.merges": [f"{x} {y}" for x, y in _MERGES],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 0,
    })
    return md


def model_tensors(spec: SynthSpec) -> dict[str, np.ndarray]:
    """Random float32 weights by GGUF name, numpy shapes ([out, in] for matrices)."""
    rng = np.random.default_rng(spec.seed)
    d, f, dh = spec.hidden, spec.ffn, spec.dh
    qs, kvs = spec.heads * dh, spec.kv_heads * dh

    def mat(n: int, k: int) -> np.ndarray:
        return (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)

    def norm(n: int) -> np.ndarray:  # stored norm weights sit around 1 (Gemma's 1 + w included)
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    # Small embeddings keep tied logits from just repeating the last token (Gemma scales by sqrt(d)).
    emb_std = 1.0 / np.sqrt(d) if spec.arch == "gemma3" else 0.3
    t: dict[str, np.ndarray] = {"token_embd.weight": (emb_std * rng.standard_normal((VOCAB_SIZE, d))).astype(np.float32)}
    for i in range(spec.layers):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = norm(d)
        t[p + "attn_q.weight"] = mat(qs, d)
        t[p + "attn_k.weight"] = mat(kvs, d)
        t[p + "attn_v.weight"] = mat(kvs, d)
        if spec.arch == "qwen2":
            for name, n in (("attn_q.bias", qs), ("attn_k.bias", kvs), ("attn_v.bias", kvs)):
                t[p + name] = (0.5 * rng.standard_normal(n)).astype(np.float32)
        if spec.arch == "gemma3":
            t[p + "attn_q_norm.weight"] = norm(dh)
            t[p + "attn_k_norm.weight"] = norm(dh)
        t[p + "attn_output.weight"] = mat(d, qs)
        if spec.arch == "gemma3":
            t[p + "post_attention_norm.weight"] = norm(d)
        t[p + "ffn_norm.weight"] = norm(d)
        t[p + "ffn_gate.weight"] = mat(f, d)
        t[p + "ffn_up.weight"] = mat(f, d)
        t[p + "ffn_down.weight"] = mat(d, f)
        if spec.arch == "gemma3":
            t[p + "post_ffw_norm.weight"] = norm(d)
    t["output_norm.weight"] = norm(d)
    if not spec.tied:
        t["output.weight"] = mat(VOCAB_SIZE, d)
    if spec.rope_freqs:
        rope_dim = spec.rope_dim or dh
        t["rope_freqs.weight"] = rng.uniform(1.0, 8.0, rope_dim // 2).astype(np.float32)
    return t


# ---- weight encoders ---------------------------------------------------------------------------


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    """[...] float -> [..., 2] uint8 little-endian f16."""
    return np.ascontiguousarray(x.astype(np.float16)).view(np.uint8).reshape(x.shape + (2,))


def _quantize_k_affine(rows: np.ndarray, nmax: int) -> tuple[np.ndarray, ...]:
    """Q4_K/Q5_K style: per super-block f16 d, dmin; per 32-group 6-bit sc, m; codes 0..nmax."""
    n, k = rows.shape
    x = rows.astype(np.float32).reshape(n, k // 256, 8, 32)
    lo = np.minimum(x.min(-1), 0.0)
    scale = (x.max(-1) - lo) / nmax
    d = (scale.max(-1) / 63).astype(np.float16).astype(np.float32)
    dmin = ((-lo).max(-1) / 63).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.nan_to_num(np.clip(np.rint(scale / d[..., None]), 0, 63))
        m = np.nan_to_num(np.clip(np.rint(-lo / dmin[..., None]), 0, 63))
        eff, off = d[..., None] * sc, dmin[..., None] * m
        q = np.nan_to_num(np.clip(np.rint((x + off[..., None]) / eff[..., None]), 0, nmax))
    return d, dmin, sc.astype(np.uint8), m.astype(np.uint8), q.astype(np.uint8)


def _pack_k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> the 12 packed bytes of a Q4_K/Q5_K super-block."""
    first = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    second = m[..., :4] | ((m[..., 4:] >> 4) << 6)
    third = (sc[..., 4:] & 0x0F) | ((m[..., 4:] & 0x0F) << 4)
    return np.concatenate([first, second, third], axis=-1).astype(np.uint8)


def quantize_k(rows: np.ndarray, fmt: str) -> np.ndarray:
    """[N, K] float -> [N, K / 256 * block bytes] uint8 blocks of Q4_K, Q5_K or Q6_K."""
    n, k = rows.shape
    nb = k // 256
    if fmt in ("Q4_K", "Q5_K"):
        d, dmin, sc, m, q = _quantize_k_affine(rows, 15 if fmt == "Q4_K" else 31)
        q = q.reshape(n, nb, 4, 2, 32)  # chunk of 64: first 32 in low nibbles, next 32 in high
        qs = ((q[:, :, :, 0] & 0x0F) | ((q[:, :, :, 1] & 0x0F) << 4)).reshape(n, nb, 128)
        parts = [_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, m)]
        if fmt == "Q5_K":  # bit i of qh byte j = fifth bit of element 32 i + j
            hi = (q.reshape(n, nb, 8, 32) >> 4) & 1
            qh = (hi << np.arange(8, dtype=np.uint8)[:, None]).sum(axis=2).astype(np.uint8)
            parts.append(qh)
        parts.append(qs)
        return np.concatenate(parts, axis=-1).reshape(n, -1)
    if fmt != "Q6_K":
        raise ValueError(f"not a K-quant: {fmt}")
    x = rows.astype(np.float32).reshape(n, nb, 16, 16)
    scale = np.abs(x).max(-1) / 31
    d = (scale.max(-1) / 127).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.nan_to_num(np.clip(np.rint(scale / d[..., None]), -128, 127))
        eff = d[..., None] * sc
        q = np.nan_to_num(np.clip(np.rint(x / eff[..., None]), -32, 31))
    u = (q + 32).astype(np.uint8).reshape(n, nb, 2, 4, 32)  # halves of 128, 4 runs of 32
    lo, hi = u & 0x0F, u >> 4
    ql = np.concatenate([lo[:, :, :, 0] | (lo[:, :, :, 2] << 4),
                         lo[:, :, :, 1] | (lo[:, :, :, 3] << 4)], axis=-1).reshape(n, nb, 128)
    qh = (hi[:, :, :, 0] | (hi[:, :, :, 1] << 2) | (hi[:, :, :, 2] << 4)
          | (hi[:, :, :, 3] << 6)).reshape(n, nb, 64)
    scales = sc.astype(np.int8).view(np.uint8)
    return np.concatenate([ql, qh, scales, _f16_bytes(d)], axis=-1).reshape(n, -1)


def encode(values: np.ndarray, fmt: str) -> tuple[np.ndarray, QT]:
    """A float array as (data, type) ready for GGUFWriter.add_tensor(raw_dtype=type)."""
    qtype = QT[fmt]
    if fmt == "F32":
        return np.ascontiguousarray(values, dtype=np.float32), qtype
    if fmt == "F16":
        return values.astype(np.float16), qtype
    if fmt in ("Q4_K", "Q5_K", "Q6_K"):
        return quantize_k(values, fmt), qtype
    return gguf.quants.quantize(np.ascontiguousarray(values, dtype=np.float32), qtype), qtype


# ---- writing -----------------------------------------------------------------------------------


def _add_value(w: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        w.add_array(key, list(value))


def write_gguf(path: str, metadata: dict[str, Any], tensors: dict[str, np.ndarray], fmt: str = "F32",
               raw: dict[str, tuple[np.ndarray, QT]] | None = None) -> str:
    """Write a GGUF file: 2-D tensors encoded as `fmt`, others F32, `raw` ones as given."""
    arch = metadata.get("general.architecture", "llama")
    w = gguf.GGUFWriter(path, arch)
    for key, value in metadata.items():
        if key != "general.architecture":
            _add_value(w, key, value)
    for name, values in tensors.items():
        data, qtype = encode(values, fmt if values.ndim == 2 else "F32")
        w.add_tensor(name, data, raw_dtype=qtype)
    for name, (data, qtype) in (raw or {}).items():
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_model(path: str, spec: SynthSpec) -> str:
    """Write the complete model described by `spec` to `path`; returns `path`."""
    return write_gguf(path, model_metadata(spec), model_tensors(spec), spec.fmt)
