"""When a request stops, and which text it may show so far.

Order of checks per sampled token (as vLLM): stop token (EOS unless ignore_eos, or one of the
request's stop_token_ids; its text is not shown), stop string (matched on detokenized text, across
token boundaries; the stop text and anything after it are not shown), then length (max_tokens or
the model's context length). Text that might be the beginning of a stop string is held back until
the next tokens resolve it; it is released when the request finishes for another reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

from pagedserve.sampling_params import SamplingParams


class Detokenizer(Protocol):
    def push(self, token_ids: Sequence[int]) -> str:
        """Newly completed text after these ids (never a partial UTF-8 character)."""
        ...

    def flush(self) -> str:
        """Whatever text is still pending (the request is over)."""
        ...


DetokenizerFactory = Callable[[], Detokenizer]


@dataclass(frozen=True)
class StopResult:
    new_text: str
    finish_reason: Optional[str] = None  # None (go on) | "stop" | "length"
    stop_reason: str | int | None = None


class StopChecker:
    """Per-request stop state: the detokenizer and the held-back text."""

    def __init__(
        self,
        params: SamplingParams,
        stop_ids: frozenset[int],
        max_model_len: int,
        detokenizer: Optional[Detokenizer],
    ):
        self.params = params
        self.eos_ids = frozenset() if params.ignore_eos else frozenset(stop_ids)
        self.stop_token_ids = frozenset(params.stop_token_ids)
        self.max_model_len = max_model_len
        self.detokenizer = detokenizer
        if params.stop and detokenizer is None:
            raise ValueError("stop strings need a detokenizer")
        self._held_text = ""
        self._max_stop_len = max((len(s) for s in params.stop), default=0)

    def append(self, token_id: int, num_output_tokens: int, num_tokens: int) -> StopResult:
        """Account for one sampled token (already appended: the counts include it)."""
        if token_id in self.eos_ids or token_id in self.stop_token_ids:
            return StopResult(self._release(), "stop", token_id)
        text = self._held_text + (self.detokenizer.push([token_id]) if self.detokenizer else "")
        match = self._find_stop_string(text)
        if match is not None:
            index, stop = match
            self._held_text = ""
            return StopResult(text[:index], "stop", stop)
        num_held = self._num_chars_to_hold(text)
        self._held_text = text[len(text) - num_held :]
        new_text = text[: len(text) - num_held]
        if num_output_tokens >= self.params.max_tokens or num_tokens >= self.max_model_len:
            return StopResult(new_text + self._release(), "length")
        return StopResult(new_text)

    def finish_text(self) -> str:
        """Release the held text (the request ends for a reason not decided here)."""
        return self._release()

    def _release(self) -> str:
        text = self._held_text + (self.detokenizer.flush() if self.detokenizer else "")
        self._held_text = ""
        return text

    def _find_stop_string(self, text: str) -> Optional[tuple[int, str]]:
        best: Optional[tuple[int, str]] = None
        for stop in self.params.stop:
            index = text.find(stop)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, stop)
        return best

    def _num_chars_to_hold(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        for num_chars in range(min(self._max_stop_len - 1, len(text)), 0, -1):
            suffix = text[-num_chars:]
            if any(stop.startswith(suffix) for stop in self.params.stop):
                return num_chars
        return 0
