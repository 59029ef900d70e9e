"""Tokens per step from a time target: the cost line of a step, and its correction while serving.

A step's cost is close to linear in the tokens it computes: step_ms ~ fixed + per_token * tokens
(`StepCost`, measured at warm-up by engine/step_budget.py). `token_budget` turns a cost line into
the tokens that fit in `max_step_ms`. The warm-up line is timed on an idle machine at short
contexts; while serving, the front end's threads share the cores and contexts grow, so steps run
longer than it predicts (1B Q4_K_M, 16 streams over HTTP: ITL p99 379 ms against a 250 ms
target). `StepBudgetControl` therefore scales the line by the measured / predicted time of recent
steps and re-derives the budget after every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Weight of the latest step in the moving ratio of measured to predicted step time: about the
# last ten steps decide, so a burst of front-end work moves the budget within a second or two.
RATIO_WEIGHT = 0.2
# The ratio stays within these bounds: one stalled step (a page fault storm, a descheduled thread)
# must not collapse the budget, nor can a fast one raise it past the warm-up line by much.
MIN_RATIO, MAX_RATIO = 0.5, 4.0


@dataclass(frozen=True)
class StepCost:
    """step_ms ~ fixed_ms + per_token_ms * tokens computed in the step."""

    fixed_ms: float
    per_token_ms: float

    def step_ms(self, num_tokens: int) -> float:
        return self.fixed_ms + self.per_token_ms * num_tokens


def token_budget(cost: StepCost, max_step_ms: float, *, min_tokens: int, max_tokens: int) -> int:
    """Tokens per step that fit in `max_step_ms`: floor((max_step_ms - fixed) / per_token),
    clamped to [min_tokens, max_tokens] (min_tokens wins when the two cross)."""
    if max_step_ms <= 0:
        raise ValueError(f"max_step_ms must be > 0, got {max_step_ms}")
    # The epsilon keeps rounding noise of a fitted cost (19.999999 tokens) from losing a token.
    fitting = math.floor((max_step_ms - cost.fixed_ms) / cost.per_token_ms + 1e-6)
    return max(min(min_tokens, max_tokens), min(fitting, max_tokens))


class StepBudgetControl:
    """The step budget kept to `max_step_ms` as steps are measured (see the module docstring)."""

    def __init__(self, cost: StepCost, max_step_ms: float, *, min_tokens: int, max_tokens: int):
        self.cost = cost
        self.max_step_ms = max_step_ms
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.ratio = 1.0  # moving measured / predicted step time
        self.budget = self._budget()

    def observe(self, num_tokens: int, step_ms: float) -> int:
        """Record a step that computed `num_tokens` tokens in `step_ms`; returns the new budget.
        Steps that computed nothing (only drops or copies) say nothing about the cost."""
        if num_tokens > 0 and math.isfinite(step_ms) and step_ms >= 0:
            measured = step_ms / self.cost.step_ms(num_tokens)
            self.ratio += RATIO_WEIGHT * (measured - self.ratio)
            self.ratio = min(MAX_RATIO, max(MIN_RATIO, self.ratio))
            self.budget = self._budget()
        return self.budget

    def _budget(self) -> int:
        scaled = StepCost(self.cost.fixed_ms * self.ratio, self.cost.per_token_ms * self.ratio)
        return token_budget(scaled, self.max_step_ms, min_tokens=self.min_tokens, max_tokens=self.max_tokens)
