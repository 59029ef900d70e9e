"""The step budget that follows time: tokens per step such that a step takes about `max_step_ms`.

A step's cost is close to linear in the tokens it computes (each token is a row of every matmul;
attention over short contexts is small beside the weights): step_ms ~ fixed + per_token * tokens.
At warm-up `measure_step_cost` times a few real steps of this model on this machine (prefill
chunks of two sizes and one decode step), `fit_step_cost` fits the line, and `token_budget` turns
it into the scheduler's `max_num_batched_tokens`, so a prefill chunk holds running decodes back for
about `max_step_ms` at most instead of a fixed token count (issue 14: 256 tokens took ~1.7 s at 1B).
While serving, the scheduler corrects that budget by the measured step times
(scheduler/step_time_budget.py, which holds `StepCost` and `token_budget`).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.engine import LLMEngine
from pagedserve.scheduler.step_time_budget import StepCost


def fit_step_cost(samples: Sequence[tuple[int, float]]) -> StepCost:
    """Least-squares line through (tokens, ms) samples of at least two distinct token counts.

    The fixed cost is kept >= 0 and the per-token cost > 0 (noise can tilt a fit of a few points)."""
    tokens = np.array([t for t, _ in samples], dtype=np.float64)
    ms = np.array([m for _, m in samples], dtype=np.float64)
    if len(np.unique(tokens)) < 2:
        raise ValueError(f"a step-cost fit needs two distinct token counts, got {sorted(set(tokens.tolist()))}")
    if not np.all(np.isfinite(ms)) or np.any(ms < 0):
        raise ValueError(f"step times must be finite and >= 0, got {ms.tolist()}")
    per_token, fixed = np.polyfit(tokens, ms, 1)
    if per_token <= 0:  # flat or noisy: charge the slowest step's cost per token of its size
        worst = int(np.argmax(ms / tokens))
        return StepCost(fixed_ms=0.0, per_token_ms=max(float(ms[worst] / tokens[worst]), 1e-6))
    if fixed < 0:  # the line through the origin with the same slope's least squares
        return StepCost(fixed_ms=0.0, per_token_ms=float(np.dot(tokens, ms) / np.dot(tokens, tokens)))
    return StepCost(fixed_ms=float(fixed), per_token_ms=float(per_token))


def calibration_sizes(max_chunk: int) -> tuple[int, ...]:
    """Prefill chunk sizes to time, each computed in one step: 16 and 64 tokens, at most `max_chunk`
    (the largest prompt one step computes whole); () when that leaves no size above a decode's 1."""
    return tuple(sorted({n for n in (min(16, max_chunk), min(64, max_chunk)) if n >= 2}))


def measure_step_cost(engine: LLMEngine, vocab_size: int, sizes: Sequence[int], repeats: int = 3,
                      seed: int = 0, timer: Callable[[], float] = time.perf_counter
                      ) -> tuple[StepCost, list[tuple[int, float]]]:
    """Time real steps of an idle `engine`: for each size, one request of that many random prompt
    tokens (one step computes it whole), then its one decode step; best of `repeats` per point.

    Returns the fitted cost and the (tokens, ms) points. The requests run to completion; the engine
    must have nothing else to do (its steps are timed whole). `timer`: seconds, as perf_counter."""
    if engine.has_unfinished_requests():
        raise RuntimeError("step-cost calibration needs an idle engine")
    rng = np.random.default_rng(seed)
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
    best: dict[int, float] = {}
    for _ in range(repeats):
        for size in sizes:
            # Random prompts: a prefix-cache hit would make the step compute fewer tokens.
            engine.add_request(rng.integers(0, vocab_size, size).tolist(), params)
            for num_tokens in (size, 1):  # the prefill step, then the decode step
                started = timer()
                engine.step()
                ms = (timer() - started) * 1e3
                best[num_tokens] = min(ms, best.get(num_tokens, math.inf))
            while engine.has_unfinished_requests():
                engine.step()
    points = sorted(best.items())
    return fit_step_cost(points), points
