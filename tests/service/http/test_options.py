"""The HTTP and API-key server flags: generated from ServerOptions, the key also from the environment."""

from __future__ import annotations

import argparse

import pytest

from pagedserve.service.server_options import API_KEY_ENV, ServerOptions


def parse(*argv: str) -> ServerOptions:
    parser = argparse.ArgumentParser()
    ServerOptions.add_cli_args(parser)
    return ServerOptions.from_cli_args(parser.parse_args(argv))


def test_defaults_http_on_8000_metrics_on_the_http_port(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    options = parse()
    assert (options.http_host, options.http_port, options.metrics_port, options.api_key) == (
        "127.0.0.1", 8000, None, None)
    assert parse("--http-port", "0").http_port is None  # 0 on the command line: no HTTP front
    assert parse("--http-port", "8081", "--metrics-port", "9100").metrics_port == 9100


def test_api_key_from_flag_or_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert parse().api_key == "from-env"
    assert parse("--api-key", "from-flag").api_key == "from-flag"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert parse().api_key is None
    with pytest.raises(ValueError, match="api_key must not be empty"):
        ServerOptions(api_key="")
