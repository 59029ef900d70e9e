"""Open a GGUF file: metadata as plain Python values, tensors as memory-mapped views.

Every way a file can be wrong (not GGUF, truncated, corrupt, unknown tensor type) is turned into
a `ModelLoadError` that names the file and the problem, so callers never see a traceback from
deep inside the `gguf` package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"


class ModelLoadError(ValueError):
    """A model file that cannot be served, with a message saying why."""


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the file. `data` is a read-only view into the memory map (never a copy)."""

    name: str
    type_name: str  # GGML type name, e.g. "Q4_1", "F32"
    shape: tuple[int, ...]  # numpy order: [rows, cols] for a matrix (rows = output features)
    data: np.ndarray  # raw bytes (uint8) for quantized types, typed values for float types


@dataclass(frozen=True)
class GGUFFile:
    path: str
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]


def _field_value(field) -> Any:
    value = field.contents()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def read_gguf(path: str, *, with_tensors: bool = True) -> GGUFFile:
    """Open `path` and return its metadata (and tensors, memory-mapped) or raise ModelLoadError."""
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, OverflowError, EOFError, MemoryError, TypeError) as e:
        raise ModelLoadError(f"{path} is truncated or corrupt: {type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the gguf package raises many types on bad input
        raise ModelLoadError(f"{path} could not be read as GGUF: {type(e).__name__}: {e}") from None

    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            metadata[key] = _field_value(field)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{path}: metadata key {key!r} is corrupt ({e})") from None

    tensors: dict[str, GGUFTensor] = {}
    if with_tensors:
        file_size = os.path.getsize(path)
        for t in reader.tensors:
            type_name = getattr(t.tensor_type, "name", str(t.tensor_type))
            end = int(t.data_offset) + int(t.n_bytes)
            if end > file_size:
                raise ModelLoadError(
                    f"{path} is truncated: tensor {t.name!r} ends at byte {end}, file has {file_size}"
                )
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            tensors[t.name] = GGUFTensor(t.name, type_name, shape, t.data)
    return GGUFFile(path=path, metadata=metadata, tensors=tensors)


def read_metadata(path: str) -> dict[str, Any]:
    """Only the key/value metadata of a GGUF file (plain Python values; arrays become lists)."""
    return read_gguf(path, with_tensors=False).metadata
