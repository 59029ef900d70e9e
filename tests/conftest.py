"""Shared pytest fixtures. Append new fixtures below; keep each one small."""

from __future__ import annotations

import os

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_home() -> str:
    """Where test models live: $PAGEDSERVE_HOME, else ~/.cache/pagedserve."""
    return os.environ.get("PAGEDSERVE_HOME", os.path.expanduser("~/.cache/pagedserve"))


@pytest.fixture(scope="session")
def smollm2_metadata() -> dict:
    """GGUF metadata of the default SmolLM2 model, read once per test session (~2 s)."""
    from model.gguf_file import read_metadata

    path = os.path.join(model_home(), SMOLLM2_FILE)
    if not os.path.isfile(path):
        pytest.skip(f"model file {path} not present")
    return read_metadata(path)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_metadata):
    """The SmolLM2 tokenizer, built once per test session."""
    from model.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_metadata)
