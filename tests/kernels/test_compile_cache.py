"""The compile-cache directory follows the kernel sources (Numba alone would keep stale inlined code)."""

import os
import time

import pytest

from pagedserve.kernels import compile_cache


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    files = [tmp_path / "a.py", tmp_path / "b.py"]
    for f in files:
        f.write_text("x = 1\n")
    monkeypatch.setattr(compile_cache, "_sources", lambda: files)
    monkeypatch.delenv("PAGEDSERVE_PORTABLE_INT", raising=False)
    return files


def test_key_changes_with_any_source_and_with_codegen_settings(fake_sources, monkeypatch):
    first = compile_cache.source_key()
    assert compile_cache.source_key() == first
    fake_sources[1].write_text("x = 2\n")  # an inlined kernel's file changes
    second = compile_cache.source_key()
    assert second != first
    monkeypatch.setenv("PAGEDSERVE_PORTABLE_INT", "1")
    assert compile_cache.source_key() not in (first, second)


def test_keyed_directory_is_used_and_old_ones_pruned(fake_sources, tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(compile_cache.numba_config, "CACHE_DIR", "")
    base = tmp_path / "home" / "pagedserve" / "numba"
    base.mkdir(parents=True)
    for i in range(4):  # older cache directories, oldest first
        old = base / f"old{i}"
        old.mkdir()
        os.utime(old, (time.time() - 100 + i, time.time() - 100 + i))
    current = compile_cache.use_keyed_cache_dir()
    assert current == base / compile_cache.source_key()
    assert compile_cache.numba_config.CACHE_DIR == str(current)
    kept = sorted(d.name for d in base.iterdir())
    assert kept == sorted([current.name, "old3", "old2"])  # KEEP = 3 most recently used


def test_explicit_numba_cache_dir_wins(fake_sources, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(compile_cache.numba_config, "CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache.use_keyed_cache_dir() is None
    assert compile_cache.numba_config.CACHE_DIR == str(tmp_path / "mine")
