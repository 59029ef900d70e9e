"""The transformer forward pass over a packed variable-length batch with a paged KV cache.

One call computes every token of the step (prefill chunks and single decode tokens alike), writes
their K/V into the cache and returns the final hidden states; logits are computed only for the
rows the caller asks for (the last token of each sampled sequence, or every prompt position when
prompt logprobs are wanted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pagedserve.cache.kv_store import KVStore
from pagedserve.kernels.activations import add_inplace, gelu_tanh_mul, silu_mul, silu_mul_serial
from pagedserve.kernels.embedding import embed_rows_q4, embed_rows_q8
from pagedserve.kernels.kv_cache_write import write_kv, write_kv_int8
from pagedserve.kernels.paged_attention import paged_attention, paged_attention_int8
from pagedserve.kernels.rms_norm import rms_norm, rms_norm_heads
from pagedserve.kernels.rope import apply_rope_table, rope_table
from pagedserve.model.config import ModelConfig
from pagedserve.model.fused_decoder import SERIAL_TOKENS, decoder_layers
from pagedserve.model.weight_layout import LinearWeight, matmul
from pagedserve.model.weights import LayerWeights, ModelWeights


@dataclass(frozen=True)
class AttentionMetadata:
    """Where every token of the packed batch sits. S sequences, T tokens in all."""

    positions: np.ndarray  # [T] int64: position of each token in its sequence
    query_start_loc: np.ndarray  # [S+1] int32: sequence s owns tokens qsl[s]:qsl[s+1]
    seq_lens: np.ndarray  # [S] int32: context length of each sequence after this step
    block_tables: tuple[np.ndarray, ...]  # per KV group: [S, max_blocks] int32
    slot_mappings: tuple[np.ndarray, ...]  # per KV group: [T] int64 (block * block_size + offset)


def embed(weight: LinearWeight, token_ids: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """out [T, D] = scale * embedding rows of token_ids [T]."""
    s = np.float32(scale)
    if weight.kind == "q4":
        embed_rows_q4(weight.codes, weight.scale, weight.minv, token_ids, s, out)
    elif weight.kind == "q8":
        embed_rows_q8(weight.codes, weight.scale, weight.minv, token_ids, s, out)
    else:
        np.multiply(weight.codes[token_ids], s, out=out)
    return out


def _linear(x: np.ndarray, fused: LinearWeight, parts: tuple[LinearWeight, ...]) -> np.ndarray:
    """x @ W^T for a fused weight, or its unfused parts side by side."""
    if not parts:
        out = np.empty((x.shape[0], fused.num_out), dtype=np.float32)
        return matmul(x, fused, out)
    outs = []
    for w in parts:
        o = np.empty((x.shape[0], w.num_out), dtype=np.float32)
        outs.append(matmul(x, w, o))
    return np.concatenate(outs, axis=1)


class Transformer:
    """Runs a loaded model (llama, qwen2, gemma3) against a KV store."""

    def __init__(self, cfg: ModelConfig, weights: ModelWeights, kv_store: KVStore):
        self.cfg = cfg
        self.weights = weights
        self.kv = kv_store
        inv_freqs = []
        for layer in range(cfg.num_layers):
            inv = cfg.rope_inv_freq(layer)
            if weights.rope_freq_factors is not None:
                inv = (inv / weights.rope_freq_factors).astype(np.float32)
            inv_freqs.append(inv)
        self.inv_freqs = np.ascontiguousarray(np.stack(inv_freqs))  # [L, R/2]
        # Layers with equal frequencies share one rotation table per step (Gemma 3: two kinds).
        self._distinct_freqs, ids = np.unique(self.inv_freqs, axis=0, return_inverse=True)
        self._freq_ids = ids.reshape(-1)  # [L]: row of _distinct_freqs for each layer
        # int8 caches need the scale arrays, which the fused call does not take.
        self.fused = (weights.stack is not None and cfg.gated_activation == "silu"
                      and kv_store.spec.num_groups == 1 and kv_store.spec.kv_dtype in ("f32", "f16"))

    def _rope_tables(self, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """cos, sin [T, R/2] of this step for each distinct frequency vector."""
        tables = []
        for inv in self._distinct_freqs:
            cos = np.empty((positions.shape[0], inv.shape[0]), np.float32)
            sin = np.empty_like(cos)
            rope_table(positions, np.ascontiguousarray(inv), cos, sin)
            tables.append((cos, sin))
        return tables

    def kv_groups(self) -> range:
        return range(self.kv.spec.num_groups)

    def forward(self, token_ids: np.ndarray, meta: AttentionMetadata) -> np.ndarray:
        """Hidden states [T, D] (before the final norm) for token_ids [T] int32."""
        cfg = self.cfg
        num_tokens = token_ids.shape[0]
        x = np.empty((num_tokens, cfg.hidden_size), dtype=np.float32)
        embed(self.weights.token_embedding, token_ids, cfg.embedding_scale, x)
        if self.fused:
            return self._forward_fused(x, meta)
        h = np.empty_like(x)
        rope = self._rope_tables(meta.positions)
        for layer_id, lw in enumerate(self.weights.layers):
            self._attention_block(layer_id, lw, x, h, meta, rope[self._freq_ids[layer_id]])
            self._ffn_block(lw, x, h)
        return x

    def _forward_fused(self, x: np.ndarray, meta: AttentionMetadata) -> np.ndarray:
        cfg, st = self.cfg, self.weights.stack
        k_cache, v_cache = self.kv.group_arrays(0)
        decoder_layers(
            x, meta.positions, self.inv_freqs, cfg.rope_neox, float(cfg.rms_eps), cfg.num_heads,
            cfg.num_kv_heads, cfg.head_dim, st.attn_norm, st.qkv_bias,
            st.qkv.codes, st.qkv.scale, st.qkv.minv, st.attn_output.codes, st.attn_output.scale,
            st.attn_output.minv, st.ffn_norm, st.gate_up.codes, st.gate_up.scale, st.gate_up.minv,
            st.ffn_down.codes, st.ffn_down.scale, st.ffn_down.minv, k_cache, v_cache,
            meta.slot_mappings[0], meta.block_tables[0], meta.query_start_loc, meta.seq_lens,
            np.float32(cfg.attn_scale), self.kv.spec.groups[0].sliding_window, cfg.ffn_size,
        )
        return x

    def _attention_block(self, layer_id: int, lw: LayerWeights, x: np.ndarray, h: np.ndarray,
                         meta: AttentionMetadata, rope: tuple[np.ndarray, np.ndarray]) -> None:
        cfg = self.cfg
        t = x.shape[0]
        rms_norm(x, lw.attn_norm, cfg.rms_eps, h)
        qkv = _linear(h, lw.qkv, lw.qkv_split)  # [T, q_size + 2 kv_size]
        if lw.qkv_bias is not None:
            qkv += lw.qkv_bias
        q = np.ascontiguousarray(qkv[:, :cfg.q_size]).reshape(t, cfg.num_heads, cfg.head_dim)
        k = np.ascontiguousarray(qkv[:, cfg.q_size:cfg.q_size + cfg.kv_size]).reshape(
            t, cfg.num_kv_heads, cfg.head_dim)
        v = np.ascontiguousarray(qkv[:, cfg.q_size + cfg.kv_size:]).reshape(
            t, cfg.num_kv_heads, cfg.head_dim)
        if lw.q_norm is not None:
            rms_norm_heads(q, lw.q_norm, cfg.rms_eps)
            rms_norm_heads(k, lw.k_norm, cfg.rms_eps)
        cos, sin = rope
        apply_rope_table(q, cos, sin, cfg.rope_neox)
        apply_rope_table(k, cos, sin, cfg.rope_neox)

        cache = self.kv.layers[layer_id]
        slots = meta.slot_mappings[cache.group]
        table = meta.block_tables[cache.group]
        window = cache.sliding_window
        attn = np.empty_like(q)  # [T, H, Dh]
        if cache.k_scale is None:  # float32 or half (uint16) cache: the kernels convert per element
            write_kv(k, v, slots, cache.k, cache.v)
            paged_attention(q, cache.k, cache.v, table, meta.query_start_loc, meta.seq_lens,
                            np.float32(cfg.attn_scale), window, attn)
        else:
            write_kv_int8(k, v, slots, cache.k, cache.v, cache.k_scale, cache.v_scale)
            paged_attention_int8(q, cache.k, cache.v, cache.k_scale, cache.v_scale, table,
                                 meta.query_start_loc, meta.seq_lens, np.float32(cfg.attn_scale),
                                 window, attn)
        o = np.empty_like(x)
        matmul(attn.reshape(t, cfg.q_size), lw.attn_output, o)
        if lw.post_attn_norm is not None:
            rms_norm(o, lw.post_attn_norm, cfg.rms_eps, o)
        add_inplace(x, o)

    def _ffn_block(self, lw: LayerWeights, x: np.ndarray, h: np.ndarray) -> None:
        cfg = self.cfg
        f = cfg.ffn_size
        rms_norm(x, lw.ffn_norm, cfg.rms_eps, h)
        gate_up = _linear(h, lw.gate_up, lw.gate_up_split)  # [T, 2F]
        act = np.empty((x.shape[0], f), dtype=np.float32)
        if cfg.gated_activation == "gelu_tanh":
            gelu_tanh_mul(gate_up, act)
        elif x.shape[0] <= SERIAL_TOKENS:
            silu_mul_serial(gate_up, act)
        else:
            silu_mul(gate_up, act)
        d = np.empty_like(x)
        matmul(act, lw.ffn_down, d)
        if lw.post_ffn_norm is not None:
            rms_norm(d, lw.post_ffn_norm, cfg.rms_eps, d)
        add_inplace(x, d)

    def logits(self, hidden_rows: np.ndarray) -> np.ndarray:
        """[R, V] float32 logits of hidden states [R, D] (final norm, then the output matrix)."""
        normed = np.empty_like(hidden_rows)
        rms_norm(np.ascontiguousarray(hidden_rows), self.weights.output_norm, self.cfg.rms_eps, normed)
        out = np.empty((hidden_rows.shape[0], self.cfg.vocab_size), dtype=np.float32)
        return matmul(normed, self.weights.output, out)
