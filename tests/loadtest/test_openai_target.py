"""The OpenAI adapter against a fake streaming server written here: SSE events with known delays,
chunked and plain bodies, usage, chat, token-id prompts, HTTP errors; through the whole CLI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pagedserve.loadtest.cli import main
from pagedserve.loadtest.report import load_json
from pagedserve.loadtest.targets import OpenAITarget
from pagedserve.loadtest.workloads import Prepared, RequestSpec, Segment

FIRST_DELAY, GAP = 0.15, 0.05  # seconds before the first event, and between events


class FakeOpenAI(BaseHTTPRequestHandler):
    """Streams max_tokens events, the last one carrying two tokens' text (so usage reports one
    token more than there are arrivals), then a usage event and [DONE]."""

    protocol_version = "HTTP/1.1"
    chunked = True
    bodies: list = []
    unready_checks = 0  # /health answers 503 this many times first (a server warming up)
    health_checks = 0

    def log_message(self, *args):
        pass

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            type(self).health_checks += 1
            return self._json(503 if self.health_checks <= self.unready_checks else 200, {})
        self._json(200, {"data": [{"id": "fake-model"}]}) if self.path == "/v1/models" else self._json(404, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/tokenize":
            return self._json(200, {"tokens": ([1] if body["add_special"] else []) + [7] * len(body["content"].split())})
        type(self).bodies.append((self.path, body))
        if body.get("prompt") == "fail":
            return self._json(503, {"error": "overloaded"})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        n = body["max_tokens"]
        chat = self.path.endswith("/chat/completions")
        time.sleep(FIRST_DELAY)
        for k in range(n - 1):
            text = "ab" if k == n - 2 else "a"
            choice = {"delta": {"content": text}} if chat else {"text": text}
            self._send(": keep-alive comment\n\ndata: " + json.dumps({"choices": [{"index": 0, **choice}]}) + "\n\n")
            time.sleep(GAP)
        self._send("data: " + json.dumps({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}) + "\n\n")
        self._send("data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": n}})
                   + "\r\n\r\ndata: [DONE]\n\n")
        if self.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _send(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        self.wfile.flush()


@pytest.fixture
def fake():
    FakeOpenAI.bodies = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    FakeOpenAI.chunked = True
    FakeOpenAI.unready_checks = FakeOpenAI.health_checks = 0


def run(target: OpenAITarget, prepared: Prepared):
    async def go():
        await target.start()
        try:
            return await target.generate(prepared)
        finally:
            await target.close()

    return asyncio.run(go())


def spec(prompt="hello there", max_tokens=4, messages=None) -> RequestSpec:
    return RequestSpec(0, (Segment(prompt, 2),), messages=messages, max_tokens=max_tokens, input_tokens=2)


@pytest.mark.parametrize("chunked", [True, False])
def test_stream_timings_and_usage(fake, chunked):
    FakeOpenAI.chunked = chunked
    target = OpenAITarget(fake, temperature=0.0, ignore_eos=True)
    assert target.describe()["model"] == "fake-model"
    rec = run(target, Prepared(spec(max_tokens=5), text="hello there"))
    assert rec.ok, rec.error_detail
    assert len(rec.arrivals) == 4 and rec.arrival_tokens == [0, 0, 0, 0]  # the empty final text is no arrival
    assert rec.output_tokens == 5 and rec.output_tokens_source == "usage" and rec.input_tokens == 11
    assert rec.finish_reason == "length"
    assert FIRST_DELAY <= rec.ttft < FIRST_DELAY + 2.0
    # A single gap may look short when a busy client read the previous event late; an event can
    # never arrive before the server sent it, so the last arrival bounds the sum from below.
    assert len(rec.itls) == 3 and all(0.0 <= g < GAP + 2.0 for g in rec.itls)
    assert rec.ttft + sum(rec.itls) >= FIRST_DELAY + 3 * GAP
    assert rec.e2e >= rec.arrivals[-1] and rec.tpot == pytest.approx((rec.e2e - rec.ttft) / 4)
    path, body = FakeOpenAI.bodies[-1]
    assert path == "/v1/completions"
    assert body == {"max_tokens": 5, "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True},
                    "ignore_eos": True, "model": "fake-model", "prompt": "hello there"}


def test_chat_token_ids_and_errors(fake):
    target = OpenAITarget(fake, model="m")
    rec = run(target, Prepared(spec(max_tokens=3), messages=[{"role": "user", "content": "hi"}]))
    assert rec.ok and len(rec.arrivals) == 2 and rec.output_tokens == 3
    assert FakeOpenAI.bodies[-1][0] == "/v1/chat/completions" and FakeOpenAI.bodies[-1][1]["model"] == "m"
    assert target.tokenize("a b c", True) == [1, 7, 7, 7]
    rec = run(target, Prepared(spec(), prompt_ids=[1, 7, 7]))
    assert rec.ok and FakeOpenAI.bodies[-1][1]["prompt"] == [1, 7, 7] and "ignore_eos" not in FakeOpenAI.bodies[-1][1]
    rec = run(target, Prepared(spec("fail"), text="fail"))
    assert rec.error == "HTTP_503" and "overloaded" in rec.error_detail and rec.ttft is None
    closed = OpenAITarget("http://127.0.0.1:1")  # nothing listens on port 1
    assert run(closed, Prepared(spec(), text="x")).error == "CONNECTION"


def test_cli_sweep_against_fake_server(fake, tmp_path):
    out = tmp_path / "run"
    FakeOpenAI.unready_checks = 2  # warming up: the run waits for /health 200 instead of failing
    code = main(["--target", "openai", "--url", fake, "--concurrency", "1,2", "--num-requests", "3",
                 "--input-len", "6", "--output-len", "4", "--ignore-eos", "--prompt-format", "ids", "--warmup", "1",
                 "--out-dir", str(out), "--no-plots", "--no-progress", "--slo-ttft-ms", "5000"])
    assert code == 0
    result = load_json(str(out / "result.json"))
    assert [lv["label"] for lv in result["levels"]] == ["c=1", "c=2"]
    assert len(FakeOpenAI.bodies) == 1 + 3 + 3  # warm-up, then 3 per level
    assert FakeOpenAI.health_checks == 3
    prompts = [body["prompt"] for _, body in FakeOpenAI.bodies]
    assert all(len(p) == 6 and p[0] == 1 for p in prompts)  # exact lengths from /tokenize
    for lv in result["levels"]:
        s = lv["summary"]
        assert (s["completed"], s["failed"], s["output_tokens"], s["input_tokens"]) == (3, 0, 12, 33)
        assert s["itl_ms"]["count"] == 3 * 2 and s["good_requests"] == 3
        assert s["ttft_ms"]["min"] >= FIRST_DELAY * 1000
    assert (out / "summary.md").read_text().count("| c=") >= 2
