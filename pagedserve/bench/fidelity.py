"""`python -m pagedserve.bench.fidelity`: how close each activation width comes to float32.

For every width of --activation-widths (the exact 16 and the opt-in 8), one engine over the same
loaded model scores the reference set: teacher-forced logits of every prompt + its reference
continuation against float32 reference logits computed outside this project (the `oracle_*.npz`
and `.json` pairs of tests/data, copied from ../shared/reference), and optionally the perplexity
of a text in windows of --perplexity-ctx tokens (llama.cpp's llama-perplexity computes the same).

Per width: top-1 agreement over all positions, disagreements where the reference's top-1 leads by
>= 0.5 nats ("clear"), the mean |logprob - reference| over the reference's top 64 tokens, and the
perplexity. The tests hold the exact width to >= 98% top-1, no clear disagreement and a mean
|delta logprob| <= 5e-3 (tests/model/test_fidelity_*.py); this prints the same figures for both.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from pagedserve.engine.engine_args import EngineArgs
from pagedserve.bench.bench import parse_int_list
from pagedserve.bench.module_main import bench_module_main


@dataclasses.dataclass(frozen=True)
class FidelityOptions:
    oracle: str = dataclasses.field(default="tests/data/oracle_smollm2", metadata={
        "help": "reference files without extension: ORACLE.json (prompts) and ORACLE.npz (ids, top-64 logits)"})
    activation_widths: tuple[int, ...] = dataclasses.field(default=(16, 8), metadata={
        "type": parse_int_list, "metavar": "BITS,...", "help": "activation widths to score"})
    perplexity_text: str | None = dataclasses.field(default=None, metadata={
        "help": "also the perplexity of this UTF-8 text (e.g. tests/data/perplexity_en.txt)"})
    perplexity_ctx: int = dataclasses.field(default=512, metadata={"help": "perplexity window, tokens"})


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def score_against_oracle(transformer, prompts: list[dict], arrays, block_size: int) -> dict:
    """Top-1 agreement, clear disagreements and mean |delta logprob| over the oracle's prompts."""
    from pagedserve.worker.perplexity import window_logits

    agree = total = clear_total = clear_wrong = 0
    diffs = []
    for p in prompts:
        key = p["key"]
        ids = [int(i) for i in arrays[f"{key}_prompt_ids"]] + [int(i) for i in arrays[f"{key}_gen_ids"]]
        lp = _log_softmax(window_logits(transformer, ids, block_size))  # [P + G, V]
        top_idx, top_val = arrays[f"{key}_topk_idx"], arrays[f"{key}_topk_val"]  # [P + G, 64]
        ref_lp = top_val - arrays[f"{key}_lse"][:, None]
        diffs.append(float(np.abs(np.take_along_axis(lp, top_idx, axis=1) - ref_lp).mean()))
        ours = lp.argmax(axis=1)
        agree += int((ours == top_idx[:, 0]).sum())
        total += len(ids)
        clear = (top_val[:, 0] - top_val[:, 1]) >= 0.5
        clear_total += int(clear.sum())
        clear_wrong += int((ours[clear] != top_idx[clear, 0]).sum())
    return {"top1_agreement": agree / total, "positions": total, "clear_positions": clear_total,
            "clear_disagreements": clear_wrong, "mean_abs_delta_logprob": float(np.mean(diffs))}


def run(args: EngineArgs, options: FidelityOptions, model=None) -> dict:
    from pagedserve.engine.engine_factory import build_engine
    from pagedserve.worker.perplexity import perplexity

    prompts = json.load(open(options.oracle + ".json"))["prompts"]
    arrays = np.load(options.oracle + ".npz")
    text = open(options.perplexity_text, encoding="utf-8").read() if options.perplexity_text else None
    result = {}
    for bits in options.activation_widths:
        engine, model = build_engine(dataclasses.replace(args, activation_bits=bits, enable_prefix_caching=False,
                                                         max_step_ms=0.0), model=model, warm_up=False)
        transformer, block_size = engine.runner.transformer, engine.config.block_size
        row = score_against_oracle(transformer, prompts, arrays, block_size)
        if text is not None:
            ids = model.tokenizer.encode(text)
            row["perplexity"] = perplexity(transformer, ids, ctx=options.perplexity_ctx, block_size=block_size).ppl
        result[str(bits)] = row
        print(json.dumps({"activation_bits": bits, **row}), flush=True)
    return {"model": model.path, "oracle": options.oracle, "median": result}


def main(argv: list[str] | None = None) -> None:
    bench_module_main("pagedserve.bench.fidelity", __doc__, FidelityOptions, run, argv)


if __name__ == "__main__":
    main()
