"""How far llama.cpp and each of our activation widths are from a float64 reference, on the same
tokens: llama.cpp's greedy continuations with its top-5 logprobs (tests/data/greedy_llamacpp_*.json).

For every generated position, the mean |logprob - reference logprob| over llama.cpp's top 5 tokens,
for llama.cpp (its recorded logprobs) and for pagedserve with 16- and 8-bit activations (teacher
forced on the same ids); the reference is tests/model/reference_forward.py (NumPy float64).
    python scripts/fidelity-vs-llamacpp.py MODEL.gguf tests/data/greedy_llamacpp_smollm2.json
"""

import dataclasses
import json
import sys

import numpy as np

sys.path.insert(0, ".")
from pagedserve.engine.engine_args import EngineArgs  # noqa: E402
from pagedserve.engine.engine_factory import build_engine  # noqa: E402
from pagedserve.worker.perplexity import window_logits  # noqa: E402
from tests.model.reference_forward import ReferenceModel  # noqa: E402


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def main(model_path: str, greedy_path: str) -> None:
    cases = [c for c in json.load(open(greedy_path))["cases"] if c["generated_ids"]]
    reference = ReferenceModel(model_path)
    engines, model = {}, None
    for bits in (16, 8):
        engine, model = build_engine(dataclasses.replace(EngineArgs(model=model_path, threads=2, num_kv_blocks=64),
                                                         activation_bits=bits), model=model, warm_up=False)
        engines[bits] = engine.runner.transformer
    diffs = {"llama.cpp": [], "16": [], "8": []}
    for case in cases:
        ids = case["prompt_ids"] + case["generated_ids"]
        ref = log_softmax(reference.logits(ids))
        ours = {bits: log_softmax(window_logits(t, ids, 16)) for bits, t in engines.items()}
        for j, top5 in enumerate(case["top5_logprobs"][:len(case["generated_ids"])]):
            row = len(case["prompt_ids"]) - 1 + j
            tokens = [t for t, _ in top5]
            diffs["llama.cpp"].append(np.mean([abs(lp - ref[row, t]) for t, lp in top5]))
            for bits in engines:
                diffs[str(bits)].append(np.mean([abs(ours[bits][row, t] - ref[row, t]) for t in tokens]))
    print(json.dumps({name: {"mean_abs_delta_logprob": float(np.mean(v)), "positions": len(v)}
                      for name, v in diffs.items()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
