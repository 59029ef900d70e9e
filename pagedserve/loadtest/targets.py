"""Servers under test: pagedserve over gRPC, or any OpenAI-compatible HTTP server (streaming SSE):
pagedserve's own HTTP front, llama-server, vLLM.

A target turns a Prepared request into a RequestRecord, timing it on `time.perf_counter`. Both
run on asyncio (grpc.aio; raw asyncio streams for HTTP, standard library only), so hundreds of
requests in flight cost no threads. Setup calls (tokenize, model name) are blocking and happen
before any timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
from typing import Optional
from urllib.parse import urlsplit

import grpc

from pagedserve.loadtest.stats import RequestRecord
from pagedserve.loadtest.workloads import Prepared
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2_grpc as pb_grpc
from pagedserve.client import PagedServeClient

FINISH_NAMES = {1: "stop", 2: "length", 3: "abort"}


class GrpcTarget:
    """pagedserve's PagedServe service at `address` (host:port, plaintext)."""

    kind = "grpc"

    def __init__(self, address: str, temperature: float = 0.0, ignore_eos: bool = False, timeout: float = 600.0):
        self.address, self.temperature, self.ignore_eos, self.timeout = address, temperature, ignore_eos, timeout
        self._setup = PagedServeClient(address)  # blocking client, for setup calls only
        self._channel = None
        self._stub = None

    def readiness(self) -> str:
        """"" when the server's health is SERVING, else why not (one check, for wait_until_ready)."""
        try:
            status = health_pb2_grpc.HealthStub(self._setup.channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5.0).status
        except grpc.RpcError as e:
            return f"health check: {e.code().name}"
        return "" if status == health_pb2.HealthCheckResponse.SERVING else \
            f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"

    def describe(self) -> dict:
        """Model facts for the report (waits up to 30 s for the server)."""
        try:
            self._setup.wait_ready(30.0)
            info = self._setup.model_info()
        except (grpc.FutureTimeoutError, grpc.RpcError) as e:
            raise OSError(f"no usable pagedserve gRPC server at {self.address}: {e}") from None
        return {"target": "grpc", "address": self.address, "model": info.model_name,
                "weight_format": info.weight_format, "kv_dtype": info.kv_dtype,
                "num_kv_blocks": info.num_blocks_total, "block_size": info.block_size}

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self._setup.tokenize(text, add_special_tokens=add_special)

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)])
        self._stub = pb_grpc.PagedServeStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._setup.close()

    async def generate(self, req: Prepared) -> RequestRecord:
        """Stream one Generate call; a response with token ids is one arrival."""
        prompt = req.prompt_ids if req.prompt_ids is not None else (req.messages or req.text)
        request = PagedServeClient.build_request(prompt, chat=req.messages is not None, max_tokens=req.spec.max_tokens,
                                                 temperature=self.temperature, ignore_eos=self.ignore_eos)
        rec = RequestRecord(req.spec.index, input_tokens=req.input_tokens, max_tokens=req.spec.max_tokens)
        counted, last = 0, None
        sent = time.perf_counter()
        try:
            async for response in self._stub.Generate(request, timeout=self.timeout):
                now = time.perf_counter()
                if response.token_ids:
                    rec.arrivals.append(now - sent)
                    rec.arrival_tokens.append(len(response.token_ids))
                    counted += len(response.token_ids)
                last = response
        except grpc.aio.AioRpcError as e:
            rec.error, rec.error_detail = e.code().name, (e.details() or "")[:300]
        rec.e2e = time.perf_counter() - sent
        rec.ttft = rec.arrivals[0] if rec.arrivals else None
        rec.output_tokens, rec.output_tokens_source = counted, "arrivals"
        if last is not None and last.HasField("usage"):
            rec.input_tokens = last.usage.prompt_tokens
            rec.output_tokens, rec.output_tokens_source = last.usage.completion_tokens, "usage"
            rec.cached_prompt_tokens = last.usage.cached_prompt_tokens
            rec.finish_reason = FINISH_NAMES.get(last.finish_reason, "")
        return rec


class HttpError(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


class OpenAITarget:
    """An OpenAI-compatible server at `url` (http://host:port): streaming /v1/completions, or
    /v1/chat/completions for chat messages. Every SSE `data:` event with non-empty text is one
    arrival; usage comes from the final event (stream_options.include_usage)."""

    kind = "openai"

    def __init__(self, url: str, model: Optional[str] = None, temperature: float = 0.0, ignore_eos: bool = False,
                 timeout: float = 600.0):
        parts = urlsplit(url if "//" in url else "http://" + url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base = parts.path.rstrip("/")
        self.model, self.temperature, self.ignore_eos, self.timeout = model, temperature, ignore_eos, timeout

    def _get_json(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, self.base + path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise HttpError(f"HTTP_{response.status}", data[:200].decode("utf-8", "replace"))
            return json.loads(data)
        finally:
            conn.close()

    def readiness(self) -> str:
        """"" when GET /health answers 200 (pagedserve, vLLM and llama-server all serve it), else why not."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", self.base + "/health")
            response = conn.getresponse()
            response.read()
            return "" if response.status == 200 else f"/health answered {response.status}"
        except OSError as e:
            return f"/health: {e}"
        finally:
            conn.close()

    def describe(self) -> dict:
        """The served model: --model, else the first of GET /v1/models (omitted if that fails)."""
        if self.model is None:
            try:
                self.model = self._get_json("GET", "/v1/models")["data"][0]["id"]
            except (OSError, HttpError, ValueError, KeyError, IndexError):
                self.model = None
        return {"target": "openai", "url": f"http://{self.host}:{self.port}{self.base}", "model": self.model}

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """Token ids from POST /tokenize, in both dialects: llama-server's {"content", "add_special"}
        and vLLM's (and pagedserve's) {"prompt", "add_special_tokens"}; both answer {"tokens"}."""
        body = {"content": text, "add_special": add_special, "prompt": text, "add_special_tokens": add_special}
        return self._get_json("POST", "/tokenize", body)["tokens"]

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def body(self, req: Prepared) -> tuple[str, dict]:
        """The endpoint path and JSON body of a request."""
        body: dict = {"max_tokens": req.spec.max_tokens, "temperature": self.temperature, "stream": True,
                      "stream_options": {"include_usage": True}}
        if self.ignore_eos:
            body["ignore_eos"] = True  # llama-server and vLLM accept it; others ignore it
        if self.model:
            body["model"] = self.model
        if req.messages is not None:
            return "/v1/chat/completions", {**body, "messages": req.messages}
        return "/v1/completions", {**body, "prompt": req.prompt_ids if req.prompt_ids is not None else req.text}

    async def generate(self, req: Prepared) -> RequestRecord:
        rec = RequestRecord(req.spec.index, input_tokens=req.input_tokens, max_tokens=req.spec.max_tokens)
        path, body = self.body(req)
        usage = None
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout), contextlib.aclosing(self._events(path, body)) as events:
                async for event in events:
                    now = time.perf_counter()
                    if "error" in event:
                        raise HttpError("STREAM_ERROR", json.dumps(event["error"])[:300])
                    for choice in event.get("choices") or []:
                        text = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
                        if text:
                            rec.arrivals.append(now - sent)
                            rec.arrival_tokens.append(0)
                        rec.finish_reason = choice.get("finish_reason") or rec.finish_reason
                    usage = event.get("usage") or usage
        except HttpError as e:
            rec.error, rec.error_detail = e.code, e.detail
        except TimeoutError:
            rec.error = "TIMEOUT"
        except (OSError, asyncio.IncompleteReadError) as e:
            rec.error, rec.error_detail = "CONNECTION", str(e)[:300]
        except ValueError as e:  # malformed status line, chunk size or JSON
            rec.error, rec.error_detail = "PROTOCOL", str(e)[:300]
        rec.e2e = time.perf_counter() - sent
        rec.ttft = rec.arrivals[0] if rec.arrivals else None
        rec.output_tokens, rec.output_tokens_source = len(rec.arrivals), "arrivals"
        if usage and usage.get("completion_tokens") is not None:
            rec.output_tokens, rec.output_tokens_source = int(usage["completion_tokens"]), "usage"
            rec.input_tokens = int(usage.get("prompt_tokens") or rec.input_tokens)
        return rec

    async def _events(self, path: str, body: dict):
        """Yield each SSE `data:` JSON payload as it arrives; stop at `data: [DONE]` or the end."""
        buffer = b""
        async with contextlib.aclosing(self._post_stream(path, body)) as chunks:
            async for chunk in chunks:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments (":"), event:/id: fields
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        return
                    yield json.loads(payload)

    async def _post_stream(self, path: str, body: dict):
        """POST JSON over a fresh connection (Connection: close) and yield the body bytes as they
        arrive, undoing chunked transfer encoding. A non-200 status raises HttpError."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            data = json.dumps(body).encode()
            host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
            writer.write(f"POST {self.base}{path} HTTP/1.1\r\nHost: {host}:{self.port}\r\n"
                         f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
            status_line = (await reader.readline()).split()
            if len(status_line) < 2:
                raise ValueError("no HTTP status line")
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            status = int(status_line[1])
            if status != 200:
                raise HttpError(f"HTTP_{status}", (await reader.read(300)).decode("utf-8", "replace"))
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
                    yield await reader.readexactly(size)
                    await reader.readexactly(2)  # the CRLF after each chunk
            else:
                while chunk := await reader.read(65536):
                    yield chunk
        finally:
            writer.close()


def make_target(kind: str, address: str, **options):
    """A target by name: "grpc" (address host:port) or "openai" (address http://host:port)."""
    if kind == "grpc":
        options.pop("model", None)
        return GrpcTarget(address, **options)
    if kind == "openai":
        return OpenAITarget(address, **options)
    raise ValueError(f"unknown target {kind!r}; choose grpc or openai")
