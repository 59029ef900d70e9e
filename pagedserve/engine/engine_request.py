"""A generation request as every front end hands it to the engine, after its own validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from pagedserve.sampling_params import SamplingParams


@dataclass(frozen=True)
class EngineRequest:
    """A validated request: what a gRPC or HTTP front end produces from its protocol message.

    `request_id` is the caller's own name for the request (None: the engine generates one). It is
    unique per owner only; the engine keys the request by an internal id of its own.
    """

    prompt_token_ids: Sequence[int]
    params: SamplingParams
    request_id: Optional[str] = None
    priority: int = 0
