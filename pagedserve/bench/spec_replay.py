"""`python -m pagedserve.bench.spec_replay`: single-stream decode with drafts that are always right.

This measures how far verifying several tokens in one pass goes past the memory wall of one stream.
A greedy run without speculation records a continuation; then the same prompt runs with
speculative decoding whose proposer replays that recording (`ReplayProposer`), so every draft is
accepted. Both runs must give the same token ids (speculation is exact); the bench checks it.

Printed per round and as medians: decode tok/s without speculation, with replayed drafts for each
k of --num-drafts, their ratio, and llama.cpp's single-stream tg (`llama-bench -p 0 -n N`) when
--compare-llamacpp gives its path.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Sequence

import numpy as np

from pagedserve.bench.bench import parse_int_list
from pagedserve.bench.module_main import bench_module_main
from pagedserve.bench.workloads import drive, greedy, random_prompts
from pagedserve.engine.engine_args import EngineArgs


class ReplayProposer:
    """Proposes the tokens a recorded sequence has after each context (a prefix of it)."""

    def __init__(self, recorded: np.ndarray):
        self.recorded = recorded  # [prompt + output] int32

    def propose(self, request_ids: Sequence[str], contexts: Sequence[np.ndarray],
                num_drafts: Sequence[int]) -> list[np.ndarray]:
        out = []
        for context, n in zip(contexts, num_drafts):
            start = len(context)
            known = start <= len(self.recorded) and np.array_equal(self.recorded[:start], context)
            out.append(self.recorded[start:start + n].copy() if known else np.zeros(0, np.int32))
        return out


@dataclasses.dataclass(frozen=True)
class ReplayBenchOptions:
    new_tokens: int = dataclasses.field(default=128, metadata={"help": "tokens generated per run"})
    prompt_tokens: int = dataclasses.field(default=16, metadata={"help": "random prompt length"})
    num_drafts: tuple[int, ...] = dataclasses.field(default=(4, 8, 16), metadata={
        "type": parse_int_list, "metavar": "K1,K2,...", "help": "draft lengths k to measure"})
    rounds: int = dataclasses.field(default=3, metadata={"help": "rounds; figures are medians over them"})
    compare_llamacpp: str | None = dataclasses.field(default=None, metadata={
        "help": "path of llama-bench: its tg of --new-tokens is measured once per round"})


def _output_ids(engine, prompt: list[int], new_tokens: int):
    result = drive(engine, [prompt], greedy(new_tokens))
    return result, np.asarray(result.output_token_ids[0], np.int32)


def run(args: EngineArgs, options: ReplayBenchOptions, model=None) -> dict:
    """Every figure as a JSON-ready dict; raises if a replayed run's tokens differ from the plain run's."""
    from pagedserve.bench.llamacpp_compare import run_llamacpp
    from pagedserve.engine.engine_factory import build_engine

    plain, model = build_engine(dataclasses.replace(args, speculative="off", enable_prefix_caching=False),
                                model=model)
    drafting = {k: build_engine(dataclasses.replace(args, speculative="ngram", num_draft_tokens=k,
                                                    enable_prefix_caching=False), model=model)[0]
                for k in options.num_drafts}
    rng = np.random.default_rng(0)
    rounds = []
    for r in range(options.rounds):
        prompt = random_prompts(rng, 1, options.prompt_tokens, model.config.vocab_size)[0]
        base, output = _output_ids(plain, prompt, options.new_tokens)
        row = {"plain_tok_s": base.decode_tok_s, "replay_tok_s": {}}
        for k, engine in drafting.items():
            engine.runner.proposer = ReplayProposer(np.concatenate((np.asarray(prompt, np.int32), output)))
            replay, replay_output = _output_ids(engine, prompt, options.new_tokens)
            if not np.array_equal(replay_output, output):
                raise AssertionError(f"k={k}: speculative output differs from the plain run's")
            row["replay_tok_s"][str(k)] = replay.decode_tok_s
            stats = engine.stats()  # cumulative over the rounds: replayed drafts are all accepted
            row.setdefault("acceptance_rate", {})[str(k)] = (
                stats.num_accepted_draft_tokens / stats.num_draft_tokens if stats.num_draft_tokens else None)
        if options.compare_llamacpp:
            theirs = run_llamacpp(options.compare_llamacpp, model.path, args.threads or 2, prefill_tokens=16,
                                  decode_tokens=options.new_tokens, repeats=1)
            row["llamacpp_tg_tok_s"] = theirs.decode_tok_s["1"]
        rounds.append(row)
        print(json.dumps({"round": r + 1, **row}), flush=True)
    med = {"plain_tok_s": statistics.median(x["plain_tok_s"] for x in rounds),
           "replay_tok_s": {str(k): statistics.median(x["replay_tok_s"][str(k)] for x in rounds)
                            for k in options.num_drafts},
           "replay_over_plain": {str(k): statistics.median(x["replay_tok_s"][str(k)] / x["plain_tok_s"] for x in rounds)
                                 for k in options.num_drafts}}
    if options.compare_llamacpp:
        med["llamacpp_tg_tok_s"] = statistics.median(x["llamacpp_tg_tok_s"] for x in rounds)
        med["replay_over_llamacpp"] = {
            str(k): statistics.median(x["replay_tok_s"][str(k)] / x["llamacpp_tg_tok_s"] for x in rounds)
            for k in options.num_drafts}
    return {"model": model.path, "new_tokens": options.new_tokens, "rounds": rounds, "median": med}


def main(argv: list[str] | None = None) -> None:
    bench_module_main("pagedserve.bench.spec_replay", __doc__, ReplayBenchOptions, run, argv)


if __name__ == "__main__":
    main()
