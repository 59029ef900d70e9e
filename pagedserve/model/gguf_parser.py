"""The byte layout of a GGUF file, parsed in one pass over a memory map.

gguf-py's `GGUFReader` builds a numpy view per element of every metadata array, which takes
seconds for a 49k-token vocabulary with 48k merges; this parser makes one Python `str` per
string and reads a numeric array with one `struct.unpack_from`, so opening a file for its
tokenizer costs tens of milliseconds, and it needs neither gguf-py nor numpy (whose import alone
would cost more than the parse).

Layout (all integers little-endian, or all big-endian in a big-endian file):
  magic "GGUF", version u32 (2 or 3), tensor_count u64, kv_count u64,
  kv_count x (key: string, value_type u32, value),
  tensor_count x (name: string, n_dims u32, dims u64[n_dims], ggml_type u32, offset u64),
  padding to `general.alignment` (default 32), tensor data.
A string is a u64 byte length and that many UTF-8 bytes; an array is item_type u32, count u64,
then the items.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# GGUF value types (gguf-py's GGUFValueType)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
# value type -> struct code
_SCALARS = {
    UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i", FLOAT32: "f", BOOL: "?",
    UINT64: "Q", INT64: "q", FLOAT64: "d",
}


class GGUFFormatError(ValueError):
    """The bytes are not a well-formed GGUF file (truncated, corrupt, unsupported version)."""


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor-info table. `dims` in GGUF order (fastest-varying first)."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    data_offset: int  # absolute byte offset of the tensor's data in the file


@dataclass(frozen=True)
class GGUFLayout:
    byte_order: str  # "<" or ">"
    metadata: dict[str, Any]  # key -> Python value (arrays are lists, nested arrays nested lists)
    tensor_infos: list[TensorInfo]
    data_offset: int  # where tensor data starts (aligned)


class _Cursor:
    """Reads values at a moving position of a buffer; every read is bounds-checked."""

    def __init__(self, buf, byte_order: str):
        self.buf = buf  # mmap.mmap or bytes: slicing gives bytes
        self.size = len(buf)
        self.pos = 0
        self.bo = byte_order
        self._u32 = struct.Struct(byte_order + "I").unpack_from
        self._u64 = struct.Struct(byte_order + "Q").unpack_from

    def _need(self, num_bytes: int, what: str) -> None:
        if num_bytes < 0 or self.pos + num_bytes > self.size:
            raise GGUFFormatError(
                f"{what} at byte {self.pos} needs {num_bytes} bytes, the file has {self.size}"
            )

    def u32(self, what: str) -> int:
        self._need(4, what)
        (value,) = self._u32(self.buf, self.pos)
        self.pos += 4
        return value

    def u64(self, what: str) -> int:
        self._need(8, what)
        (value,) = self._u64(self.buf, self.pos)
        self.pos += 8
        return value

    def string(self, what: str) -> str:
        length = self.u64(what)
        self._need(length, what)
        raw = self.buf[self.pos:self.pos + length]
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFFormatError(f"{what} at byte {self.pos - length} is not UTF-8 ({e})") from None

    def scalar(self, value_type: int, what: str) -> Any:
        code = _SCALARS[value_type]
        size = struct.calcsize(code)
        self._need(size, what)
        (value,) = struct.unpack_from(self.bo + code, self.buf, self.pos)
        self.pos += size
        return value

    def value(self, value_type: int, what: str) -> Any:
        if value_type == STRING:
            return self.string(what)
        if value_type in _SCALARS:
            return self.scalar(value_type, what)
        if value_type == ARRAY:
            item_type = self.u32(what)
            count = self.u64(what)
            return self.array(item_type, count, what)
        raise GGUFFormatError(f"{what} has unknown value type {value_type}")

    def array(self, item_type: int, count: int, what: str) -> list:
        if item_type in _SCALARS:
            code = _SCALARS[item_type]
            num_bytes = count * struct.calcsize(code)
            self._need(num_bytes, what)
            items = struct.unpack_from(f"{self.bo}{count}{code}", self.buf, self.pos)
            self.pos += num_bytes
            return list(items)
        if item_type == STRING:
            return self.string_array(count, what)
        if item_type == ARRAY:
            self._need(count * 12, what)  # each inner array has at least its type and count
            return [self.value(ARRAY, what) for _ in range(count)]
        raise GGUFFormatError(f"{what} is an array of unknown value type {item_type}")

    def string_array(self, count: int, what: str) -> list[str]:
        """`count` length-prefixed strings. The length of each string says where the next one
        starts, so this walk is sequential: one struct read, one slice and one decode each."""
        # every string takes at least its 8-byte length: refuse a corrupt count before the loop
        self._need(count * 8, what)
        buf, size, read_u64 = self.buf, self.size, self._u64
        pos = self.pos
        out: list[str] = []
        append = out.append
        try:
            for _ in range(count):
                (length,) = read_u64(buf, pos)
                pos += 8
                end = pos + length
                if end > size:
                    raise GGUFFormatError(
                        f"{what}: string at byte {pos - 8} of length {length} ends past the file's "
                        f"{size} bytes"
                    )
                append(buf[pos:end].decode("utf-8"))
                pos = end
        except struct.error:
            raise GGUFFormatError(f"{what}: string length at byte {pos} is cut off") from None
        except UnicodeDecodeError as e:
            raise GGUFFormatError(f"{what}: string at byte {pos} is not UTF-8 ({e})") from None
        self.pos = pos
        return out


def _byte_order(buf) -> str:
    if len(buf) < 8 or buf[:4] != b"GGUF":
        raise GGUFFormatError("no GGUF magic")
    (version,) = struct.unpack_from("<I", buf, 4)
    # A file written on a big-endian machine has its version in the high half (as gguf-py checks).
    return ">" if version & 0xFFFF == 0 else "<"


def parse_gguf(buf, *, with_tensor_infos: bool = True) -> GGUFLayout:
    """Parse the header, metadata and (unless with_tensor_infos=False) the tensor-info table of
    the GGUF file in `buf` (an mmap or bytes). Raises GGUFFormatError naming what is wrong.

    The metadata holds the same keys and values as gguf-py's reader gives (its fields'
    `contents()`, numpy scalars as Python values), including "GGUF.version",
    "GGUF.tensor_count" and "GGUF.kv_count"; an array of arrays is a list of lists.
    """
    bo = _byte_order(buf)
    cur = _Cursor(buf, bo)
    cur.pos = 4
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(f"unsupported GGUF version {version} (supported: 2, 3)")
    tensor_count = cur.u64("tensor count")
    kv_count = cur.u64("metadata count")
    metadata: dict[str, Any] = {
        "GGUF.version": version, "GGUF.tensor_count": tensor_count, "GGUF.kv_count": kv_count,
    }
    alignment_type = None
    for _ in range(kv_count):
        key = cur.string("metadata key")
        if key in metadata:
            raise GGUFFormatError(f"metadata key {key!r} appears twice")
        value_type = cur.u32(f"type of metadata key {key!r}")
        metadata[key] = cur.value(value_type, f"metadata key {key!r}")
        if key == "general.alignment":
            alignment_type = value_type
    if not with_tensor_infos:
        return GGUFLayout(bo, metadata, [], 0)

    infos: list[TensorInfo] = []
    relative: list[tuple[str, tuple[int, ...], int, int]] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        name = cur.string("tensor name")
        if name in names:
            raise GGUFFormatError(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = cur.u32(f"dimension count of tensor {name!r}")
        cur._need(8 * n_dims, f"dimensions of tensor {name!r}")
        dims = tuple(cur.u64(f"dimensions of tensor {name!r}") for _ in range(n_dims))
        ggml_type = cur.u32(f"type of tensor {name!r}")
        offset = cur.u64(f"data offset of tensor {name!r}")
        relative.append((name, dims, ggml_type, offset))

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if "general.alignment" in metadata:
        if alignment_type != UINT32:
            raise GGUFFormatError("general.alignment is not a uint32")
        if alignment == 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"general.alignment {alignment} is not a power of two")
    data_offset = cur.pos + (-cur.pos) % alignment
    for name, dims, ggml_type, offset in relative:
        infos.append(TensorInfo(name, dims, ggml_type, data_offset + offset))
    return GGUFLayout(bo, metadata, infos, data_offset)
