"""The outputs of a request's n choices as one stream of (choice index, RequestOutput).

Each choice is its own engine request for now (see to_engine.choice_requests). Closing the
stream early (a client disconnect, an error in another choice) closes every choice's generator,
which aborts it in the engine and frees its blocks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Optional

from pagedserve.engine.async_engine import AsyncEngine
from pagedserve.engine.engine_request import EngineRequest
from pagedserve.scheduler.request import RequestOutput

_DONE = object()


async def choice_outputs(engine: AsyncEngine, requests: list[EngineRequest], owner: str,
                         deadline: Optional[float] = None) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(index, output) pairs of all choices as they arrive, each choice's in order; raises what
    any choice raises (after closing the others)."""
    if len(requests) == 1:  # the common case needs no pump tasks
        outputs = engine.generate(requests[0], owner=owner, deadline=deadline)
        async with contextlib.aclosing(outputs):
            async for output in outputs:
                yield 0, output
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, request: EngineRequest) -> None:
        outputs = engine.generate(request, owner=owner, deadline=deadline)
        try:
            async with contextlib.aclosing(outputs):
                async for output in outputs:
                    queue.put_nowait((index, output))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(_DONE)

    tasks = [asyncio.ensure_future(pump(i, r)) for i, r in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()  # cancelling a pump closes its generator, which aborts that choice
        await asyncio.gather(*tasks, return_exceptions=True)
