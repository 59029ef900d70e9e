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
from pagedserve.kernels.decoder_layer import (KVArrays, LayerDims, LayerParams, StepArrays, decoder_layer,
                                              decoder_layers, make_scratch)
from pagedserve.kernels.embedding import embed_rows_q4, embed_rows_q8
from pagedserve.kernels.rms_norm import rms_norm
from pagedserve.kernels.rope import rope_table
from pagedserve.model.config import ModelConfig
from pagedserve.model.weight_layout import NIBBLE_KINDS, LinearWeight, matmul
from pagedserve.model.weights import ModelWeights


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
    if weight.kind in NIBBLE_KINDS:
        embed_rows_q4(weight.codes, weight.scale, weight.minv, token_ids, s, out)
    elif weight.kind == "q8":
        embed_rows_q8(weight.codes, weight.scale, weight.minv, token_ids, s, out)
    else:
        np.multiply(weight.codes[token_ids], s, out=out)
    return out


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
        self.dims = LayerDims(cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.ffn_size,
                              float(cfg.rms_eps), np.float32(cfg.attn_scale), bool(cfg.rope_neox),
                              cfg.gated_activation == "gelu_tanh")
        self._layer_params = [lw.params() for lw in weights.layers]
        self._layer_kv = [_kv_arrays(kv_store, layer) for layer in range(cfg.num_layers)]
        # Layers with float weights run the layer body interpreted: their matmuls need NumPy's BLAS.
        self._run_layer = [decoder_layer if _all_quantized(p) else decoder_layer.py_func
                           for p in self._layer_params]
        # The one-call path takes one KV group's stacked arrays; int8 caches would need the group's
        # scale arrays too, which the KV store does not hand out: they run layer by layer.
        self.fused = (weights.stack is not None and kv_store.spec.num_groups == 1
                      and kv_store.spec.kv_dtype in ("f32", "f16"))
        if self.fused:
            k, v = kv_store.group_arrays(0)
            no_scale = np.zeros((k.shape[0], 0, 0, 0), dtype=np.float32)
            self._stacked_kv = KVArrays(k, v, no_scale, no_scale, kv_store.spec.groups[0].sliding_window)

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
        steps = [StepArrays(meta.slot_mappings[g], meta.block_tables[g], meta.query_start_loc, meta.seq_lens)
                 for g in self.kv_groups()]
        if self.fused:
            decoder_layers(x, meta.positions, self.inv_freqs, self.weights.stack, self._stacked_kv, steps[0],
                           self.dims)
            return x
        scratch = make_scratch(num_tokens, self.dims)
        rope = self._rope_tables(meta.positions)
        for layer, params in enumerate(self._layer_params):
            cos, sin = rope[self._freq_ids[layer]]
            kv = self._layer_kv[layer]
            self._run_layer[layer](x, params, kv, steps[self.kv.layers[layer].group], self.dims, cos, sin,
                                   scratch)
        return x

    def logits(self, hidden_rows: np.ndarray) -> np.ndarray:
        """[R, V] float32 logits of hidden states [R, D] (final norm, then the output matrix)."""
        normed = np.empty_like(hidden_rows)
        rms_norm(np.ascontiguousarray(hidden_rows), self.weights.output_norm, self.cfg.rms_eps, normed)
        out = np.empty((hidden_rows.shape[0], self.cfg.vocab_size), dtype=np.float32)
        return matmul(normed, self.weights.output, out)


def _kv_arrays(kv_store: KVStore, layer: int) -> KVArrays:
    cache = kv_store.layers[layer]
    no_scale = np.zeros((0, 0, 0), dtype=np.float32)
    return KVArrays(cache.k, cache.v, no_scale if cache.k_scale is None else cache.k_scale,
                    no_scale if cache.v_scale is None else cache.v_scale, cache.sliding_window)


def _all_quantized(params: LayerParams) -> bool:
    parts = params.qkv + params.attn_output + params.gate_up + params.ffn_down
    return all(p.codes.ndim > 2 for p in parts)
