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


@dataclass
class DraftTracker:
    """One request's speculation record (auto mode back-off and counters)."""

    num_proposed: int = 0  # draft tokens verified so far
    num_accepted: int = 0  # of which the model accepted
    acceptance_rate: float = 1.0  # moving average of accepted / verified per verify step
    num_paused_steps: int = 0  # decode steps still to run without drafts
    backoff_steps: int = MIN_BACKOFF_STEPS  # the next pause's length

    def record(self, num_drafts: int, num_accepted: int) -> None:
        """A step verified `num_drafts` drafts of which `num_accepted` were accepted."""
        if num_drafts <= 0:
            return
        self.num_proposed += num_drafts
        self.num_accepted += num_accepted
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
    """`num_draft_tokens`: the engine's k (0: speculation off); `max_batch_tokens`: the step rule."""

    def __init__(self, num_draft_tokens: int, max_batch_tokens: int):
        self.num_draft_tokens = num_draft_tokens
        self.max_batch_tokens = max_batch_tokens

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
        # This step adds at least one output and the next step's own token is one more: with fewer
        # than 3 tokens left no draft could ever be kept.
        return k if request.sampling_params.max_tokens - request.num_output_tokens > 2 else 0

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
