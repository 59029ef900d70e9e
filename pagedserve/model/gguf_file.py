"""Open a GGUF file: metadata as plain Python values, tensors as memory-mapped views.

Every way a file can be wrong (not GGUF, truncated, corrupt, unknown tensor type) is turned into
a `ModelLoadError` that names the file and the problem, so callers never see a traceback.
The bytes are parsed by gguf_parser in one pass; numpy (for the tensor views) and gguf-py (for its
table of GGML tensor types) are imported only when tensors are wanted, so reading the metadata
alone (a tokenizer) stays cheap.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pagedserve.model.gguf_parser import GGUFFormatError, TensorInfo, parse_gguf

if TYPE_CHECKING:
    import numpy as np

GGUF_MAGIC = b"GGUF"

# GGML types whose tensors are views of typed values (gguf-py's reader does the same); every
# other type is a view of raw bytes, [..., bytes per row].
_TYPED = {"F16": "f2", "F32": "f4", "F64": "f8", "I8": "i1", "I16": "i2", "I32": "i4", "I64": "i8"}


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
    buffer: mmap.mmap | None = None  # the memory map the tensors view (None without tensors)

    def release(self, tensor: GGUFTensor) -> None:
        """Drop the tensor's pages from this process's resident memory (MADV_DONTNEED on its byte
        range, widened to whole pages). The view stays valid: the kernel reads the file again on
        the next access. Called once a tensor is repacked, so loading never holds the whole file
        resident beside the repacked weights (1B Q4_K_M: 0.8 GB less at the load peak)."""
        self.release_bytes(tensor.data)

    def release_header(self) -> None:
        """Drop the pages before the first tensor (the parsed header and metadata) the same way."""
        if self.buffer is None or not self.tensors:
            return
        import numpy as np

        base = np.frombuffer(self.buffer, dtype=np.uint8, count=1).ctypes.data
        first = min(t.data.ctypes.data for t in self.tensors.values()) - base
        self.release_bytes(np.frombuffer(self.buffer, dtype=np.uint8, count=first))

    def release_bytes(self, view) -> None:
        """`release` for any view into the file's bytes (e.g. the rows of a tensor just repacked)."""
        if self.buffer is None or not hasattr(mmap, "MADV_DONTNEED") or view.nbytes == 0:
            return
        import numpy as np

        base = np.frombuffer(self.buffer, dtype=np.uint8, count=1).ctypes.data
        start = view.ctypes.data - base
        page = mmap.PAGESIZE
        first = start // page * page
        end = min(-(-(start + view.nbytes) // page) * page, len(self.buffer))
        self.buffer.madvise(mmap.MADV_DONTNEED, first, end - first)


def _open_map(path: str) -> mmap.mmap:
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise ModelLoadError(f"{path} is not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _tensor(buf: mmap.mmap, byte_order: str, info: TensorInfo, path: str) -> GGUFTensor:
    """The memory-mapped view of one tensor (as gguf-py's reader shapes it)."""
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        ggml_type = GGMLQuantizationType(info.ggml_type)
    except ValueError:
        raise ModelLoadError(
            f"{path} is truncated or corrupt: tensor {info.name!r} has unknown GGML type {info.ggml_type}"
        ) from None
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    shape = tuple(reversed(info.dims))  # numpy order
    num_elements = math.prod(info.dims)
    num_bytes = num_elements * type_size // block_size
    end = info.data_offset + num_bytes
    if end > len(buf):
        raise ModelLoadError(
            f"{path} is truncated: tensor {info.name!r} ends at byte {end}, file has {len(buf)}"
        )
    typed = _TYPED.get(ggml_type.name)
    if typed is not None:
        dtype, count, view_shape = np.dtype(byte_order + typed), num_elements, shape
    else:
        if not shape or shape[-1] % block_size:
            raise ModelLoadError(f"{path} is truncated or corrupt: tensor {info.name!r} of type "
                                 f"{ggml_type.name} has rows of {shape[-1:]} values, not whole blocks")
        dtype, count = np.dtype(np.uint8), num_bytes
        view_shape = (*shape[:-1], shape[-1] // block_size * type_size)
    data = np.frombuffer(buf, dtype=dtype, count=count, offset=info.data_offset).reshape(view_shape)
    return GGUFTensor(info.name, ggml_type.name, shape, data)


def read_gguf(path: str, *, with_tensors: bool = True) -> GGUFFile:
    """Open `path` and return its metadata (and tensors, memory-mapped) or raise ModelLoadError.

    Without tensors, the file is unmapped before returning; with them, it stays mapped until
    the last tensor view is dropped."""
    buf = _open_map(path)
    try:
        layout = parse_gguf(buf, with_tensor_infos=with_tensors)
    except GGUFFormatError as e:
        buf.close()
        raise ModelLoadError(f"{path} is truncated or corrupt: {e}") from None
    tensors: dict[str, GGUFTensor] = {}
    if with_tensors:
        for info in layout.tensor_infos:
            tensors[info.name] = _tensor(buf, layout.byte_order, info, path)
    else:
        buf.close()
    return GGUFFile(path=path, metadata=layout.metadata, tensors=tensors, buffer=buf if with_tensors else None)


def read_metadata(path: str) -> dict[str, Any]:
    """Only the key/value metadata of a GGUF file (plain Python values; arrays become lists)."""
    return read_gguf(path, with_tensors=False).metadata
