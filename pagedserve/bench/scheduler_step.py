"""`python -m pagedserve.bench.scheduler_step`: host cost of one decode step, without a model.

`--num-seqs` sequences are prefilled to each of `--contexts` tokens through the real scheduler (a
fake runner samples a fixed token), then `--steps` decode steps are timed. Two medians per context:
- scheduler: `Scheduler.schedule()` + `Scheduler.update_from_output()`, the work done under the
  engine lock;
- runner prep: what the model runner does on the host before the forward pass (apply the step's
  diffs to its request states, flatten the batch into token ids, positions, block tables and slot
  mappings).
Neither should grow with the context length: the step I/O sends diffs, not histories.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from pagedserve.engine.engine_args import EngineArgs
from pagedserve.sampled_token import SampledToken
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.engine_config import EngineConfig
from pagedserve.scheduler.request import Request
from pagedserve.scheduler.scheduler import Scheduler
from pagedserve.scheduler.step_io import RunnerOutput, SchedulerOutput
from pagedserve.worker.batch_metadata import SequenceChunk, build_metadata
from pagedserve.worker.request_state import RequestStates

NUM_WARMUP_STEPS = 10
MAX_NUM_BATCHED_TOKENS = 8192  # the prefill's step budget; a decode step uses one token per sequence
VOCAB_SIZE = 32000


class FakeRunner:
    """Keeps request states and flattens the batch as the real runner does; samples a fixed id."""

    def __init__(self, config: EngineConfig):
        self.block_size = config.block_size
        self.num_groups = config.kv_cache_spec.num_groups
        self.states = RequestStates(self.num_groups, seed_for=lambda request_id: 0)
        self.prep_times_ns: list[int] = []

    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        started = time.perf_counter_ns()
        states = self.states.update(scheduler_output)
        chunks = [
            SequenceChunk(s.token_ids.ids[r.start_position:r.start_position + r.num_new_tokens],
                          r.start_position, s.block_table_rows())
            for s, r in zip(states, scheduler_output.scheduled)
        ]
        build_metadata(chunks, self.block_size, self.num_groups)
        self.prep_times_ns.append(time.perf_counter_ns() - started)
        return RunnerOutput({r.request_id: SampledToken(7, 0.0) for r in scheduler_output.scheduled if r.sample})


def measure(context_len: int, num_seqs: int, num_steps: int, block_size: int) -> tuple[float, float]:
    """Median microseconds per decode step: (scheduler, runner prep)."""
    # Sequences prefilled early decode while the others prefill: room for those tokens too.
    max_new_tokens = NUM_WARMUP_STEPS + num_steps + -(-num_seqs * context_len // MAX_NUM_BATCHED_TOKENS) + 1
    max_model_len = context_len + max_new_tokens
    blocks_per_seq = -(-max_model_len // block_size)
    args = EngineArgs(block_size=block_size, num_kv_blocks=num_seqs * blocks_per_seq + 1, kv_cache_memory=None,
                      kv_dtype="f32", max_model_len=max_model_len,
                      max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS, max_num_seqs=num_seqs)
    spec = args.create_kv_cache_spec([0], num_kv_heads=1, head_dim=1)
    config = args.create_engine_config(spec, context_length=max_model_len, stop_ids=())
    scheduler = Scheduler(config)
    runner = FakeRunner(config)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, ignore_eos=True)
    for i in range(num_seqs):
        prompt = [(i * 7919 + j) % VOCAB_SIZE for j in range(context_len)]  # distinct: no prefix hits
        scheduler.add_request(Request(f"seq{i}", prompt, params))

    def step() -> None:
        output = scheduler.schedule()
        scheduler.update_from_output(output, runner.execute(output))

    while scheduler.num_waiting or any(r.num_output_tokens == 0 for r in scheduler.running):
        step()  # prefill
    for _ in range(NUM_WARMUP_STEPS):
        step()
    gc.collect()
    runner.prep_times_ns.clear()
    scheduler_times_ns = []
    for _ in range(num_steps):
        started = time.perf_counter_ns()
        output = scheduler.schedule()
        scheduled_ns = time.perf_counter_ns() - started
        runner_output = runner.execute(output)
        started = time.perf_counter_ns()
        scheduler.update_from_output(output, runner_output)
        scheduler_times_ns.append(scheduled_ns + time.perf_counter_ns() - started)
        if len(output.scheduled) != num_seqs or output.num_batched_tokens != num_seqs:
            raise RuntimeError(f"expected {num_seqs} decodes per step, got {output.num_batched_tokens} tokens")
    return statistics.median(scheduler_times_ns) / 1e3, statistics.median(runner.prep_times_ns) / 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-seqs", type=int, default=32, help="running sequences, all decoding")
    parser.add_argument("--contexts", type=int, nargs="+", default=[256, 4096], help="context lengths (tokens)")
    parser.add_argument("--steps", type=int, default=200, help="timed decode steps per context length")
    parser.add_argument("--block-size", type=int, default=16, help="KV-cache block size (tokens)")
    args = parser.parse_args(argv)
    print(f"{args.num_seqs} sequences, {args.steps} decode steps, block size {args.block_size}")
    print(f"{'context':>8}  {'scheduler us/step':>18}  {'runner prep us/step':>20}")
    results = {}
    for context_len in args.contexts:
        results[context_len] = measure(context_len, args.num_seqs, args.steps, args.block_size)
        scheduler_us, prep_us = results[context_len]
        print(f"{context_len:>8}  {scheduler_us:>18.1f}  {prep_us:>20.1f}")
    if len(args.contexts) > 1:
        first, last = args.contexts[0], args.contexts[-1]
        print(f"ratio {last}/{first}: scheduler {results[last][0] / results[first][0]:.2f}, "
              f"runner prep {results[last][1] / results[first][1]:.2f}")


if __name__ == "__main__":
    main()
