"""Health, reflection, warm-up, TLS and graceful shutdown; the unary methods and the CLI client."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.client import PagedServeClient
from tests.service.conftest import ServerThread, rpc_error, test_options, wait_until

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_and_reflection_answer(served):
    assert served.health("") == SERVING
    assert served.health("pagedserve.v1.PagedServe") == SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(served.client.channel)
    replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in replies[0].list_services_response.service}
    assert names == {"pagedserve.v1.PagedServe", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    database = ProtoReflectionDescriptorDatabase(served.client.channel)
    file = database.FindFileContainingSymbol("pagedserve.v1.PagedServe")
    assert file.package == "pagedserve.v1"
    assert [m.name for m in file.service[0].method] == ["Generate", "Tokenize", "Detokenize", "ModelInfo", "Abort"]


def test_model_info_tokenize_detokenize(served, smollm2_model):
    info = served.client.model_info()
    cfg, spec = smollm2_model.config, served.engine.config.kv_cache_spec
    assert (info.architecture, info.context_length, info.vocab_size, info.weight_format) == (
        "llama", 8192, 49152, cfg.weight_format)
    assert (info.kv_dtype, info.block_size, info.num_blocks_total) == ("f16", 16, 255)
    assert info.bytes_per_block == spec.bytes_per_block[0] and list(info.sliding_windows) == [0]
    assert info.limits.max_tokens_limit == 64 and info.limits.max_model_len == 8192
    assert info.limits.max_stop_strings == 16 and info.limits.max_message_bytes == 16 << 20
    tokenizer = smollm2_model.tokenizer
    text = "Hello, world! <|im_start|>"
    assert served.client.tokenize(text) == tokenizer.encode(text)
    assert served.client.detokenize(tokenizer.encode(text)) == text
    chat = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="hi")])
    ids = served.client.stub.Tokenize(pb.TokenizeRequest(chat=chat)).token_ids
    assert list(ids) == tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]),
                                         add_special=False)


def test_not_serving_while_warming_up_then_serving(make_engine, smollm2_model):
    server = ServerThread(test_options(metrics_port=None))
    try:
        assert server.health() == NOT_SERVING
        for call in (lambda: list(server.client.generate(pb.GenerateRequest(text="hi"))),
                     server.client.model_info):
            error = rpc_error(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE and "warming up" in error.details()
        server.call(server.server.build_and_attach(lambda: (make_engine(), smollm2_model)))
        assert server.health() == SERVING
        assert server.client.model_info().vocab_size == 49152
    finally:
        server.close()


@pytest.mark.slow
def test_graceful_shutdown_finishes_in_flight_stream_and_refuses_new_calls(start_server):
    server = start_server()
    stream = server.client.generate(server.client.build_request([1, 504, 3458], temperature=0.0, max_tokens=16,
                                                                ignore_eos=True))
    first = next(stream)
    stopping = server.submit(server.server.stop(30.0))
    wait_until(lambda: server.health() == NOT_SERVING)
    error = rpc_error(lambda: server.client.generate(server.client.build_request("hi", max_tokens=2)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in error.details()
    rest = list(stream)
    assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
    assert len(first.token_ids) + sum(len(r.token_ids) for r in rest) == 16
    stopping.result(30)
    assert not server.server.async_engine.is_running
    assert rpc_error(server.client.model_info).code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_streams_still_open_after_the_grace_period_are_cancelled_and_freed(start_server):
    server = start_server()
    stream = server.client.generate(server.client.build_request([1, 504, 3458], temperature=0.0, max_tokens=60,
                                                                ignore_eos=True))
    next(stream)
    server.call(server.server.stop(0.2))
    error = rpc_error(lambda: list(stream))
    assert error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert server.engine.stats().num_blocks_used_all_groups == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls(tmp_path, capsys):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    server = ServerThread(test_options(metrics_port=None, tls_cert=str(cert), tls_key=str(key)))
    try:
        with PagedServeClient(server.address, tls_ca=str(cert)) as client:
            error = rpc_error(client.model_info)  # reached over TLS: the server answers "warming up"
            assert error.code() == grpc.StatusCode.UNAVAILABLE and "warming up" in error.details()
        with PagedServeClient(server.address) as plaintext:
            assert rpc_error(lambda: plaintext.model_info()).code() == grpc.StatusCode.UNAVAILABLE
        from pagedserve.cli.main import main

        assert main(["client", "hi", "--address", server.address]) == 1  # plaintext against TLS
        err = capsys.readouterr().err
        assert "error: UNAVAILABLE" in err and "(if the server uses TLS, connect with --tls-ca CA.pem)" in err
    finally:
        server.close()


def test_cli_client_streams_text(served, offline_engine, smollm2_model, capsys):
    from pagedserve.sampling_params import SamplingParams
    from pagedserve.cli.main import main

    ids = smollm2_model.tokenizer.encode("The capital of France is")
    want = offline_engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=5))[0].new_text
    code = main(["client", "The capital of France is", "--address", served.address, "--max-tokens", "5",
                 "--temperature", "0"])
    assert code == 0
    assert capsys.readouterr().out == want + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_exits_within_grace_plus_2_s_while_a_long_tokenization_runs(smollm2_path):
    """`pagedserve serve` as a process: a SIGTERM during a tokenization of tens of seconds
    (1 MB of "%", just under the size bound) ends it within the bar, grace + 2 s."""
    grace, port = 1.0, free_port()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pagedserve.cli.main", "--log-level", "WARNING", "serve", "--model", smollm2_path,
         "--port", str(port), "--metrics-port", "0", "--grace-seconds", str(grace), "--num-kv-blocks", "32"],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = PagedServeClient(f"127.0.0.1:{port}")
        wait_until(lambda: proc.poll() is not None or _serving(client), timeout=600, interval=0.5)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        outcome = []

        def tokenize():
            try:
                outcome.append(client.tokenize("%" * 1_000_000))
            except grpc.RpcError as e:
                outcome.append(e.code())

        caller = threading.Thread(target=tokenize, daemon=True)
        caller.start()
        caller.join(1.0)  # the request is sent and tokenizing (it takes tens of seconds)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace + 2)
        caller.join(10)
        assert outcome and isinstance(outcome[0], grpc.StatusCode), "the tokenization finished before SIGTERM"
        assert proc.returncode == 0, proc.stderr.read()[-2000:]
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _serving(client: PagedServeClient) -> bool:
    from grpc_health.v1 import health_pb2_grpc

    try:
        return health_pb2_grpc.HealthStub(client.channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2).status == SERVING
    except grpc.RpcError:
        return False
