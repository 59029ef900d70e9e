"""Loading repacks the weights without keeping the file or decoding temporaries resident."""

import json
import os
import subprocess
import sys

_PROBE = """
import json, sys
def status(key):
    return int(open('/proc/self/status').read().split(key + ':')[1].split()[0]) * 1024
def rss():
    return status('VmRSS')
import numba, numpy, gguf, pagedserve.kernels.quant_matmul, pagedserve.model.forward  # imports are not the model
from pagedserve.model.loader import load_model
before = rss()
model = load_model(sys.argv[1])
print(json.dumps({"delta": rss() - before, "peak": status('VmHWM') - before, "weights": model.weights.nbytes,
                  "stacked": model.weights.stack is not None}))
"""


def _load_figures(path):
    out = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_resident_memory_after_load_stays_near_file_size(smollm2_path):
    figures = _load_figures(smollm2_path)
    file_size = os.path.getsize(smollm2_path)
    # Repacked weights are about 1.2x the file (f16 scales become f32); tokenizer tables add a little.
    assert figures["weights"] < 1.3 * file_size
    assert figures["delta"] < 1.7 * file_size, figures


def test_loading_never_holds_more_than_a_tenth_of_the_file_above_the_loaded_model(smollm2_path):
    # The layers are stacked as they load (model/layer_stack.py); stacking after the load held the
    # weights twice (peak 62 MB above the loaded size on this 93 MB file), now about 7 MB.
    figures = _load_figures(smollm2_path)
    assert figures["stacked"]
    assert figures["peak"] - figures["delta"] <= 0.1 * os.path.getsize(smollm2_path), figures
