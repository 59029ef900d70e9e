"""The outputs of a request's n choices as one stream of (choice index, RequestOutput).

All choices are one engine request (SamplingParams.n): the engine interleaves their outputs, each
carrying its `index`. Closing the stream early (a client disconnect, an error) aborts every
choice and frees its blocks at once.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Optional

from pagedserve.engine.async_engine import AsyncEngine
from pagedserve.engine.engine_request import EngineRequest
from pagedserve.scheduler.request import RequestOutput


async def choice_outputs(engine: AsyncEngine, request: EngineRequest, owner: str,
                         deadline: Optional[float] = None) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(index, output) pairs of all choices as they arrive, each choice's in order."""
    outputs = engine.generate(request, owner=owner, deadline=deadline)
    async with contextlib.aclosing(outputs):
        async for output in outputs:
            yield output.index, output
