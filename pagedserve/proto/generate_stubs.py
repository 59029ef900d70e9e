"""Generate the Python stubs of pagedserve/proto/pagedserve/v1/pagedserve.proto with grpcio-tools.

    python -m pagedserve.proto.generate_stubs            # rewrite the committed stubs in place
    python -m pagedserve.proto.generate_stubs --out DIR  # write them under DIR (the staleness test does this)

The stubs are committed (so a plain install needs no grpcio-tools); tests/service/test_stubs.py
regenerates them into a temporary folder and fails when they differ. protoc names the module of
a `.proto` by its path under the include root, so with `-I proto` the messages are registered as
"pagedserve/v1/pagedserve.proto" (what reflection reports and what other clients compile), and
the one import protoc writes into the _grpc module is made absolute (`pagedserve.proto.pagedserve.v1`)
because `pagedserve` is the installed top-level package.
"""

from __future__ import annotations

import argparse
import os
import sys

PROTO_ROOT = os.path.dirname(os.path.abspath(__file__))
PROTO_FILE = "pagedserve/v1/pagedserve.proto"
STUB_NAMES = ("pagedserve_pb2.py", "pagedserve_pb2.pyi", "pagedserve_pb2_grpc.py")
_PROTOC_IMPORT = "from pagedserve.v1 import pagedserve_pb2 as"
_PACKAGE_IMPORT = "from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as"


def generate(out_root: str) -> list[str]:
    """Write the stubs under `out_root`/pagedserve/v1/ and return their paths.

    Raises RuntimeError with protoc's exit code when compilation fails.
    """
    from grpc_tools import protoc
    import grpc_tools

    os.makedirs(os.path.join(out_root, "pagedserve", "v1"), exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        os.path.join(PROTO_ROOT, PROTO_FILE),
    ])
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    paths = [os.path.join(out_root, "pagedserve", "v1", name) for name in STUB_NAMES]
    grpc_module = paths[2]
    with open(grpc_module, encoding="utf-8") as f:
        text = f.read()
    if _PROTOC_IMPORT not in text:
        raise RuntimeError(f"protoc's import line changed; update {__file__}")
    with open(grpc_module, "w", encoding="utf-8") as f:
        f.write(text.replace(_PROTOC_IMPORT, _PACKAGE_IMPORT))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=PROTO_ROOT, help="output root (default: next to the .proto)")
    ns = parser.parse_args(argv)
    for path in generate(ns.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
