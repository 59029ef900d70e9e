"""Dequantization of every GGUF weight format equals the gguf package's own NumPy implementation,
both from the decoded blocks and from the in-memory layouts, which keep the file's bytes."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from pagedserve.model.gguf_file import GGUFTensor, read_gguf
from pagedserve.model.loader import load_model
from pagedserve.model.weight_formats import QUANT_FORMATS, dequantize
from pagedserve.model.weight_layout import LinearWeight, build_linear
from tests.kernels.helpers import random_blocks
from tests.model.synthetic_gguf import SynthSpec, write_model


@pytest.mark.parametrize("fmt", QUANT_FORMATS)
@pytest.mark.parametrize("num_rows,num_blocks", [(1, 1), (3, 2), (7, 5)])
def test_dequantize_matches_gguf_quants(fmt, num_rows, num_blocks):
    per_block, _ = gguf.GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    raw = random_blocks(fmt, num_rows, num_blocks, seed=num_rows * 31 + num_blocks)
    expected = gguf_dequantize(raw, GGMLQuantizationType[fmt]).reshape(num_rows, -1)
    ours = dequantize(fmt, raw, per_block * num_blocks)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("fmt", ["F16", "BF16", "F32"])
def test_float_formats(fmt):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((5, 9)).astype(np.float32)
    if fmt == "F16":
        raw = values.astype(np.float16).view(np.uint8)
        expected = values.astype(np.float16).astype(np.float32)
    elif fmt == "BF16":
        raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        expected = ((values.view(np.uint32) >> 16) << 16).view(np.float32)
    else:
        raw, expected = values, values
    np.testing.assert_array_equal(dequantize(fmt, raw, 9), expected)


# ---- the in-memory layouts (model/weight_layout.py) -------------------------------------------

_NIBBLE_LAYOUTS = {1024: (32, 0), 1280: (32, 1), 768: (16, 2)}  # bytes per group: (group size, high bits)


def _layout_codes(w: LinearWeight) -> tuple[np.ndarray, int]:
    """[NT * 64, K] int32 codes (minus their stored offset) read back from the layout as documented."""
    nt, k = w.codes.shape[0], w.num_in
    if w.kind == "q8":  # [t, g, pair p, row r, e]
        ng, half = w.codes.shape[1], w.codes.shape[2]
        codes = w.codes.reshape(nt, ng, half, 64, 2).transpose(0, 3, 1, 2, 4).reshape(nt * 64, k)
        return codes.astype(np.int32), 2 * half
    g, high_bits = _NIBBLE_LAYOUTS[w.codes.shape[2]]
    ng, nq = k // g, g // 8
    nib = w.codes[..., :32 * g].reshape(nt, ng, nq, 4, 16, 4).transpose(0, 3, 4, 1, 2, 5)  # [t, c, r, g, d, b]
    codes = np.empty((nt, 4, 16, ng, 2, nq, 4), np.int32)  # [t, c, r, g, half, d, b]
    codes[:, :, :, :, 0] = nib & 15
    codes[:, :, :, :, 1] = nib >> 4
    if high_bits:
        high = w.codes[..., 32 * g:].reshape(nt, ng, 4, 16, 4).transpose(0, 2, 3, 1, 4).astype(np.int32)
        for d in range(nq):
            for h in range(2):
                field = (high >> (high_bits * (2 * d + h))) & ((1 << high_bits) - 1)
                codes[:, :, :, :, h, d] |= field << 4
    offset = 32 if high_bits == 2 else 0
    return codes.reshape(nt * 64, k) - offset, g


def _layout_scales(w: LinearWeight, g: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 scale and min [NT * 64, NG] read back from the layout as documented."""
    nt = w.codes.shape[0]

    def rows_first(a):  # [NT, X, 64] -> [NT * 64, X]
        return a.transpose(0, 2, 1).reshape(nt * 64, -1)

    def half(bits):
        return bits.view(np.float16).astype(np.float32)

    if w.scale.dtype == np.uint8:  # K-quant records [NT, NSB, ...]
        nsb, groups = w.scale.shape[1], 256 // g
        rec = w.scale
        d = half(np.ascontiguousarray(rec[..., :128]).view(np.uint16))[:, :, None, :]  # [NT, NSB, 1, 64]
        if g == 16:
            sc = rec[..., 128:].view(np.int8).reshape(nt, nsb, groups, 64)
            scale = sc.astype(np.float32) * d
            scale = rows_first(scale.reshape(nt, nsb * groups, 64))
            return scale, np.zeros_like(scale)
        dmin = half(np.ascontiguousarray(rec[..., 128:256]).view(np.uint16))[:, :, None, :]
        sc = rec[..., 256:256 + 64 * groups].reshape(nt, nsb, groups, 64).astype(np.float32)
        m = rec[..., 256 + 64 * groups:].reshape(nt, nsb, groups, 64).astype(np.float32)
        return (rows_first((sc * d).reshape(nt, -1, 64)), rows_first((-(m * dmin)).reshape(nt, -1, 64)))
    scale = half(rows_first(w.scale))
    if w.minv.ndim == 1:
        return scale, w.minv[0] * scale + np.float32(0.0)
    return scale, half(rows_first(w.minv))


def unpack_linear(w: LinearWeight) -> np.ndarray:
    """The [N, K] float32 weights of a quantized LinearWeight, w = scale * code + min per group."""
    codes, g = _layout_codes(w)
    scale, mins = _layout_scales(w, g)
    q = codes.astype(np.float32).reshape(codes.shape[0], -1, g)
    return (scale[..., None] * q + mins[..., None]).reshape(codes.shape[0], -1)[:w.num_out]


@pytest.mark.parametrize("fmt", QUANT_FORMATS)
@pytest.mark.parametrize("num_rows,num_blocks", [(1, 1), (70, 2), (129, 3)])
def test_layout_dequantizes_like_gguf(fmt, num_rows, num_blocks):
    per_block, nbytes = gguf.GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    raw = random_blocks(fmt, num_rows, num_blocks, seed=num_rows * 7 + num_blocks)
    expected = gguf_dequantize(raw, GGMLQuantizationType[fmt]).reshape(num_rows, -1)
    weight = build_linear(GGUFTensor("w", fmt, (num_rows, per_block * num_blocks), raw))
    np.testing.assert_array_equal(unpack_linear(weight), expected)
    # the bytes the layout keeps: the file's, plus row padding to whole tiles and K-quant sub-scales as bytes
    tiles = -(-num_rows // 64)
    assert weight.nbytes <= 1.03 * nbytes * num_blocks * 64 * tiles + 4


@pytest.mark.parametrize("fmt", QUANT_FORMATS)
def test_weights_stay_at_file_size(fmt, tmp_path):
    """A model's weights in memory take at most 1.05x the file's tensor bytes, every quantized
    matrix too (the shapes are whole tiles of 64 rows, as in real models)."""
    path = write_model(str(tmp_path / f"{fmt}.gguf"), SynthSpec("llama", fmt, hidden=256, ffn=512, heads=4,
                                                                 kv_heads=2, tied=False))
    file = read_gguf(path)
    file_bytes = sum(t.data.nbytes for t in file.tensors.values())
    weights = load_model(path).weights
    assert weights.nbytes <= 1.05 * file_bytes, weights.nbytes / file_bytes
    layer = weights.layers[0]
    for weight, names in ((layer.qkv, ("attn_q", "attn_k", "attn_v")), (layer.gate_up, ("ffn_gate", "ffn_up")),
                          (layer.ffn_down, ("ffn_down",)), (layer.attn_output, ("attn_output",))):
        tensor_bytes = sum(file.tensors[f"blk.0.{name}.weight"].data.nbytes for name in names)
        assert weight.nbytes <= 1.05 * tensor_bytes, (names, weight.nbytes / tensor_bytes)
