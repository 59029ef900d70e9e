"""When a request speculates, and with how many draft tokens (see pagedserve/spec/__init__.py).

Drafts cost compute: every draft is one more token in the step's forward pass, wasted when it is
rejected. On a CPU a single stream is bound by memory bandwidth (the weights are read once per
step whatever the number of tokens), so a few extra tokens per step are almost free there; a large
batch is compute-bound, and drafts then slow everything down. Two rules follow.

- Step rule: a step verifies at most `max_batch_tokens - num_running` draft tokens in all (running
  requests in admission order take what is left), so a batch past `max_batch_tokens` decodes
  without drafts, and the runner is not even asked for drafts when nothing would be left.
- Request rule (`speculative` = auto): each request tracks the share of its drafts the model
  accepted (`DraftTracker`, a moving average over verify steps). Below `MIN_ACCEPTANCE_RATE` it
  stops asking for drafts for a back-off number of decode steps (doubling up to `MAX_BACKOFF_STEPS`
  while probes keep failing), then probes again. A request with a fixed k always asks for k;
  `speculative` = 0 never speculates.
- Cost rule (auto, when the step cost was measured at warm-up): a step of B decodes costs about
  r + B tokens' worth of compute (r = `step_fixed_tokens`, the cost that does not grow with the
  tokens: reading the weights) for B outputs, and each draft adds one token's worth. The i-th draft
  of a request is kept only if the i - 1 before it were, with probability a^i for a request whose
  drafts the model accepts at rate a (`DraftTracker.token_acceptance`). So the i-th draft pays when
  a^i > B / (r + B), and a request asks for that many. The warm-up measured r at 3.0-4.3 on
  SmolLM2-135M: one stream drafts while a^i > 0.19-0.25, 16 streams only while a^i > 0.79-0.84.
  Without this rule, 16 free-chat streams with drafts ran at 0.76-1.12x (median 0.89x) of the same
  server without speculation; with it at 0.96-0.98x.

Requests under a structured-output constraint never speculate (their mask depends on the tokens
before it, which would have to be replayed per draft), nor do requests still prefilling.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedserve.sampling_params import SPECULATIVE_AUTO, SPECULATIVE_OFF

# A rejected draft costs about one token of compute; below this acceptance the drafts of a memory-
# bound step still pay only when several are accepted in a row, which a low rate makes unlikely.
MIN_ACCEPTANCE_RATE = 0.3
ACCEPTANCE_EMA_WEIGHT = 0.5  # weight of the latest verify step in the moving acceptance rate
MIN_BACKOFF_STEPS = 4
MAX_BACKOFF_STEPS = 128
# The per-draft acceptance estimate starts as if 4 drafts had been accepted and 1 rejected (0.8: a
# request asks for about 4 drafts at one stream before its first verify), and each verify step
# weighs the counts before it, these included, by ACCEPTANCE_MEMORY (the last few steps decide).
PRIOR_ACCEPTED = 4.0
PRIOR_REJECTED = 1.0
ACCEPTANCE_MEMORY = 0.75


@dataclass
class DraftTracker:
    """One request's speculation record (auto mode back-off and counters)."""

    num_proposed: int = 0  # draft tokens verified so far
    num_accepted: int = 0  # of which the model accepted
    acceptance_rate: float = 1.0  # moving average of accepted / verified per verify step
    num_paused_steps: int = 0  # decode steps still to run without drafts
    backoff_steps: int = MIN_BACKOFF_STEPS  # the next pause's length
    accepted_weight: float = PRIOR_ACCEPTED  # accepted drafts, older verify steps weighed down
    rejected_weight: float = PRIOR_REJECTED  # verify steps that rejected a draft, weighed the same way

    @property
    def token_acceptance(self) -> float:
        """Estimated chance that a draft is accepted once the drafts before it were: accepted drafts
        over accepted drafts plus rejections (a verify step stops at its first rejection)."""
        return self.accepted_weight / (self.accepted_weight + self.rejected_weight)

    def record(self, num_drafts: int, num_accepted: int) -> None:
        """A step verified `num_drafts` drafts of which `num_accepted` were accepted."""
        if num_drafts <= 0:
            return
        self.num_proposed += num_drafts
        self.num_accepted += num_accepted
        self.accepted_weight = ACCEPTANCE_MEMORY * self.accepted_weight + num_accepted
        self.rejected_weight = ACCEPTANCE_MEMORY * self.rejected_weight + (num_accepted < num_drafts)
        rate = num_accepted / num_drafts
        self.acceptance_rate += ACCEPTANCE_EMA_WEIGHT * (rate - self.acceptance_rate)
        if self.acceptance_rate < MIN_ACCEPTANCE_RATE:
            self.num_paused_steps = self.backoff_steps
            self.backoff_steps = min(2 * self.backoff_steps, MAX_BACKOFF_STEPS)
            self.acceptance_rate = MIN_ACCEPTANCE_RATE  # a probe after the pause starts from the bar
        elif rate >= MIN_ACCEPTANCE_RATE:
            self.backoff_steps = MIN_BACKOFF_STEPS

    def step_without_drafts(self) -> None:
        if self.num_paused_steps > 0:
            self.num_paused_steps -= 1


class SpecPolicy:
    """`num_draft_tokens`: the engine's k (0: speculation off); `max_batch_tokens`: the step rule;
    `step_fixed_tokens`: r of the cost rule (0: unknown, no cost rule)."""

    def __init__(self, num_draft_tokens: int, max_batch_tokens: int, step_fixed_tokens: float = 0.0):
        self.num_draft_tokens = num_draft_tokens
        self.max_batch_tokens = max_batch_tokens
        self.step_fixed_tokens = step_fixed_tokens

    @property
    def enabled(self) -> bool:
        return self.num_draft_tokens > 0

    def step_room(self, num_running: int) -> int:
        """Draft tokens a step with `num_running` running requests may verify in all."""
        return max(0, self.max_batch_tokens - num_running) if self.enabled else 0

    def request_k(self, request) -> int:
        """Most drafts the request may ever verify in a step (0: it never speculates)."""
        params = request.sampling_params
        if not self.enabled or params.speculative == SPECULATIVE_OFF or params.constraint is not None:
            return 0
        return self.num_draft_tokens if params.speculative == SPECULATIVE_AUTO else params.speculative

    def num_to_propose(self, request, num_running: int) -> int:
        """Drafts to ask the runner for after this step (0: none), for a request that samples now."""
        k = self.request_k(request)
        if k == 0 or self.step_room(num_running) == 0:
            return 0
        if self._paused(request):
            return 0
        if request.sampling_params.speculative == SPECULATIVE_AUTO:
            k = min(k, self.drafts_that_pay(request.draft_tracker.token_acceptance, num_running))
        # This step adds at least one output and the next step's own token is one more: with fewer
        # than 3 tokens left no draft could ever be kept.
        return k if request.sampling_params.max_tokens - request.num_output_tokens > 2 else 0

    def drafts_that_pay(self, acceptance: float, num_running: int) -> int:
        """The cost rule: how many drafts (at most the engine's k) have acceptance**i above
        B / (r + B) for B = num_running; the engine's k when r is unknown."""
        if self.step_fixed_tokens <= 0:
            return self.num_draft_tokens
        bar = num_running / (self.step_fixed_tokens + num_running)
        num_drafts, kept = 0, acceptance
        while num_drafts < self.num_draft_tokens and kept > bar:
            num_drafts += 1
            kept *= acceptance
        return num_drafts

    def num_drafts_to_verify(self, request, room: int, budget: int) -> int:
        """How many of the request's pending drafts a decode step verifies (room: the step's draft
        tokens left, budget: its tokens left, the decode's own included)."""
        if not request.draft_token_ids or self._paused(request):
            return 0
        max_useful = request.sampling_params.max_tokens - request.num_output_tokens - 1
        return max(0, min(len(request.draft_token_ids), self.request_k(request), room, budget - 1, max_useful))

    @staticmethod
    def _paused(request) -> bool:
        return request.sampling_params.speculative == SPECULATIVE_AUTO and request.draft_tracker.num_paused_steps > 0
