"""`python -m pagedserve.bench.load_memory MODEL [MODEL ...]`: what loading a model costs in memory.

Each model loads in a fresh process (a process's peak only grows). Measured from after the heavy
imports (NumPy, Numba, the kernels: they are not the model) with /proc/self/status: the resident
memory that `load_model` adds and stays (VmRSS), and its peak during the load (VmHWM). One JSON
line per model: file_bytes, weights_bytes, resident_bytes, peak_bytes, peak_over_file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MODULE = "pagedserve.bench.load_memory"  # not __name__: run with -m, that is "__main__"


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) * 1024


def measure_in_this_process(path: str) -> dict:
    """The figures of one load of `path` in this process (call it once, in a fresh process)."""
    import numba  # noqa: F401  the imports a server makes anyway are not counted as the model's
    import numpy  # noqa: F401

    import pagedserve.kernels.quant_matmul  # noqa: F401
    import pagedserve.model.forward  # noqa: F401
    from pagedserve.model.loader import load_model

    before = _status_bytes("VmRSS")
    model = load_model(path)
    file_bytes = os.path.getsize(path)
    peak = _status_bytes("VmHWM") - before
    return {"model": path, "file_bytes": file_bytes, "weights_bytes": model.weights.nbytes,
            "resident_bytes": _status_bytes("VmRSS") - before, "peak_bytes": peak,
            "peak_over_file": round(peak / file_bytes, 4), "stacked": model.weights.stack is not None}


def measure(path: str) -> dict:
    """`measure_in_this_process` in a fresh Python process."""
    out = subprocess.run([sys.executable, "-m", MODULE, "--in-process", path], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="GGUF files")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for path in args.models:
        print(json.dumps(measure_in_this_process(path) if args.in_process else measure(path)), flush=True)


if __name__ == "__main__":
    main()
