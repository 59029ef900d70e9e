"""The one-pass GGUF parser (model/gguf_parser.py) reads exactly what gguf-py's reader reads.

Reference: gguf-py's `GGUFReader` on the same file, its fields' `contents()` with numpy scalars
turned into Python values (what read_metadata returned before the parser existed), and its
tensors' memory-mapped views.
"""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFEndian, GGUFValueType as VT

from pagedserve.model.gguf_file import ModelLoadError, read_gguf, read_metadata


def reference_metadata(path: str) -> dict:
    reader = gguf.GGUFReader(path, "r")
    out = {}
    for key, field in reader.fields.items():
        value = field.contents()
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def assert_same_metadata(ours: dict, ref: dict) -> None:
    assert list(ours) == list(ref)  # same keys in file order
    for key, value in ref.items():
        assert ours[key] == value, key
        assert type(ours[key]) is type(value), key
        if isinstance(value, list):
            assert [type(v) for v in ours[key]] == [type(v) for v in value], key


def assert_same_tensors(path: str) -> None:
    reader = gguf.GGUFReader(path, "r")
    ours = read_gguf(path).tensors
    assert list(ours) == [t.name for t in reader.tensors]
    for ref in reader.tensors:
        tensor = ours[ref.name]
        assert tensor.type_name == ref.tensor_type.name
        assert tensor.shape == tuple(reversed(ref.shape.tolist()))
        assert tensor.data.dtype == ref.data.dtype and tensor.data.shape == ref.data.shape, ref.name
        # the same bytes of the file (compared as bytes: a NaN in a float tensor is not == itself)
        assert np.array_equal(tensor.data.view(np.uint8), np.asarray(ref.data).view(np.uint8)), ref.name


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def model_path(request) -> str:
    from pagedserve.model.model_fetch import fetch_model

    return fetch_model(request.param)  # fetched when missing: never a silent skip


def test_model_metadata_equals_gguf_reader(model_path):
    ours = read_metadata(model_path)
    assert_same_metadata(ours, reference_metadata(model_path))
    # the arrays the tokenizer is built from, spelled out
    assert len(ours["tokenizer.ggml.tokens"]) > 40_000
    assert len(ours["tokenizer.ggml.token_type"]) == len(ours["tokenizer.ggml.tokens"])


def test_model_tensors_equal_gguf_reader(model_path):
    assert_same_tensors(model_path)


def _write_every_type(path: str, endian: GGUFEndian) -> None:
    w = gguf.GGUFWriter(path, "llama", endianess=endian)
    scalars = [("u8", 200, VT.UINT8), ("i8", -5, VT.INT8), ("u16", 60000, VT.UINT16),
               ("i16", -30000, VT.INT16), ("u32", 4_000_000_000, VT.UINT32), ("i32", -2_000_000_000, VT.INT32),
               ("f32", 0.1, VT.FLOAT32), ("u64", 2**63 + 5, VT.UINT64), ("i64", -(2**62), VT.INT64),
               ("f64", 0.1, VT.FLOAT64), ("yes", True, VT.BOOL), ("no", False, VT.BOOL),
               ("text", "héllo ✓ 🙂", VT.STRING), ("empty_text", "", VT.STRING)]
    for key, value, vtype in scalars:
        w.add_key_value(key, value, vtype)
    arrays = [("a.u8", [0, 255, 7], VT.UINT8), ("a.i16", [-1, 2, -3], VT.INT16),
              ("a.u32", [1, 2**32 - 1], VT.UINT32), ("a.i32", [-1, 5], VT.INT32),
              ("a.f32", [0.5, -1e-30, 3.25], VT.FLOAT32), ("a.f64", [1e300, -0.0], VT.FLOAT64),
              ("a.u64", [2**64 - 1], VT.UINT64), ("a.i64", [-(2**63)], VT.INT64),
              ("a.bool", [True, False, True], VT.BOOL),
              ("a.str", ["", "a b", "Ġthe", "日本語", "🙂" * 40, "x" * 300], VT.STRING)]
    for key, value, sub in arrays:
        w.add_key_value(key, value, VT.ARRAY, sub_type=sub)
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((4, 8)).astype(np.float16))
    w.add_tensor("i32", np.arange(6, dtype=np.int32))
    w.add_tensor("q8", rng.integers(0, 256, (2, 34), np.uint8), raw_dtype=QT.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("endian", [GGUFEndian.LITTLE, GGUFEndian.BIG])
def test_every_value_type_and_byte_order(tmp_path, endian):
    path = str(tmp_path / f"every-{endian.name}.gguf")
    _write_every_type(path, endian)
    ours = read_metadata(path)
    assert_same_metadata(ours, reference_metadata(path))
    assert ours["u64"] == 2**63 + 5 and ours["a.str"][3] == "日本語" and ours["empty_text"] == ""
    assert_same_tensors(path)
    assert read_gguf(path).tensors["i32"].data.tolist() == list(range(6))


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _file(*kvs: bytes) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def test_nested_and_empty_arrays(tmp_path):
    """Shapes gguf-py's writer refuses to write: an array of arrays stays nested, an empty array
    is an empty list. (gguf-py's reader flattens nested arrays; nothing we read has them.)"""
    nested = (_string("nested") + struct.pack("<I", VT.ARRAY) + struct.pack("<IQ", VT.ARRAY, 2)
              + struct.pack("<IQ", VT.UINT32, 2) + struct.pack("<II", 1, 2)
              + struct.pack("<IQ", VT.STRING, 1) + _string("x"))
    empty = _string("empty") + struct.pack("<I", VT.ARRAY) + struct.pack("<IQ", VT.STRING, 0)
    path = tmp_path / "nested.gguf"
    path.write_bytes(_file(nested, empty))
    assert read_metadata(str(path)) == {"GGUF.version": 3, "GGUF.tensor_count": 0, "GGUF.kv_count": 2,
                                        "nested": [[1, 2], ["x"]], "empty": []}


@pytest.mark.parametrize("payload, needle", [
    (struct.pack("<IQ", VT.STRING, 2**62), "tokens"),  # a count no file can hold
    (struct.pack("<IQ", VT.STRING, 2) + _string("ok") + struct.pack("<Q", 2**40) + b"ab", "string"),
    (struct.pack("<IQ", VT.STRING, 1) + struct.pack("<Q", 2) + b"\xff\xfe", "not UTF-8"),
    (struct.pack("<IQ", VT.FLOAT32, 2**61), "tokens"),
    (struct.pack("<IQ", 99, 1), "unknown value type"),
])
def test_corrupt_arrays_are_refused(tmp_path, payload, needle):
    path = tmp_path / "bad.gguf"
    path.write_bytes(_file(_string("tokenizer.ggml.tokens") + struct.pack("<I", VT.ARRAY) + payload))
    with pytest.raises(ModelLoadError) as info:
        read_metadata(str(path))
    message = str(info.value)
    assert str(path) in message and "corrupt" in message and needle in message, message


def test_duplicate_key_is_refused(tmp_path):
    kv = _string("k") + struct.pack("<I", VT.UINT32) + struct.pack("<I", 1)
    path = tmp_path / "dup.gguf"
    path.write_bytes(_file(kv, kv))
    with pytest.raises(ModelLoadError, match="appears twice"):
        read_metadata(str(path))
