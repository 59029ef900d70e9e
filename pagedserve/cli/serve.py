"""`pagedserve serve` (the gRPC server) and `pagedserve client` (stream one generation to the terminal)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

log = logging.getLogger("pagedserve")


def add_serve_parsers(sub, add_engine_arguments) -> None:
    p = sub.add_parser("serve", help="serve the model over gRPC (PagedServe, health, reflection) with metrics")
    add_engine_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain; TLS needs --tls-key too")
    p.add_argument("--tls-key", default=None, help="PEM private key")
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.add_argument("--metrics-port", type=int, default=8000, help="Prometheus /metrics port (0 = off)")
    p.add_argument("--grace-seconds", type=float, default=30.0,
                   help="on SIGTERM/SIGINT, time in-flight streams get to finish")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens a request may ask for")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("client", help="stream a generation from a running server to the terminal")
    p.add_argument("prompt")
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--chat", action="store_true", help="send the prompt as a user turn of a chat")
    p.add_argument("--max-tokens", type=int, default=None, help="default: the server's")
    p.add_argument("--temperature", type=float, default=None, help="default: the server's (1.0)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", dest="request_seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[])
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    p.add_argument("--tls-ca", default=None, help="PEM CA certificate: connect with TLS")
    p.add_argument("--usage", action="store_true", help="print token counts and timings at the end")
    p.set_defaults(func=cmd_client)


def cmd_serve(ns: argparse.Namespace) -> int:
    from pagedserve.engine.engine_factory import build_engine, engine_args_from
    from pagedserve.service.server import PagedServeServer, ServerOptions

    options = ServerOptions(
        host=ns.host, port=ns.port, tls_cert=ns.tls_cert, tls_key=ns.tls_key, metrics_host=ns.metrics_host,
        metrics_port=ns.metrics_port or None, grace_seconds=ns.grace_seconds, max_tokens_limit=ns.max_tokens_limit)
    engine_args = engine_args_from(ns)

    async def serve() -> None:
        server = PagedServeServer(options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        def on_signal():
            if stop.is_set():  # a second signal: stop waiting for in-flight streams
                log.warning("second signal: cancelling in-flight streams")
                server.servicer.end_grace()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await server.start()
        warm = asyncio.ensure_future(server.build_and_attach(lambda: build_engine(engine_args, warm_up=True)))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({warm, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if warm.done() and warm.exception() is not None:
            await server.stop(0)
            raise warm.exception()
        await stopping
        log.info("signal received")
        await server.stop()
        warm.cancel()

    asyncio.run(serve())
    return 0


def cmd_client(ns: argparse.Namespace) -> int:
    import grpc

    from pagedserve.client import PagedServeClient

    with PagedServeClient(ns.address, tls_ca=ns.tls_ca) as client:
        request = client.build_request(ns.prompt, chat=ns.chat, max_tokens=ns.max_tokens,
                                       temperature=ns.temperature, top_p=ns.top_p, top_k=ns.top_k,
                                       seed=ns.request_seed, stop=ns.stop)
        stream = client.generate(request, timeout=ns.timeout)
        try:
            last = None
            for response in stream:
                sys.stdout.write(response.text)
                sys.stdout.flush()
                last = response
            sys.stdout.write("\n")
        except KeyboardInterrupt:
            stream.cancel()  # aborts the request on the server
            return 130
        except grpc.RpcError as e:
            print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        if ns.usage and last is not None:
            u, t = last.usage, last.timings
            print(f"[{last.request_id}] {u.prompt_tokens} prompt ({u.cached_prompt_tokens} cached) + "
                  f"{u.completion_tokens} generated tokens; queue {t.queue_seconds:.3f} s, "
                  f"first token {t.time_to_first_token_seconds:.3f} s, total {t.total_seconds:.3f} s",
                  file=sys.stderr)
    return 0
