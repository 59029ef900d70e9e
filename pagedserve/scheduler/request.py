"""One request's state as the scheduler owns it, and what the engine reports about it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from pagedserve.sampling_params import SamplingParams
from pagedserve.sampled_token import SampledToken
from pagedserve.scheduler.spec_policy import DraftTracker
from pagedserve.scheduler.stop_checker import StopChecker


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    FINISHED_ERROR = "error"

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED

    @property
    def finish_reason(self) -> Optional[str]:
        """"stop" | "length" | "abort" | "error" for a finished status, else None."""
        return self.value if self.is_finished else None


_FINISHED = {
    RequestStatus.FINISHED_STOPPED,
    RequestStatus.FINISHED_LENGTH,
    RequestStatus.FINISHED_ABORTED,
    RequestStatus.FINISHED_ERROR,
}

# [num_prompt_tokens]: None at 0, then per position p a SampledToken: prompt token p, its logprob
# under the distribution of position p - 1, and that distribution's top-K (id, logprob) pairs
PromptLogprobs = list


@dataclass(eq=False)
class Request:
    """A request and its progress. Priority follows vLLM: a lower value is served first.

    `num_computed_tokens` counts tokens (prompt and output) whose KV is in the cache;
    `num_cached_tokens` how many of them the prefix cache served at first admission (-1: not
    admitted yet). Times come from the engine's clock.

    Choices (`sampling_params.n > 1`): the request itself is choice 0 and computes the prompt;
    when its first token is sampled it forks the other choices (`index` 1..n-1), requests of
    their own (keyed `choice_request_id(request_id, index)`) whose `parent_id` names it and whose
    outputs carry its id. `forked` is set once that has happened.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_time: float = 0.0
    priority: int = 0
    stop_checker: Optional[StopChecker] = None
    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[SampledToken] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = -1
    num_preemptions: int = 0
    first_scheduled_time: Optional[float] = None
    first_token_time: Optional[float] = None
    finish_time: Optional[float] = None
    stop_reason: str | int | None = None
    # Prompt logprobs gathered so far: entry i is prompt token i + 1 under the distribution of position i.
    prompt_logprobs: list[SampledToken] = field(default_factory=list)
    prompt_logprobs_delivered: bool = False
    parent_id: Optional[str] = None  # a forked choice: the request whose prompt it shares
    index: int = 0  # the choice number
    forked: bool = False  # an n-choice request whose other choices exist
    # Speculative decoding: guesses of the tokens after the last one, not yet verified (never part
    # of the token ids, the prefix cache or the stop checks), and the record of past guesses.
    draft_token_ids: list[int] = field(default_factory=list)
    draft_tracker: DraftTracker = field(default_factory=DraftTracker)

    def __post_init__(self):
        self.prompt_token_ids = list(self.prompt_token_ids)
        self._all_token_ids = self.prompt_token_ids + list(self.output_token_ids)

    @property
    def all_token_ids(self) -> Sequence[int]:
        """Prompt then output ids (a live list: read, never mutate)."""
        return self._all_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self._all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def append_output_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self._all_token_ids.append(token_id)

    def add_prompt_logprobs(self, start_position: int, chunk: list) -> Optional[PromptLogprobs]:
        """Keep a computed chunk's prompt logprobs; return all of them once the prompt is done.

        Position p predicts prompt token p + 1 (the last prompt position predicts the output);
        positions already kept (a recompute after preemption) are skipped.
        """
        for offset, top in enumerate(chunk):
            position = start_position + offset
            if position == len(self.prompt_logprobs) and position < self.num_prompt_tokens - 1:
                self.prompt_logprobs.append(top)
        if self.num_computed_tokens < self.num_prompt_tokens:
            return None
        self.prompt_logprobs_delivered = True
        return [None] + list(self.prompt_logprobs)

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def output_request_id(self) -> str:
        """The id its outputs carry: the parent's for a forked choice (its `index` tells them apart)."""
        return self.parent_id if self.parent_id is not None else self.request_id

    @property
    def num_choices_to_fork(self) -> int:
        """Choices this request will still create when its first token is sampled."""
        return 0 if self.forked or self.parent_id is not None else self.sampling_params.n - 1

    @property
    def sort_key(self) -> tuple[int, float]:
        """Priority-policy order: (priority, arrival_time), smallest first."""
        return (self.priority, self.arrival_time)


@dataclass
class RequestOutput:
    """What one step produced for one request (or, from `generate`, everything it produced).

    `prompt_logprobs` (when asked) arrives once, in the output of the step that completes the
    prompt: one entry per prompt position, None at 0, else a SampledToken: that prompt token, its
    logprob and the top-K (id, logprob) pairs of the distribution that predicted it.
    `stop_reason` is the matched stop string or stop token id. `index` is the choice number of an
    n-choice request (0 otherwise); the choices of one request share its `request_id`, each
    streams and finishes on its own.
    """

    request_id: str
    new_token_ids: list[int]
    new_text: str = ""
    new_logprobs: list[SampledToken] = field(default_factory=list)
    finished: bool = False
    finish_reason: Optional[str] = None  # None | "stop" | "length" | "abort" | "error"
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    prompt_logprobs: Optional[PromptLogprobs] = None
    stop_reason: str | int | None = None
    arrival_time: float = 0.0
    first_scheduled_time: Optional[float] = None
    first_token_time: Optional[float] = None
    finish_time: Optional[float] = None
    index: int = 0

    @classmethod
    def of(cls, request: Request, **changes) -> "RequestOutput":
        """An output carrying the request's current counters and times; `changes` add the news."""
        fields = dict(
            request_id=request.output_request_id,
            index=request.index,
            new_token_ids=[],
            finished=request.is_finished,
            finish_reason=request.status.finish_reason,
            num_prompt_tokens=request.num_prompt_tokens,
            num_output_tokens=request.num_output_tokens,
            num_cached_tokens=max(0, request.num_cached_tokens),
            stop_reason=request.stop_reason,
            arrival_time=request.arrival_time,
            first_scheduled_time=request.first_scheduled_time,
            first_token_time=request.first_token_time,
            finish_time=request.finish_time,
        )
        fields.update(changes)
        return cls(**fields)

    def merged_with(self, later: "RequestOutput") -> "RequestOutput":
        """This output followed by a later one of the same request (and choice), as one accumulated output."""
        if (later.request_id, later.index) != (self.request_id, self.index):
            raise ValueError(f"cannot merge choice {later.index} of {later.request_id!r} into "
                             f"choice {self.index} of {self.request_id!r}")
        return replace(
            later,
            new_token_ids=self.new_token_ids + later.new_token_ids,
            new_text=self.new_text + later.new_text,
            new_logprobs=self.new_logprobs + later.new_logprobs,
            prompt_logprobs=later.prompt_logprobs if later.prompt_logprobs is not None else self.prompt_logprobs,
        )


# Separates a request id from a choice number in the ids of forked choices; request ids that contain
# it are refused, so a choice's id can never be another request's.
CHOICE_ID_SEPARATOR = "\x1f"


def choice_request_id(request_id: str, index: int) -> str:
    """The scheduler's key of choice `index` (>= 1) of request `request_id`."""
    return f"{request_id}{CHOICE_ID_SEPARATOR}{index}"
