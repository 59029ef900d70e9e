"""The HTTP front's listener: uvicorn serving the OpenAI-compatible app inside the gRPC server's
event loop, so one process runs one engine behind both fronts.

HTTP/1.1 is parsed and framed by httptools (a dependency: uvicorn picks it over pure-Python h11),
which costs less per SSE chunk on the loop the engine's outputs arrive on.

uvicorn installs no signal handlers here: the process's own handler (pagedserve serve) drains
both fronts in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Optional

import uvicorn

_START_TIMEOUT_S = 30.0


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield  # the embedding server owns SIGTERM/SIGINT


class HttpListener:
    """uvicorn over `app` on host:port (0 picks a free port; `port` holds the bound one)."""

    def __init__(self, app, host: str, port: int):
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = _EmbeddedServer(config)
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        async with asyncio.timeout(_START_TIMEOUT_S):
            while not self._server.started:
                if self._task.done():
                    self._task.result()  # raises what stopped it
                    raise OSError("the HTTP server stopped while starting")
                await asyncio.sleep(0.01)

    async def stop(self, grace_seconds: float) -> None:
        """Stop listening; open responses get `grace_seconds`, then their tasks are cancelled."""
        if self._task is None:
            self._socket.close()
            return
        self._server.config.timeout_graceful_shutdown = max(0.0, grace_seconds)
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
