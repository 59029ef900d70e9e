"""The server's life: listen (NOT_SERVING), attach a warm engine (SERVING), drain and stop.

One process, one engine, two fronts: gRPC (PagedServe, health, reflection) and the
OpenAI-compatible HTTP API (with /health and /metrics), in one event loop over one AsyncEngine.

Order matters at both ends. Starting: the ports and health answer first, so orchestrators see a
live but NOT_SERVING process while kernels compile; only a warm engine turns health to SERVING.
Stopping: health NOT_SERVING, new calls refused with UNAVAILABLE (HTTP 503), in-flight streams get the grace
period to finish, the rest are cancelled (which aborts them), then the engine thread stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from pagedserve.model.loader import LoadedModel
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.engine.async_engine import AsyncEngine
from pagedserve.scheduler.engine import LLMEngine
from pagedserve.service.grpc_decoding import add_servicer_to_server
from pagedserve.service.grpc_auth import ApiKeyInterceptor
from pagedserve.service.http.app import create_app, owner_of_key
from pagedserve.service.http.errors import not_serving
from pagedserve.service.http.listener import HttpListener
from pagedserve.service.metrics import ServerMetrics
from pagedserve.service.request_validation import RequestLimits
from pagedserve.service.server_options import ServerOptions
from pagedserve.service.servicer import Backend, PagedServeServicer

log = logging.getLogger("pagedserve.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PagedServe"].full_name  # "pagedserve.v1.PagedServe"
MIB = 1 << 20


class PagedServeServer:
    """One gRPC server (PagedServe, health, reflection), the HTTP API and the metrics endpoints."""

    def __init__(self, options: ServerOptions = ServerOptions()):
        self.options = options
        self.metrics = ServerMetrics(lambda: self.async_engine)
        self.servicer = PagedServeServicer(self.metrics)
        if options.api_key is not None:  # request ids are scoped by key, not by connection
            self.servicer.owner_of = lambda context, owner=owner_of_key(options.api_key): owner
        self.health = health.aio.HealthServicer()
        self.async_engine: Optional[AsyncEngine] = None
        self.port: Optional[int] = None
        self.metrics_port: Optional[int] = None
        self.http_port: Optional[int] = None
        self._http: Optional[HttpListener] = None
        self._server: Optional[grpc.aio.Server] = None
        self._metrics_httpd = None
        self._stopped = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{self.options.host}:{self.port}"

    async def start(self) -> None:
        """Listen and answer health (NOT_SERVING) and reflection; raises OSError if the port is taken."""
        o = self.options
        interceptors = [ApiKeyInterceptor(o.api_key)] if o.api_key is not None else []
        self._server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", o.max_message_bytes),
            ("grpc.max_send_message_length", o.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
        ])
        add_servicer_to_server(self.servicer, self._server)  # malformed requests: INVALID_ARGUMENT
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        for service in ("", SERVICE_NAME):  # "" is the whole server's status
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{o.host}:{o.port}"
        if o.tls_cert:
            with open(o.tls_key, "rb") as key, open(o.tls_cert, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            self.port = self._server.add_secure_port(address, credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        await self._server.start()
        if o.http_port is not None:
            app = create_app(self._http_backend, self.metrics, self.servicer.tokenizer_threads, o.api_key)
            self._http = HttpListener(app, o.http_host, o.http_port)
            self.http_port = self._http.port
            await self._http.start()
        if o.metrics_port is not None:
            self._metrics_httpd, _ = start_http_server(o.metrics_port, o.metrics_host, registry=self.metrics.registry)
            self.metrics_port = self._metrics_httpd.server_port
        log.info("gRPC listening on %s (%s), health NOT_SERVING until the engine is warm; HTTP %s; "
                 "API key %s; metrics %s", self.address, "TLS" if o.tls_cert else "plaintext",
                 f"on http://{o.http_host}:{self.http_port}/v1" if self.http_port else "off",
                 "required" if o.api_key else "off",
                 f"also on http://{o.metrics_host}:{self.metrics_port}/metrics" if self.metrics_port else "on the HTTP port")

    def _http_backend(self) -> Backend:
        """What the HTTP front serves now; raises its 503 while warming up or draining."""
        if self.servicer.draining:
            raise not_serving("the server is shutting down; retry on another replica")
        if self.servicer.backend is None:
            raise not_serving("the server is warming up (compiling kernels); retry shortly")
        return self.servicer.backend

    async def attach_engine(self, engine: LLMEngine, model: LoadedModel) -> None:
        """Start the engine thread over a (warm) engine and turn health to SERVING."""
        self.metrics.exclude_finished_so_far(engine.stats())  # the warm-up's requests
        async_engine = AsyncEngine(engine, model, observer=self.metrics)
        self.metrics.set_clock(async_engine.clock)
        async_engine.start()
        self.async_engine = async_engine
        limits = RequestLimits(max_model_len=engine.config.max_model_len,
                               max_tokens_limit=self.options.max_tokens_limit,
                               max_prompt_tokens=self.options.max_prompt_tokens,
                               vocab_size=model.tokenizer.vocab_size)
        self.servicer.backend = Backend(async_engine, limits, self.options.max_message_bytes)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        spec = engine.config.kv_cache_spec
        log.info("SERVING %s (%s) on %s: KV cache %d blocks x %d tokens, %s, %.1f MiB",
                 model.config.name, model.path, self.address, spec.num_blocks, spec.block_size,
                 spec.kv_dtype, spec.total_bytes / MIB)

    async def build_and_attach(self, build: Callable[[], tuple[LLMEngine, LoadedModel]]) -> None:
        """Run `build` (load + warm up, slow) in a daemon thread while the server answers health,
        then attach its engine. A daemon thread, so a shutdown during warm-up need not wait."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def run():
            try:
                result = build()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                loop.call_soon_threadsafe(lambda: done.done() or done.set_exception(exc))
            else:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        threading.Thread(target=run, name="pagedserve-warm-up", daemon=True).start()
        engine, model = await done
        if not self.servicer.draining:
            await self.attach_engine(engine, model)

    async def stop(self, grace_seconds: Optional[float] = None) -> None:
        """Drain and stop; idempotent. In-flight streams get `grace_seconds` (default: options')."""
        if self._server is None:
            self._stopped.set()
            return
        if self.servicer.draining:
            await self._stopped.wait()
            return
        grace = self.options.grace_seconds if grace_seconds is None else grace_seconds
        started = time.monotonic()
        engine = self.async_engine
        log.info("shutting down: NOT_SERVING, refusing new calls, %d streams get %.1f s to finish",
                 engine.num_active_streams if engine else 0, grace)
        await self.health.enter_graceful_shutdown()
        self.servicer.draining = True
        finished = engine is None or await engine.wait_for_streams(grace)
        if not finished:
            log.warning("%d streams still open (grace %.1f s); cancelling them", engine.num_active_streams, grace)
        remaining = max(0.0, grace - (time.monotonic() - started)) if finished else 0.0
        stopping = [self._server.stop(remaining)]
        if self._http is not None:
            stopping.append(self._http.stop(remaining))
        await asyncio.gather(*stopping)
        self.servicer.close()  # tokenizations still running would slow the process's exit
        if engine is not None:
            await engine.stop()
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
