"""Where Numba caches compiled kernels: one directory per version of the kernel sources.

Why: Numba invalidates a cached function only when *its own* source file changes, not when a
kernel it inlines from another file does (a stale `decoder_layers` once kept an old matmul after
the weight layout changed, and computed garbage). So all compiled code shares one cache directory
keyed by a hash of every file with compiled code and of the settings that change code generation;
any change starts a fresh directory. NUMBA_CACHE_DIR, when set, is used as given.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numba
from numba.core import config as numba_config

_KERNELS = Path(__file__).resolve().parent
_CODEGEN_ENV = ("PAGEDSERVE_PORTABLE_INT",)  # environment read while generating code
KEEP = 3  # cache directories kept (most recently used first); older ones are deleted


def _sources() -> list[Path]:
    # All compiled code lives in this package (the decoder layer included: kernels/decoder_layer.py).
    return sorted(_KERNELS.glob("*.py"))


def source_key() -> str:
    """Hash of Numba's version, every compiled source file and the code-generation settings."""
    digest = hashlib.sha256(numba.__version__.encode())
    for path in _sources():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for name in _CODEGEN_ENV:
        digest.update(f"{name}={os.environ.get(name, '')}".encode())
    return digest.hexdigest()[:16]


def use_keyed_cache_dir() -> Path | None:
    """Point Numba's cache at <cache home>/pagedserve/numba/<source key> (must run before any
    cached function is decorated); returns it, or None when NUMBA_CACHE_DIR is set or the
    directory cannot be written (Numba then caches next to the sources)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pagedserve" / "numba"
    current = base / source_key()
    try:
        current.mkdir(parents=True, exist_ok=True)
        os.utime(current)
        others = sorted((d for d in base.iterdir() if d.is_dir() and d != current),
                        key=lambda d: d.stat().st_mtime, reverse=True)
        for old in others[KEEP - 1:]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return None
    numba_config.CACHE_DIR = str(current)
    return current
