"""Loading repacks the weights without keeping the file or decoding temporaries resident."""

import json
import os
import subprocess
import sys

from pagedserve.bench.load_memory import measure


def test_resident_memory_after_load_stays_near_file_size(smollm2_path):
    # through the command line, as the README runs it (python -m ...)
    out = subprocess.run([sys.executable, "-m", "pagedserve.bench.load_memory", smollm2_path],
                         capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    file_size = os.path.getsize(smollm2_path)
    # Repacked weights are about the file's size; tokenizer tables add a little.
    assert figures["weights_bytes"] < 1.3 * file_size
    assert figures["resident_bytes"] < 1.7 * file_size, figures


def test_loading_never_holds_more_than_a_tenth_of_the_file_above_the_loaded_model(smollm2_path):
    # The layers are stacked as they load (model/layer_stack.py); stacking after the load held the
    # weights twice (peak 62 MB above the loaded size on this 93 MB file), now about 7 MB.
    figures = measure(smollm2_path)
    assert figures["stacked"]
    assert figures["peak_bytes"] - figures["resident_bytes"] <= 0.1 * figures["file_bytes"], figures
