"""Hand freed heap memory back to the operating system while a model loads.

Why: repacking a matrix allocates and frees temporaries of a few MB per chunk of rows. glibc keeps
freed memory in the heap (its mmap threshold grows to the size of the largest freed block), so
without a trim the temporaries of earlier chunks stay resident until the load ends. On the 1B
Q4_K_M file (766 MiB) that lifted the load peak 36 MiB above the loaded size: 861 MiB, 1.12x the
file; trimming after each layer and each chunk of the vocabulary matrix keeps it at the end state.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc's malloc_trim); a no-op on other C libraries."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
