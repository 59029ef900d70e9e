"""How many KV blocks fit in a memory budget (`--kv-cache-memory 1GiB`), or an explicit count."""

from __future__ import annotations

import re
from typing import Sequence

from pagedserve.cache.kv_cache_spec import bytes_per_block_of

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(text: str | int) -> int:
    """Bytes of "1GiB", "512MiB", "2GB", "1e9" or an int. Raises ValueError on anything else."""
    if isinstance(text, int):
        value = text
    else:
        match = _MEMORY_RE.match(text)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot parse memory size {text!r} (examples: 1GiB, 512MiB, 2GB, 1e9)")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"memory size must be > 0, got {text!r}")
    return value


def num_blocks_for_memory(
    memory_bytes: int,
    *,
    block_size: int,
    group_num_layers: Sequence[int],
    num_kv_heads: int,
    head_dim: int,
    kv_dtype: str,
) -> int:
    """Blocks per group (null block included) whose K, V (and scales) fit in `memory_bytes`.

    Every group has the same block count, so one "block" costs the sum over groups. Raises
    ValueError when not even two blocks (the null block and one usable) fit.
    """
    bytes_per_block = sum(
        bytes_per_block_of(n, block_size, num_kv_heads, head_dim, kv_dtype) for n in group_num_layers
    )
    num_blocks = memory_bytes // bytes_per_block
    if num_blocks < 2:
        raise ValueError(
            f"KV-cache memory {memory_bytes} B holds {num_blocks} blocks of {bytes_per_block} B; need >= 2"
        )
    return int(num_blocks)


def resolve_num_blocks(
    num_blocks: int | None,
    memory: str | int | None,
    *,
    block_size: int,
    group_num_layers: Sequence[int],
    num_kv_heads: int,
    head_dim: int,
    kv_dtype: str,
) -> int:
    """An explicit block count wins; otherwise size from `memory`. Exactly one must be given."""
    if (num_blocks is None) == (memory is None):
        raise ValueError("give exactly one of a KV block count and a KV-cache memory size")
    if num_blocks is not None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2, got {num_blocks}")
        return num_blocks
    return num_blocks_for_memory(
        parse_memory(memory),
        block_size=block_size,
        group_num_layers=group_num_layers,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        kv_dtype=kv_dtype,
    )
