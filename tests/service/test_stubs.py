"""The committed gRPC stubs are what the .proto compiles to today (no model needed)."""

from __future__ import annotations

import os

import pytest

from pagedserve.proto import generate_stubs


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    pytest.importorskip("grpc_tools")
    fresh = generate_stubs.generate(str(tmp_path))
    for path in fresh:
        name = os.path.basename(path)
        committed = os.path.join(generate_stubs.PROTO_ROOT, "pagedserve", "v1", name)
        with open(path, encoding="utf-8") as f_new, open(committed, encoding="utf-8") as f_old:
            assert f_new.read() == f_old.read(), (
                f"{name} is stale: run `python -m pagedserve.proto.generate_stubs` and commit the result")


def test_stubs_import_as_the_proto_package():
    from pagedserve.proto.pagedserve.v1 import pagedserve_pb2, pagedserve_pb2_grpc

    assert pagedserve_pb2.DESCRIPTOR.package == "pagedserve.v1"
    assert pagedserve_pb2.DESCRIPTOR.services_by_name["PagedServe"].full_name == "pagedserve.v1.PagedServe"
    assert hasattr(pagedserve_pb2_grpc, "PagedServeStub")
