"""A snapshot of structured-output work, for metrics: compiles (front end) and masks (the step)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StructuredOutputStats:
    """Totals so far. Compiles are counted per model vocabulary in the process (the compiler and
    its cache are shared by every engine over that tokenizer); requests and masks per engine."""

    num_constrained_requests: int = 0  # requests taken with a constraint (the n choices of one count once)
    num_compiled: int = 0  # constraints compiled (cache misses that succeeded)
    num_compile_errors: int = 0  # constraints refused by the compiler or its limits
    compile_seconds_total: float = 0.0  # spent compiling, in worker threads (off the step)
    num_masks: int = 0  # token masks applied (one per constrained sampled row per step)
    mask_seconds_total: float = 0.0  # spent in the step filling and applying masks
