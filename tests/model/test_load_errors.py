"""Bad model files are refused at load with a `ModelLoadError` that names the problem.

`pytest.raises(ModelLoadError)` lets any other exception type through as a test error, so each case
also checks that nothing but ModelLoadError escapes `load_model`. The last tests run the CLI as a
subprocess: exit code 2 and a one-line "error: ..." on stderr, never a traceback.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from pagedserve.model.gguf_file import ModelLoadError
from pagedserve.model.loader import load_model
from tests.model.synthetic_gguf import SynthSpec, model_metadata, model_tensors, write_gguf, write_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = SynthSpec("llama", "Q8_0")


@pytest.fixture(scope="module")
def valid_path(tmp_path_factory) -> str:
    """A small valid model; tests copy or cut it, never change it."""
    path = write_model(str(tmp_path_factory.mktemp("valid") / "valid.gguf"), SPEC)
    load_model(path)  # the starting point loads
    return path


def _refused(path: str, *needles: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def _write(tmp_path, metadata=None, tensors=None, raw=None, spec=SPEC) -> str:
    md = model_metadata(spec) if metadata is None else metadata
    ts = model_tensors(spec) if tensors is None else tensors
    return write_gguf(str(tmp_path / "bad.gguf"), md, ts, spec.fmt, raw)


# ---- not GGUF at all ----------------------------------------------------------------------------


def test_text_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("this is a text file, not a model\n")
    _refused(str(path), "not a GGUF file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    _refused(str(path), "not a GGUF file")


def test_missing_file(tmp_path):
    _refused(str(tmp_path / "nowhere.gguf"), "not found")


def test_directory(tmp_path):
    _refused(str(tmp_path), "not found")


# ---- truncated copies of a valid file ----------------------------------------------------------


def _cut_points(path: str) -> dict[str, int]:
    reader = gguf.GGUFReader(path, "r")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    return {
        "header": 12,  # magic and version, then the tensor count stops half way
        "metadata": int(tokens.offset) + 500,  # inside the token list
        "tensor-infos": int(reader.tensors[3].field.offset) + 6,  # inside a tensor's name
        "tensor-data": (reader.data_offset + os.path.getsize(path)) // 2,
        "last-byte": os.path.getsize(path) - 1,
    }


@pytest.mark.parametrize("where", ["header", "metadata", "tensor-infos", "tensor-data", "last-byte"])
def test_truncated(valid_path, tmp_path, where):
    cut = _cut_points(valid_path)[where]
    with open(valid_path, "rb") as f:
        data = f.read(cut)
    path = tmp_path / "cut.gguf"
    path.write_bytes(data)
    message = _refused(str(path), str(path))
    assert "truncated" in message or "corrupt" in message


def _field_offsets(path: str) -> dict[str, int]:
    """Byte offsets of a few header fields of a valid file, keyed by the test case name."""
    reader = gguf.GGUFReader(path, "r")
    info = reader.tensors[2].field
    return {
        "version": 4,
        "tensor-count": 8,
        "kv-count": 16,
        "string-length": int(reader.fields["tokenizer.ggml.tokens"].offset),  # its key's length
        "tensor-type": int(info.offset) + sum(int(part.nbytes) for part in info.parts[:-2]),
    }


@pytest.mark.parametrize("field, value", [
    ("version", struct.pack("<I", 99)),
    ("tensor-count", struct.pack("<Q", 2 ** 60)),
    ("kv-count", struct.pack("<Q", 2 ** 60)),
    ("string-length", struct.pack("<Q", 2 ** 62)),
    ("tensor-type", struct.pack("<I", 99)),  # no such GGML type
])
def test_corrupt_header_field(valid_path, tmp_path, field, value):
    data = bytearray(open(valid_path, "rb").read())
    at = _field_offsets(valid_path)[field]
    data[at:at + len(value)] = value
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(bytes(data))
    _refused(str(path), str(path), "corrupt")


# ---- readable GGUF, but not a model we can serve ---------------------------------------------------


def test_unsupported_architecture(tmp_path):
    md = model_metadata(SPEC)
    md = {("mamba" + k[len("llama"):] if k.startswith("llama.") else k): v for k, v in md.items()}
    md["general.architecture"] = "mamba"
    _refused(_write(tmp_path, metadata=md), "unsupported architecture 'mamba'")


@pytest.mark.parametrize("qtype", [QT.Q2_K, QT.IQ2_XXS, QT.IQ4_NL])
def test_unsupported_tensor_type(tmp_path, qtype):
    spec = SynthSpec("llama", "F16", hidden=256, ffn=512)  # 256-wide rows fit every block size
    tensors = model_tensors(spec)
    rows, cols = tensors.pop("blk.1.attn_q.weight").shape
    per_block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = np.random.default_rng(0).integers(0, 256, (rows, cols // per_block * block_bytes), np.uint8)
    path = _write(tmp_path, tensors=tensors, raw={"blk.1.attn_q.weight": (raw, qtype)}, spec=spec)
    _refused(path, "blk.1.attn_q.weight", f"unsupported weight type {qtype.name}")


@pytest.mark.parametrize("name", ["token_embd.weight", "blk.1.ffn_down.weight", "blk.0.attn_v.weight",
                                  "blk.0.attn_norm.weight", "output_norm.weight"])
def test_missing_tensor(tmp_path, name):
    tensors = model_tensors(SPEC)
    del tensors[name]
    _refused(_write(tmp_path, tensors=tensors), "missing tensor", name)


def test_more_blocks_than_tensors(tmp_path):
    md = model_metadata(SPEC)
    md["llama.block_count"] = SPEC.layers + 1
    _refused(_write(tmp_path, metadata=md), "missing tensor", f"blk.{SPEC.layers}.")


@pytest.mark.parametrize("name, shape", [
    ("blk.0.attn_k.weight", (SPEC.kv_heads * SPEC.dh + 32, SPEC.hidden)),
    ("blk.1.ffn_down.weight", (SPEC.hidden, SPEC.ffn + 32)),
    ("blk.0.attn_output.weight", (SPEC.hidden + 32, SPEC.heads * SPEC.dh)),
    ("output.weight", (50, SPEC.hidden)),
    ("token_embd.weight", (50, SPEC.hidden)),  # fewer rows than the tokenizer has tokens
    ("token_embd.weight", (350, SPEC.hidden)),  # more rows: ids that cannot be detokenized
    ("blk.0.ffn_norm.weight", (SPEC.hidden + 3,)),
])
def test_wrong_shape(tmp_path, name, shape):
    tensors = model_tensors(SPEC)
    tensors[name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    _refused(_write(tmp_path, tensors=tensors), name)


@pytest.mark.parametrize("key", ["llama.block_count", "llama.embedding_length",
                                 "llama.attention.head_count", "llama.feed_forward_length",
                                 "tokenizer.ggml.tokens", "tokenizer.ggml.model"])
def test_missing_metadata(tmp_path, key):
    md = model_metadata(SPEC)
    del md[key]
    _refused(_write(tmp_path, metadata=md), key)


def test_inconsistent_head_counts(tmp_path):
    md = model_metadata(SPEC)
    md["llama.attention.head_count_kv"] = 3
    _refused(_write(tmp_path, metadata=md), "head_count")


# ---- the command line --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "mamba"])
def test_cli_generate_refuses_bad_model(valid_path, tmp_path, kind):
    bad = tmp_path / "bad.gguf"
    if kind == "text":
        bad.write_text("not a model\n")
    elif kind == "truncated":
        bad.write_bytes(open(valid_path, "rb").read()[:5000])
    elif kind == "mamba":
        md = dict(model_metadata(SPEC), **{"general.architecture": "mamba"})
        _write(tmp_path, metadata=md)
    proc = subprocess.run(
        [sys.executable, "-m", "pagedserve.cli.main", "generate", "--model", str(bad), "--prompt", "x"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(bad) in last, proc.stderr
