"""A small blocking Python client of the PagedServe API (what `pagedserve client` uses).

    with PagedServeClient("127.0.0.1:50051") as client:
        for piece in client.generate_text("Once upon a time", max_tokens=32):
            print(piece, end="", flush=True)

Errors arrive as grpc.RpcError (code() and details() say what was wrong).
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import grpc

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.proto.pagedserve.v1 import pagedserve_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 16 << 20
DEFAULT_ADDRESS = "127.0.0.1:50051"  # where `pagedserve serve` listens by default


class PagedServeClient:
    """One channel to a server. `tls_ca`: PEM path of the CA that signed the server's certificate
    (or True for the system roots); None for plaintext. Raises OSError if `tls_ca` cannot be read."""

    def __init__(self, address: str = DEFAULT_ADDRESS, tls_ca: Optional[str | bool] = None,
                 tls_server_name: Optional[str] = None):
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls_ca:
            roots = None
            if isinstance(tls_ca, str):
                with open(tls_ca, "rb") as f:
                    roots = f.read()
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(roots), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = pb_grpc.PagedServeStub(self.channel)
        self.address = address

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "PagedServeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel is connected; raises TimeoutError (saying where and how long)
        after `timeout` s."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"no connection to the server at {self.address} within {timeout} s") from None

    @staticmethod
    def build_request(
        prompt: str | Sequence[int] | Sequence[dict], *, chat: bool = False, max_tokens: Optional[int] = None,
        temperature: Optional[float] = None, top_k: int = 0, top_p: Optional[float] = None,
        seed: Optional[int] = None, stop: Sequence[str] = (), stop_token_ids: Sequence[int] = (),
        ignore_eos: bool = False, logprobs: int = 0, request_id: str = "", priority: int = 0,
    ) -> pb.GenerateRequest:
        """A GenerateRequest. `prompt`: text; with chat=True a text (one user turn) or a list of
        {role, content} dicts; or token ids. Unset options keep the server's defaults."""
        request = pb.GenerateRequest(request_id=request_id, logprobs=logprobs, priority=priority)
        if chat:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            request.chat.messages.extend(pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages)
        elif isinstance(prompt, str):
            request.text = prompt
        else:
            request.token_ids.ids.extend(prompt)
        s, t = request.sampling, request.stopping
        s.top_k = top_k
        if temperature is not None:
            s.temperature = temperature
        if top_p is not None:
            s.top_p = top_p
        if seed is not None:
            s.seed = seed
        if max_tokens is not None:
            t.max_tokens = max_tokens
        t.stop.extend(stop)
        t.stop_token_ids.extend(stop_token_ids)
        t.ignore_eos = ignore_eos
        return request

    def generate(self, request: pb.GenerateRequest, timeout: Optional[float] = None) -> Iterator[pb.GenerateResponse]:
        """The response stream; cancelling it (`.cancel()`) or dropping it aborts the request."""
        return self.stub.Generate(request, timeout=timeout)

    def generate_text(self, prompt, timeout: Optional[float] = None, **options) -> Iterator[str]:
        """Text pieces as they arrive (options as for build_request)."""
        for response in self.generate(self.build_request(prompt, **options), timeout):
            if response.text:
                yield response.text

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.stub.Tokenize(pb.TokenizeRequest(text=text, add_special_tokens=add_special_tokens)).token_ids)

    def detokenize(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.stub.Detokenize(pb.DetokenizeRequest(token_ids=token_ids,
                                                         skip_special_tokens=skip_special_tokens)).text

    def model_info(self) -> pb.ModelInfoResponse:
        return self.stub.ModelInfo(pb.ModelInfoRequest())

    def abort(self, request_id: str) -> bool:
        """True if the request was unfinished and is now aborted; False when this client has no
        such unfinished request (the server's NOT_FOUND)."""
        try:
            return self.stub.Abort(pb.AbortRequest(request_id=request_id)).aborted
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
