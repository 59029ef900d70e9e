"""The HTTP front of the shared in-process server, reached with the official `openai` client."""

from __future__ import annotations

import openai
import pytest


def base_url(server) -> str:
    return f"http://127.0.0.1:{server.server.http_port}"


def openai_client(server, api_key: str = "unused", **options) -> openai.OpenAI:
    """An SDK client of `server`'s HTTP front: no retries (a refusal must reach the test), bounded."""
    return openai.OpenAI(base_url=base_url(server) + "/v1", api_key=api_key, max_retries=0, timeout=600.0,
                         **options)


@pytest.fixture(scope="session")
def client(served) -> openai.OpenAI:
    return openai_client(served)


@pytest.fixture(scope="session")
def model_name(client) -> str:
    return client.models.list().data[0].id
