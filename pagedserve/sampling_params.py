"""What a request asks for: how to sample and when to stop."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagedserve.structured.constraint import Constraint

# The most choices one request may ask for (`n`). Every choice is a running sequence with its own
# KV blocks after the prompt, so n multiplies a request's cache and batch share; 16 covers the
# best-of / self-consistency uses (OpenAI's own examples stay far below) while one request cannot
# take over a server's batch.
MAX_NUM_CHOICES = 16

# `SamplingParams.speculative`: -1 lets the engine decide (auto: drafts while they are accepted),
# 0 turns speculation off for the request, k > 0 verifies up to k drafts every step. At most 16:
# a step's chunk of 1 + k tokens costs compute, and longer guesses are rarely accepted whole.
SPECULATIVE_AUTO = -1
SPECULATIVE_OFF = 0
MAX_DRAFT_TOKENS = 16


class InvalidRequestError(ValueError):
    """A request the engine refuses; `field` names the offending input (for INVALID_ARGUMENT)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class SamplingParams:
    """Sampling and stopping options of one request. Checks itself on creation.

    temperature 0 means greedy. top_k 0 means off; top_p 1 and min_p 0 mean off. Penalties follow
    vLLM: repetition_penalty (1 = off) applies to prompt and output tokens, presence/frequency
    penalties (0 = off) to output tokens only. `seed` makes sampling reproducible whatever else is
    in the batch (None: drawn from the engine's generator). `logprobs` asks for that many top
    alternatives of every sampled token (0: only the sampled token's own logprob is not returned).
    `prompt_logprobs` (> 0) asks for every prompt token's own logprob and that many top
    alternatives per prompt position (RequestOutput.prompt_logprobs); such a request computes its
    whole prompt, without prefix-cache hits, since cached positions have no logits.
    `n` asks for that many independent choices of the same prompt: the prompt is computed once,
    then every choice continues from it on its own (`for_choice`); choice i with a `seed` samples
    exactly as a single request with seed + i would.
    `constraint` restricts every sampled token to those its grammar allows (logits of others are
    -inf before temperature, filters and penalties; reported logprobs are after the mask).
    `speculative`: speculative decoding for this request when the engine runs it (SPECULATIVE_AUTO,
    SPECULATIVE_OFF, or up to k draft tokens per step); the output is the same either way.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int = 0
    prompt_logprobs: int = 0
    n: int = 1
    constraint: "Constraint | None" = None  # structured output: the output must match it
    speculative: int = SPECULATIVE_AUTO

    def __post_init__(self):
        if not self.temperature >= 0.0:
            raise InvalidRequestError("temperature", f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidRequestError("top_k", f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise InvalidRequestError("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        if not (0.0 <= self.min_p <= 1.0):
            raise InvalidRequestError("min_p", f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0.0:
            raise InvalidRequestError(
                "repetition_penalty", f"repetition_penalty must be > 0, got {self.repetition_penalty}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (-2.0 <= value <= 2.0):
                raise InvalidRequestError(name, f"{name} must be in [-2, 2], got {value}")
        if self.max_tokens < 0:
            raise InvalidRequestError("max_tokens", f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.logprobs < 0 or self.logprobs > 20:
            raise InvalidRequestError("logprobs", f"logprobs must be in [0, 20], got {self.logprobs}")
        if self.prompt_logprobs < 0 or self.prompt_logprobs > 64:
            raise InvalidRequestError(
                "prompt_logprobs", f"prompt_logprobs must be in [0, 64], got {self.prompt_logprobs}"
            )
        if any(not s for s in self.stop):
            raise InvalidRequestError("stop", "stop strings must not be empty")
        if not 1 <= self.n <= MAX_NUM_CHOICES:
            raise InvalidRequestError("n", f"n must be in [1, {MAX_NUM_CHOICES}], got {self.n}")
        if not SPECULATIVE_AUTO <= self.speculative <= MAX_DRAFT_TOKENS:
            raise InvalidRequestError(
                "speculative", f"speculative must be -1 (auto), 0 (off) or a number of draft tokens in "
                f"[1, {MAX_DRAFT_TOKENS}], got {self.speculative}")
        if self.n > 1 and self.max_tokens == 0:
            raise InvalidRequestError("n", "n > 1 needs max_tokens >= 1: choices differ only in their outputs")

    def for_choice(self, index: int) -> "SamplingParams":
        """The parameters choice `index` of an n-choice request samples with: n = 1, and the seed
        shifted by the index (seed + index), so every choice is reproducible on its own and equals
        a single request with that seed. Choice 0 keeps the request's own seed."""
        if not 0 <= index < self.n:
            raise ValueError(f"choice {index} of a request with n={self.n}")
        seed = None if self.seed is None else self.seed + index
        return replace(self, n=1, seed=seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
