"""Loading repacks the weights without keeping the file or decoding temporaries resident."""

import json
import os
import subprocess
import sys

_PROBE = """
import json, sys
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024
import numba, numpy, gguf, pagedserve.kernels.quant_matmul, pagedserve.model.forward  # imports are not the model
from pagedserve.model.loader import load_model
before = rss()
model = load_model(sys.argv[1])
print(json.dumps({"delta": rss() - before, "weights": model.weights.nbytes}))
"""


def test_resident_memory_after_load_stays_near_file_size(smollm2_path):
    out = subprocess.run([sys.executable, "-c", _PROBE, smollm2_path], capture_output=True, text=True,
                         check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    file_size = os.path.getsize(smollm2_path)
    # Repacked weights are about 1.2x the file (f16 scales become f32); tokenizer tables add a little.
    assert figures["weights"] < 1.3 * file_size
    assert figures["delta"] < 1.7 * file_size, figures
