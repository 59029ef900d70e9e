"""One sampled token and its log-probabilities: what the sampler returns for a request in a step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SampledToken:
    token_id: int
    logprob: float  # log-probability of token_id under the raw model distribution
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)  # best first
