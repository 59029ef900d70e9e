"""`pagedserve client`: stream one generation from a running server to the terminal."""

from __future__ import annotations

import argparse
import sys


def add_client_parser(sub) -> None:
    from pagedserve.client import DEFAULT_ADDRESS

    p = sub.add_parser("client", help="stream a generation from a running server to the terminal")
    p.add_argument("prompt")
    p.add_argument("--address", default=DEFAULT_ADDRESS)
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


def _hint(error, ns: argparse.Namespace) -> str:
    """A likely cause of a connection failure, for the error line."""
    import grpc

    details = error.details() or ""
    connection_lost = any(text in details for text in ("Socket closed", "Connection reset", "failed to connect"))
    if error.code() == grpc.StatusCode.UNAVAILABLE and ns.tls_ca is None and connection_lost:
        return " (if the server uses TLS, connect with --tls-ca CA.pem)"
    return ""


def cmd_client(ns: argparse.Namespace) -> int:
    import grpc

    from pagedserve.client import PagedServeClient

    try:
        client = PagedServeClient(ns.address, tls_ca=ns.tls_ca)
    except OSError as e:
        print(f"error: cannot read the --tls-ca certificate {ns.tls_ca}: {e.strerror or e}", file=sys.stderr)
        return 2
    with client:
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
            print(f"\nerror: {e.code().name}: {e.details()}{_hint(e, ns)}", file=sys.stderr)
            return 1
        if ns.usage and last is not None:
            u, t = last.usage, last.timings
            print(f"[{last.request_id}] {u.prompt_tokens} prompt ({u.cached_prompt_tokens} cached) + "
                  f"{u.completion_tokens} generated tokens; queue {t.queue_seconds:.3f} s, "
                  f"first token {t.time_to_first_token_seconds:.3f} s, total {t.total_seconds:.3f} s",
                  file=sys.stderr)
    return 0
