"""The gRPC `constraint` oneof: honoured, and invalid constraints are INVALID_ARGUMENT with the
compiler's message while the server stays SERVING."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from tests.service.conftest import rpc_error, served, start_server  # noqa: F401 (fixtures)


def request(**constraint) -> pb.GenerateRequest:
    return pb.GenerateRequest(text="Pick one:", sampling=pb.SamplingOptions(temperature=1.0, seed=3),
                              stopping=pb.StoppingOptions(max_tokens=16), **constraint)


def test_choice_over_grpc(served):
    responses = list(served.client.generate(request(choice=pb.Choices(values=["cat", "dog"]))))
    text = "".join(r.text for r in responses)
    assert text in ("cat", "dog")
    assert responses[-1].finish_reason == pb.FINISH_REASON_STOP


@pytest.mark.parametrize("constraint, message", [
    ({"regex": "a(b"}, "regex: "),
    ({"json_schema": '{"type": "foo"}'}, "json_schema: Invalid type: foo"),
    ({"grammar": "start: x"}, "grammar: "),
    ({"choice": pb.Choices(values=[])}, "choice.values: "),
])
def test_invalid_constraint_is_invalid_argument(served, constraint, message):
    error = rpc_error(lambda: list(served.client.generate(request(**constraint))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert message in error.details()
    assert served.health() == health_pb2.HealthCheckResponse.SERVING
