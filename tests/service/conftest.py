"""In-process gRPC servers over the session's default model, reached through real channels.

A server runs on its own asyncio loop in a background thread (as in `pagedserve serve`, where
the engine has a thread of its own too); tests talk to it with the blocking client.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from pagedserve.client import PagedServeClient
from pagedserve.service.server import PagedServeServer, ServerOptions


class ServerThread:
    """A PagedServeServer on a private event loop; `call` runs a coroutine there and waits."""

    def __init__(self, options: ServerOptions, engine=None, model=None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-grpc-loop", daemon=True)
        self.thread.start()
        self.server: PagedServeServer = self.call(self._create(options))
        if engine is not None:
            self.call(self.server.attach_engine(engine, model))
        self.engine = engine
        self.address = self.server.address
        self.client = PagedServeClient(self.address)

    async def _create(self, options):
        server = PagedServeServer(options)
        await server.start()
        return server

    def call(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro):
        """Start a coroutine on the server's loop without waiting (a concurrent.futures.Future)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def health(self, service: str = "") -> int:
        stub = health_pb2_grpc.HealthStub(self.client.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def scrape_families(self) -> list:
        """The metrics endpoint parsed by prometheus_client's own parser."""
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        return list(text_string_to_metric_families(urllib.request.urlopen(url, timeout=5).read().decode()))

    def scrape(self) -> dict[str, dict[tuple, float]]:
        """The metrics endpoint parsed: sample name -> {sorted label items: value}."""
        samples: dict[str, dict[tuple, float]] = {}
        for family in self.scrape_families():
            for s in family.samples:
                samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return samples

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.client.close()
        self.call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.01) -> None:
    """Poll until predicate() is true; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def test_options(**overrides) -> ServerOptions:
    return ServerOptions(**{"port": 0, "metrics_port": 0, "http_port": 0, "grace_seconds": 5.0, "max_tokens_limit": 64,
                            "max_prompt_tokens": 8191,
                            **overrides})


test_options.__test__ = False  # a factory, not a test


@pytest.fixture(scope="session")
def start_server(make_engine, smollm2_model):
    """Factory: a running server over a fresh engine (EngineArgs overrides); stopped at the end."""
    servers: list[ServerThread] = []

    def start(options: ServerOptions | None = None, **engine_overrides) -> ServerThread:
        engine = make_engine(**engine_overrides)
        server = ServerThread(options or test_options(), engine, smollm2_model)
        servers.append(server)
        return server

    yield start
    for server in servers:
        try:
            server.close()
        except Exception:  # already stopped by its test
            pass


@pytest.fixture(scope="session")
def served(start_server) -> ServerThread:
    """The shared server: default engine settings (256 blocks), max_tokens_limit 64."""
    return start_server()


@pytest.fixture(scope="session")
def offline_engine(make_engine):
    """An engine with the shared server's settings, driven in-process for reference outputs."""
    return make_engine()


def rpc_error(call) -> grpc.RpcError:
    """The RpcError a call raises (consuming a stream); fails the test if it succeeds."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    return info.value
