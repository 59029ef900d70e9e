"""Keep the garbage collector off the start-up heap once the server is warm.

A server process builds a large, long-lived heap before it serves: the model, the vocabulary and
merge tables, Numba's compiled kernels and their type objects. CPython's full (generation 2)
collections traverse all of it, holding the GIL: while two 30 KB punctuation prompts were being
tokenized (scripts/health_latency.py, 30 s), a full collection ran every 7-8 s and took 75-136 ms
of CPU (310-622 ms in a process that had just compiled its kernels), and every gRPC health check
slower than 50 ms ended within 35 ms of one. Frozen, that heap is never traversed again; full
collections then take about 5 ms.
"""

from __future__ import annotations

import gc


def freeze_start_up_heap() -> None:
    """Collect the start-up garbage, then move every object alive now into the collector's
    permanent generation (gc.freeze): later collections scan only what was made afterwards.

    Call once, when start-up is over. Frozen objects are still freed when their reference count
    drops to zero; only a frozen reference cycle would never be reclaimed, which is why this is
    for a process's start-up heap (the objects it keeps for its whole life), not a library call.
    """
    gc.collect()
    gc.freeze()
