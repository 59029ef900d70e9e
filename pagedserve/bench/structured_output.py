"""`python -m pagedserve.bench.structured_output`: the cost of constrained decoding.

In rounds on one engine, the same N concurrent prompts are generated twice: unconstrained, and
with every request constrained by one mid-size JSON schema (records in an array, long enough that
no request finishes before max_tokens). Both sample at temperature 1 with fixed seeds, and the
unconstrained side ignores EOS, so both sides generate N x max_tokens tokens. Printed per round and
as medians: generated tok/s of each side, their ratio, mean and max time to first token.

Also measured: the cold compile time of the schema (a new text each round, so the compiler's
cache misses; llguidance builds part of the lexer lazily, at the first mask) and a single
request's TTFT unconstrained, with the cached schema and with a cold one. Through the synchronous engine the matcher is built in the step, so a cold schema
adds its compile to that step; the server compiles it off the step (AsyncEngine.generate).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time

import numpy as np

from pagedserve.bench.module_main import bench_module_main
from pagedserve.bench.workloads import drive, random_prompts
from pagedserve.engine.engine_args import EngineArgs
from pagedserve.sampling_params import SamplingParams

# Mid-size: nested objects, an enum, bounded integers, a pattern and an array of 8-40 records
# (at least ~150 tokens of compact JSON), so a 64-token run never completes the grammar.
MID_SIZE_SCHEMA = {
    "type": "object",
    "properties": {
        "inventory": {
            "type": "array",
            "minItems": 8,
            "maxItems": 40,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "name": {"type": "string", "maxLength": 24},
                    "count": {"type": "integer", "minimum": 0, "maximum": 9999},
                    "state": {"enum": ["new", "used", "refurbished"]},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
                },
                "required": ["sku", "name", "count", "state"],
                "additionalProperties": False,
            },
        },
        "warehouse": {"type": "object", "properties": {"city": {"type": "string"}, "zone": {"type": "integer"}},
                      "required": ["city"]},
    },
    "required": ["inventory", "warehouse"],
    "additionalProperties": False,
}


@dataclasses.dataclass(frozen=True)
class StructuredBenchOptions:
    concurrency: int = dataclasses.field(default=32, metadata={"help": "concurrent requests per side"})
    max_tokens: int = dataclasses.field(default=64, metadata={"help": "tokens generated per request"})
    prompt_tokens: int = dataclasses.field(default=32, metadata={"help": "random prompt length"})
    rounds: int = dataclasses.field(default=3, metadata={"help": "rounds; figures are medians over them"})
    schema: str | None = dataclasses.field(default=None, metadata={
        "help": "JSON schema file (unset: the built-in mid-size inventory schema)"})


def _constraint(schema_text: str):
    from pagedserve.structured.constraint import Constraint
    return Constraint("json_schema", schema_text)


def _params(options: StructuredBenchOptions, seed: int, constraint=None) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_tokens=options.max_tokens, seed=seed,
                          ignore_eos=constraint is None, constraint=constraint)


def run(args: EngineArgs, options: StructuredBenchOptions, model=None) -> dict:
    """Every figure (per round and medians) as a JSON-ready dict; loads the model unless given."""
    from pagedserve.engine.engine_factory import build_engine
    from pagedserve.structured.compiler import compiler_for

    engine, model = build_engine(args, model=model)
    compiler = compiler_for(model.tokenizer, model.config.vocab_size)
    schema = json.load(open(options.schema)) if options.schema else MID_SIZE_SCHEMA
    schema_text = json.dumps(schema)
    constraint = _constraint(schema_text)
    compiler.compile(constraint)  # cached from here on: the throughput rounds measure masks, not compiles
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    rounds = []
    for r in range(options.rounds):
        prompts = random_prompts(rng, options.concurrency, options.prompt_tokens, vocab)
        engine.scheduler.kv.reset_prefix_cache()
        free = drive(engine, prompts, _params(options, 1000 + r))
        engine.scheduler.kv.reset_prefix_cache()
        masked = drive(engine, prompts, _params(options, 1000 + r, constraint))
        cold = _constraint(json.dumps({**schema, "description": f"round {r} {time.time_ns()}"}))
        start = time.perf_counter()
        compiler.compile(cold)
        compile_s = time.perf_counter() - start
        one = random_prompts(rng, 1, options.prompt_tokens, vocab)
        singles = []
        for c in (None, constraint, _constraint(json.dumps({**schema, "description": f"cold {r} {time.time_ns()}"}))):
            engine.scheduler.kv.reset_prefix_cache()  # each computes the prompt
            singles.append(drive(engine, one, _params(options, 7, c)).ttft_s[0])
        rounds.append({
            "unconstrained_tok_s": free.generated_tok_s, "constrained_tok_s": masked.generated_tok_s,
            "ratio": masked.generated_tok_s / free.generated_tok_s,
            "generated_tokens": [free.generated_tokens, masked.generated_tokens],
            "ttft_mean_s": [statistics.fmean(free.ttft_s), statistics.fmean(masked.ttft_s)],
            "ttft_max_s": [max(free.ttft_s), max(masked.ttft_s)],
            "cold_compile_s": compile_s,
            "single_ttft_s": singles,  # unconstrained, cached schema, cold schema (compiled in the step)
        })
        print(json.dumps({"round": r + 1, **rounds[-1]}), flush=True)
    med = {key: statistics.median(x[key] for x in rounds)
           for key in ("unconstrained_tok_s", "constrained_tok_s", "ratio", "cold_compile_s")}
    med["single_ttft_s"] = [statistics.median(x["single_ttft_s"][i] for x in rounds) for i in range(3)]
    med["mask_seconds_total"] = engine.runner.mask_stats.mask_seconds_total
    med["num_masks"] = engine.runner.mask_stats.num_masks
    return {"model": model.path, "concurrency": options.concurrency, "max_tokens": options.max_tokens,
            "rounds": rounds, "median": med}


def main(argv: list[str] | None = None) -> None:
    bench_module_main("pagedserve.bench.structured_output", __doc__, StructuredBenchOptions, run, argv)


if __name__ == "__main__":
    main()
